//! The audit trail's two outputs: the CSV export an auditor opens in a
//! spreadsheet, and the audit log event (one JSON line) written for each
//! state change. Both are made of [`AuditRow`]s, so they carry the same
//! fields.

use crate::domain::{AUDIT_COLUMNS, AuditRow};

/// The CSV export of `rows`: a header line, then one quoted line per row,
/// CRLF line ends and a UTF-8 byte order mark, which is what spreadsheets
/// need to read non-ASCII text correctly. Cells a spreadsheet would run as
/// a formula are defused (see [`defuse`]).
pub fn to_csv<'a>(rows: impl IntoIterator<Item = &'a AuditRow>) -> String {
    let mut writer = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail, and every record has the header's
    // length, so errors are impossible; they are ignored rather than
    // unwrapped.
    let _ = writer.write_record(AUDIT_COLUMNS);
    for row in rows {
        let _ = writer.write_record(row.cells().iter().map(|c| defuse(c)));
    }
    let bytes = writer.into_inner().unwrap_or_default();
    let mut text = String::from('\u{feff}');
    text.push_str(&String::from_utf8_lossy(&bytes));
    text
}

/// A cell that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`,
/// their full-width forms, or a leading tab or carriage return), also
/// behind spaces or invisible format characters (zero-width space, bidi
/// marks, a byte order mark), gets a leading `'`, so text a requestor typed
/// (a justification such as `=HYPERLINK(...)`) is shown, never run.
pub fn defuse(cell: &str) -> String {
    const TRIGGERS: &[char] = &[
        '=', '+', '-', '@', '\t', '\r', '\u{ff1d}', '\u{ff0b}', '\u{ff0d}', '\u{ff20}',
    ];
    let invisible = |c: char| {
        matches!(c, ' ' | '\u{a0}' | '\u{ad}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}'
            | '\u{3000}' | '\u{feff}')
    };
    if cell.starts_with(TRIGGERS) || cell.trim_start_matches(invisible).starts_with(TRIGGERS) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

/// Writes `row` as one audit log event (`event = "state.change"`, target
/// `audit`), with the CSV's fields.
pub fn emit(row: &AuditRow) {
    let [
        time,
        request_id,
        vm,
        port,
        protocol,
        source,
        requestor,
        approver,
        actor,
        status,
        reason,
        end_time_utc,
        justification,
        message,
        _break_glass,
    ] = row.cells();
    let some = |s: &String| (!s.is_empty()).then(|| s.clone());
    tracing::info!(
        target: "audit",
        event = "state.change",
        time = %time,
        request_id = %request_id,
        vm = %vm,
        port = some(&port),
        protocol = some(&protocol),
        source = some(&source),
        requestor = %requestor,
        approver = some(&approver),
        actor = some(&actor),
        status = %status,
        reason = some(&reason),
        end_time_utc = some(&end_time_utc),
        justification = some(&justification),
        message = some(&message),
        break_glass = row.break_glass,
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_defused() {
        for bad in [
            "=1+1",
            "+1",
            "-1",
            "@SUM(A1)",
            "\tx",
            "\rx",
            "\u{ff1d}1",
            "\u{200b}=HYPERLINK(\"x\")",
            " \u{feff}=1",
            "\u{202e}+1",
        ] {
            assert!(defuse(bad).starts_with('\''), "{bad:?}");
        }
        for fine in [
            "198.51.100.7/32",
            "local:alice",
            "",
            "fix 'deploy'",
            "2026-11-23T12:00:00Z",
        ] {
            assert_eq!(defuse(fine), fine);
        }
    }
}

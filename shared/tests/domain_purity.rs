//! The domain must stay pure: no cloud SDK, HTTP or async runtime crate, and
//! no clock. This reads the domain's sources and fails on any such import.

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "aws_", "azure_", "reqwest", "hyper", "http", "axum", "lambda_", "tokio", "tracing",
];

#[test]
fn domain_modules_import_no_sdk_http_or_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("src/domain exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let code = line.strip_prefix("pub ").unwrap_or(line);
            if let Some(path_text) = code
                .strip_prefix("use ")
                .or_else(|| code.strip_prefix("extern crate "))
            {
                for crate_name in FORBIDDEN {
                    assert!(
                        !path_text.starts_with(crate_name)
                            && !path_text.starts_with(&format!("::{crate_name}")),
                        "{}:{}: the domain imports {crate_name}: {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
            for clock in [
                "Timestamp::now",
                "SystemTime::now",
                "Instant::now",
                "Zoned::now",
            ] {
                assert!(
                    !line.contains(clock),
                    "{}:{}: the domain reads the clock ({clock}); take the time as a parameter",
                    path.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "expected the domain modules under {}, found {checked}",
        dir.display()
    );
}

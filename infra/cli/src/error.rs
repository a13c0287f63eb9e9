//! What can go wrong, each kind with its own exit code, so scripts can tell
//! "the API said no" from "the API could not be reached".

use std::fmt;

/// Exit codes, as `jitvm --help` and the README list them.
pub mod exit {
    /// Done.
    pub const OK: i32 = 0;
    /// The API refused the call (a 4xx answer): its code and message are shown.
    pub const REFUSED: i32 = 1;
    /// The command line, a file it names, or a VM name was not usable.
    pub const USAGE: i32 = 2;
    /// Under `--wait`: the request was denied, a port failed or was revoked,
    /// or the wait timed out.
    pub const NOT_GRANTED: i32 = 3;
    /// The API could not be reached, timed out, or failed (a 5xx answer).
    pub const UNAVAILABLE: i32 = 4;
    /// The configuration or the credentials are missing or invalid.
    pub const CONFIG: i32 = 5;
}

/// The text `--help` shows under the commands.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  done
  1  the API refused the call (4xx); its code and message are shown
  2  usage: bad arguments, an unreadable file, a VM name that names no VM or several
  3  --wait: the request was denied, a port failed or was revoked, or the wait timed out
  4  the API could not be reached, timed out, or failed (5xx)
  5  configuration or credentials missing or invalid (including a 401, or a 403 from
     API Gateway itself for a signature it does not accept)";

/// One failure of a command, shown as one line (or a few) on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with an error: its status and `{"error": {...}}`.
    #[error("{code} ({status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: connection refused, DNS, a timeout, an unreadable body.
    #[error("cannot reach the jitvm API: {0}")]
    Unreachable(String),
    /// The user's input cannot be used as it is.
    #[error("{0}")]
    Usage(String),
    /// The configuration or the credentials.
    #[error("{0}")]
    Config(String),
    /// `--wait` ended without every port open.
    #[error("{0}")]
    NotGranted(String),
    /// An answer that is not the API's (a proxy's page, another service).
    #[error("{0}")]
    Unexpected(String),
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Api { status, .. } if *status >= 500 => exit::UNAVAILABLE,
            // The credentials were not taken: a token unknown or expired
            // (401), or API Gateway's own 403 for a SigV4 signature (its
            // answers lack the API's error envelope).
            CliError::Api { status: 401, .. } => exit::CONFIG,
            CliError::Api {
                status: 403, code, ..
            } if code == "Http403" => exit::CONFIG,
            CliError::Api { .. } => exit::REFUSED,
            CliError::Unexpected(_) => exit::UNAVAILABLE,
            CliError::Unreachable(_) => exit::UNAVAILABLE,
            CliError::Usage(_) => exit::USAGE,
            CliError::Config(_) => exit::CONFIG,
            CliError::NotGranted(_) => exit::NOT_GRANTED,
        }
    }

    /// A usage error from anything displayable.
    pub fn usage(message: impl fmt::Display) -> Self {
        CliError::Usage(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_their_exit_codes() {
        let api = |status| CliError::Api {
            status,
            code: "X".into(),
            message: "m".into(),
        };
        assert_eq!(api(403).exit_code(), exit::REFUSED);
        assert_eq!(api(404).exit_code(), exit::REFUSED);
        assert_eq!(api(502).exit_code(), exit::UNAVAILABLE);
        assert_eq!(api(401).exit_code(), exit::CONFIG);
        let gateway = CliError::Api {
            status: 403,
            code: "Http403".into(),
            message: "The security token included in the request is expired".into(),
        };
        assert_eq!(gateway.exit_code(), exit::CONFIG);
        assert_eq!(api(403).to_string(), "X (403): m");
        assert_eq!(
            CliError::NotGranted("denied".into()).exit_code(),
            exit::NOT_GRANTED
        );
    }
}

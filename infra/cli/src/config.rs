//! Where the API is and how to authenticate: a TOML file, overridden by
//! environment variables, overridden by flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::CliError;

/// How calls are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`: the local host, or the single
    /// sign-on (JWT) API.
    Bearer(String),
    /// SigV4 with the AWS default credential chain, for the IAM API.
    SigV4 { region: Option<String> },
}

/// The resolved settings of one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub endpoint: String,
    pub auth: Auth,
}

/// What a run may be told from outside the file, already read from flags
/// and the environment (a test passes its own).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_path: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub auth: Option<String>,
    pub region: Option<String>,
}

impl Overrides {
    /// The overrides from the process environment (`JITVM_ENDPOINT`,
    /// `JITVM_TOKEN`, `JITVM_AUTH`, `AWS_REGION`), under those of flags.
    pub fn from_env(config_path: Option<PathBuf>, endpoint: Option<String>) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Overrides {
            config_path,
            endpoint: endpoint.or_else(|| var("JITVM_ENDPOINT")),
            token: var("JITVM_TOKEN"),
            auth: var("JITVM_AUTH"),
            region: var("AWS_REGION"),
        }
    }
}

/// The file's fields, all optional: the environment may supply any.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    endpoint: Option<String>,
    auth: Option<String>,
    token: Option<String>,
    region: Option<String>,
}

/// Reads the config file (the one named, or the default one if it exists)
/// and applies `overrides` over it.
pub fn load(overrides: &Overrides) -> Result<Config, CliError> {
    let file = match &overrides.config_path {
        Some(path) => read_file(path)?,
        None => match default_path() {
            Some(path) if path.is_file() => read_file(&path)?,
            _ => FileConfig::default(),
        },
    };
    resolve(file, overrides)
}

/// `$XDG_CONFIG_HOME/jitvm/config.toml`, else `~/.config/jitvm/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("jitvm").join("config.toml"))
}

fn read_file(path: &Path) -> Result<FileConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Config(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| CliError::Config(format!("{} is not a valid config: {e}", path.display())))
}

fn resolve(file: FileConfig, o: &Overrides) -> Result<Config, CliError> {
    let endpoint = o.endpoint.clone().or(file.endpoint).ok_or_else(|| {
        CliError::Config(format!(
            "no API endpoint: set `endpoint` in {} or JITVM_ENDPOINT (for the local stack, http://127.0.0.1:8080)",
            default_path().map_or_else(|| "the config file".into(), |p| p.display().to_string())
        ))
    })?;
    let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
    if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
        return Err(CliError::Config(format!(
            "the endpoint `{endpoint}` is not an http(s) URL"
        )));
    }
    let token = o.token.clone().or(file.token);
    let region = o.region.clone().or(file.region);
    // A token alone says how to authenticate; without one, the deployed
    // IAM API is the default.
    let kind = o
        .auth
        .clone()
        .or(file.auth)
        .unwrap_or_else(|| if token.is_some() { "bearer" } else { "sigv4" }.into());
    let auth = match kind.trim().to_ascii_lowercase().as_str() {
        "bearer" => {
            // A bearer token is a password: only over TLS, or on this machine.
            if endpoint.starts_with("http://") && !loopback(&endpoint) {
                return Err(CliError::Config(format!(
                    "the endpoint `{endpoint}` is plain http: a bearer token goes only to https:// or to this machine (127.0.0.1, localhost)"
                )));
            }
            Auth::Bearer(token.ok_or_else(|| {
                CliError::Config("auth is bearer but no token: set `token` or JITVM_TOKEN".into())
            })?)
        }
        "sigv4" => Auth::SigV4 { region },
        other => {
            return Err(CliError::Config(format!(
                "auth `{other}` is neither \"sigv4\" nor \"bearer\""
            )));
        }
    };
    Ok(Config { endpoint, auth })
}

/// Whether an `http://` endpoint is on this machine.
fn loopback(endpoint: &str) -> bool {
    let rest = endpoint.trim_start_matches("http://");
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let f =
            file("endpoint = \"https://api.example/\"\nauth = \"sigv4\"\nregion = \"eu-west-1\"");
        let c = resolve(f, &Overrides::default()).unwrap();
        assert_eq!(c.endpoint, "https://api.example");
        assert_eq!(
            c.auth,
            Auth::SigV4 {
                region: Some("eu-west-1".into())
            }
        );
        let o = Overrides {
            endpoint: Some("http://127.0.0.1:8080".into()),
            auth: Some("bearer".into()),
            token: Some("t".into()),
            ..Overrides::default()
        };
        let f = file("endpoint = \"https://api.example/\"\nauth = \"sigv4\"");
        let c = resolve(f, &o).unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:8080");
        assert_eq!(c.auth, Auth::Bearer("t".into()));
    }

    #[test]
    fn bad_settings_are_refused_with_what_to_do() {
        let err = resolve(FileConfig::default(), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("JITVM_ENDPOINT"), "{err}");
        let err = resolve(
            file("endpoint = \"http://127.0.0.1:8080\"\nauth = \"bearer\""),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("JITVM_TOKEN"), "{err}");
        for remote in [
            "http://api.example",
            "http://127.0.0.1.example.com",
            "http://localhost@evil",
        ] {
            let err = resolve(
                file(&format!(
                    "endpoint = \"{remote}\"\ntoken = \"secret-token\""
                )),
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("plain http"), "{remote}: {err}");
        }
        let err = resolve(file("endpoint = \"ftp://x\""), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("not an http"), "{err}");
        assert!(toml::from_str::<FileConfig>("endpont = \"x\"").is_err());
    }
}

//! The web console: one page and its two assets, embedded in the binary
//! that serves the HTTP API, so it needs nothing but the API to work (no
//! CDN, no external font or script).
//!
//! - `GET /` (and `/console/`): the page.
//! - `GET /console/app.js`, `/console/app.css`, `/console/icon.svg`.
//! - `GET /console/config.json`: how the page signs in, from
//!   [`ConsoleConfig`]: a token typed in (the local host), or OpenID
//!   Connect authorization code with PKCE against the single-sign-on API's
//!   issuer (the page holds no secret).
//!
//! Every answer carries a strict Content-Security-Policy: scripts and
//! styles only from this origin (no inline script or style), connections
//! only to this origin and the sign-in provider, no frames, no forms posted
//! elsewhere. These routes need no caller; the API calls the page makes do.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::config::ConfigError;

const INDEX: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");
const ICON: &str = include_str!("../console/icon.svg");

/// How the page signs people in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SignIn {
    /// A bearer token typed into the page (the local host's tokens).
    #[default]
    Token,
    /// OpenID Connect authorization code with PKCE.
    Oidc {
        /// The issuer, whose `/.well-known/openid-configuration` names the
        /// authorization and token endpoints.
        issuer: String,
        /// The public client's id (no secret).
        client_id: String,
    },
}

/// `JITVM_CONSOLE_OIDC_ISSUER`, `JITVM_CONSOLE_OIDC_CLIENT_ID` and
/// `JITVM_CONSOLE_OIDC_ORIGINS`: how the console signs in, and the origins
/// it may connect to besides its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsoleConfig {
    pub sign_in: SignIn,
    /// The issuer's origin and any other origin of the provider's endpoints
    /// (Amazon Cognito's token endpoint is on the user pool's domain, not
    /// the issuer's), for the page's `connect-src`.
    pub origins: Vec<String>,
}

impl ConsoleConfig {
    /// Reads the three settings through `lookup`. An issuer without a
    /// client id (or the other way round) is refused, as is an issuer or
    /// origin that is not `https://` (plain `http://` only on loopback).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let issuer = set("JITVM_CONSOLE_OIDC_ISSUER");
        let client_id = set("JITVM_CONSOLE_OIDC_CLIENT_ID");
        let (issuer, client_id) = match (issuer, client_id) {
            (None, None) => return Ok(Self::default()),
            (Some(issuer), Some(client_id)) => (issuer, client_id),
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError {
                    name: "JITVM_CONSOLE_OIDC_ISSUER",
                    message: "give both JITVM_CONSOLE_OIDC_ISSUER and JITVM_CONSOLE_OIDC_CLIENT_ID, or neither".into(),
                });
            }
        };
        if client_id.len() > 256 || client_id.chars().any(|c| c.is_control()) {
            return Err(ConfigError {
                name: "JITVM_CONSOLE_OIDC_CLIENT_ID",
                message: "a client id is at most 256 characters, without control characters".into(),
            });
        }
        let mut origins = vec![origin_of("JITVM_CONSOLE_OIDC_ISSUER", &issuer)?];
        for extra in set("JITVM_CONSOLE_OIDC_ORIGINS")
            .unwrap_or_default()
            .split(',')
        {
            let extra = extra.trim();
            if extra.is_empty() {
                continue;
            }
            let origin = origin_of("JITVM_CONSOLE_OIDC_ORIGINS", extra)?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(Self {
            sign_in: SignIn::Oidc {
                issuer: issuer.trim_end_matches('/').to_owned(),
                client_id,
            },
            origins,
        })
    }

    /// The page's Content-Security-Policy.
    pub fn content_security_policy(&self) -> String {
        let mut connect = String::from("'self'");
        for origin in &self.origins {
            connect.push(' ');
            connect.push_str(origin);
        }
        format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
    }

    /// The answer for `path` when it is one of the console's, else `None`.
    /// Only GET (and HEAD) reach here.
    pub fn serve(&self, path: &str) -> Option<Response<String>> {
        let (body, kind) = match path {
            "/" | "/console" | "/console/" | "/console/index.html" => {
                (INDEX.to_owned(), "text/html; charset=utf-8")
            }
            "/console/app.js" => (APP_JS.to_owned(), "text/javascript; charset=utf-8"),
            "/console/app.css" => (APP_CSS.to_owned(), "text/css; charset=utf-8"),
            "/console/icon.svg" => (ICON.to_owned(), "image/svg+xml"),
            "/console/config.json" => (self.page_config().to_string(), "application/json"),
            _ => return None,
        };
        Some(self.asset(body, kind))
    }

    /// Whether `path` is one of the console's.
    pub fn owns(path: &str) -> bool {
        path == "/" || path == "/console" || path.starts_with("/console/")
    }

    fn page_config(&self) -> serde_json::Value {
        match &self.sign_in {
            SignIn::Token => json!({"signIn": "token"}),
            SignIn::Oidc { issuer, client_id } => json!({
                "signIn": "oidc",
                "issuer": issuer,
                "clientId": client_id,
                "scope": "openid",
            }),
        }
    }

    fn asset(&self, body: String, kind: &'static str) -> Response<String> {
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        if let Ok(csp) = HeaderValue::from_str(&self.content_security_policy()) {
            headers.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// `https://host[:port]` of `url`; plain `http://` only for loopback (the
/// local host and its tests).
fn origin_of(name: &'static str, url: &str) -> Result<String, ConfigError> {
    let error = |message: String| ConfigError { name, message };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| error(format!("{url:?} is not a URL: {e}")))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(error(format!(
            "{url:?} is not an absolute URL (https://...)"
        )));
    };
    let loopback = matches!(authority.host(), "127.0.0.1" | "localhost" | "[::1]");
    match scheme {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(error(format!(
                "{url:?} must be https:// (plain http:// only on loopback)"
            )));
        }
    }
    if authority.as_str().contains('@') {
        return Err(error(format!("{url:?} must not carry a user name")));
    }
    Ok(format!(
        "{scheme}://{}",
        authority.as_str().to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<ConsoleConfig, ConfigError> {
        ConsoleConfig::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn without_settings_the_page_signs_in_with_a_token() {
        let console = config(&[]).expect("valid");
        assert_eq!(console.sign_in, SignIn::Token);
        let page = console.serve("/console/config.json").expect("served");
        assert_eq!(page.body(), r#"{"signIn":"token"}"#);
    }

    #[test]
    fn oidc_connects_to_the_issuer_and_the_named_origins_only() {
        let console = config(&[
            (
                "JITVM_CONSOLE_OIDC_ISSUER",
                "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc/",
            ),
            ("JITVM_CONSOLE_OIDC_CLIENT_ID", "4s1client"),
            (
                "JITVM_CONSOLE_OIDC_ORIGINS",
                "https://Example.auth.eu-west-1.amazoncognito.com/oauth2/token",
            ),
        ])
        .expect("valid");
        let csp = console.content_security_policy();
        assert!(csp.contains(
            "connect-src 'self' https://cognito-idp.eu-west-1.amazonaws.com https://example.auth.eu-west-1.amazoncognito.com;"
        ), "{csp}");
        assert!(
            csp.contains("script-src 'self';") && !csp.contains("unsafe"),
            "{csp}"
        );
        let body = console.serve("/console/config.json").expect("served");
        let body: serde_json::Value = serde_json::from_str(body.body()).expect("JSON");
        assert_eq!(
            body["issuer"],
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc"
        );
        assert_eq!(body["clientId"], "4s1client");
    }

    #[test]
    fn plain_http_or_half_a_setting_is_refused() {
        for pairs in [
            vec![("JITVM_CONSOLE_OIDC_ISSUER", "https://idp.example.com")],
            vec![("JITVM_CONSOLE_OIDC_CLIENT_ID", "abc")],
            vec![
                ("JITVM_CONSOLE_OIDC_ISSUER", "http://idp.example.com"),
                ("JITVM_CONSOLE_OIDC_CLIENT_ID", "abc"),
            ],
            vec![
                ("JITVM_CONSOLE_OIDC_ISSUER", "https://idp.example.com"),
                ("JITVM_CONSOLE_OIDC_CLIENT_ID", "abc"),
                ("JITVM_CONSOLE_OIDC_ORIGINS", "javascript:alert(1)"),
            ],
            vec![
                ("JITVM_CONSOLE_OIDC_ISSUER", "idp.example.com"),
                ("JITVM_CONSOLE_OIDC_CLIENT_ID", "abc"),
            ],
        ] {
            assert!(config(&pairs).is_err(), "{pairs:?} was accepted");
        }
        let local = config(&[
            ("JITVM_CONSOLE_OIDC_ISSUER", "http://127.0.0.1:9000/idp"),
            ("JITVM_CONSOLE_OIDC_CLIENT_ID", "abc"),
        ])
        .expect("loopback may be plain http");
        assert_eq!(local.origins, ["http://127.0.0.1:9000"]);
    }

    #[test]
    fn every_asset_has_its_type_and_the_policy_and_nothing_else_is_served() {
        let console = ConsoleConfig::default();
        for (path, kind) in [
            ("/", "text/html; charset=utf-8"),
            ("/console/app.js", "text/javascript; charset=utf-8"),
            ("/console/app.css", "text/css; charset=utf-8"),
            ("/console/icon.svg", "image/svg+xml"),
        ] {
            let response = console.serve(path).expect(path);
            assert_eq!(response.headers()[header::CONTENT_TYPE], kind, "{path}");
            assert!(
                response
                    .headers()
                    .contains_key(header::CONTENT_SECURITY_POLICY)
            );
        }
        assert!(console.serve("/console/../Cargo.toml").is_none());
        assert!(console.serve("/console/secret").is_none());
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_nothing_from_elsewhere() {
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("eval("));
        // Tokens live in the tab's sessionStorage only, never where every
        // tab and every later visit can read them.
        assert!(!APP_JS.contains("localStorage") && !APP_JS.contains("document.cookie"));
    }
}

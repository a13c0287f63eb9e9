//! What the HTTP functions share: who is calling, JSON responses, the error
//! body of design.md, and the limits every route enforces.
//!
//! Handlers take an `http::Request<Bytes>` and the [`Caller`] (worked out by
//! whoever received the request: API Gateway's request context in Lambda,
//! the bearer token in the local host) and return an
//! `http::Response<String>`. Nothing a caller sends can make them panic.

use std::borrow::Cow;
use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::json;

use crate::domain::{
    IllegalTransition, PolicyError, Principal, PrincipalPattern, RequestError, VmId,
};
use crate::ports::AdapterError;

/// Bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// The caller's own address, when the caller is a person calling the
    /// API directly; a request's missing source defaults to it. `None` for
    /// bots (Slack) and queue senders, which must name the source.
    pub address: Option<IpAddr>,
    /// What the authentication reported, when the principal is derived
    /// from it rather than equal to it (an assumed role's ARN with the
    /// session name that does not count), for `GET /v1/whoami` and logs.
    pub reported: Option<String>,
}

impl Caller {
    pub fn is_admin(&self, admins: &[PrincipalPattern]) -> bool {
        admins.iter().any(|a| a.matches(&self.principal))
    }

    /// Audits what the authentication reported beside the principal it
    /// gave, when the two differ: a session name that does not count is
    /// no identity, but it is evidence of who called.
    pub fn audit_derivation<B>(&self, request: &http::Request<B>) {
        let Some(reported) = &self.reported else {
            return;
        };
        tracing::info!(
            target: "audit",
            event = "caller.derived",
            actor = %self.principal,
            authenticated_as = %reported,
            method = %request.method(),
            path = %request.uri().path(),
            "the principal is derived from what the authentication reported"
        );
    }
}

/// An error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            401,
            "Unauthenticated",
            "this API needs an authenticated caller (IAM-signed request, or Authorization: Bearer <token> on the local host)",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NotFound", message)
    }

    pub fn into_response(self) -> Response<String> {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), code = %self.code, message = %self.message, "request failed");
        } else {
            tracing::info!(status = self.status.as_u16(), code = %self.code, message = %self.message, "request refused");
        }
        json_response(
            self.status.as_u16(),
            &json!({"error": {"code": self.code, "message": self.message}}),
        )
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        Self::new(e.http_status(), e.code(), e.to_string())
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        Self::new(e.http_status(), e.code(), e.to_string())
    }
}

impl From<IllegalTransition> for ApiError {
    fn from(e: IllegalTransition) -> Self {
        Self::new(409, "IllegalTransition", e.to_string())
    }
}

impl From<AdapterError> for ApiError {
    fn from(e: AdapterError) -> Self {
        match e {
            AdapterError::NotFound(m) => Self::new(404, "NotFound", m),
            AdapterError::Conflict(m) => Self::new(409, "Conflict", m),
            AdapterError::Permanent { code, message } => {
                // Codes jitvm raises itself are the caller's to act on; any
                // other is the cloud refusing, which the caller cannot fix.
                let status = match code.as_str() {
                    "InvalidQuery" => 400,
                    "Unsupported"
                    | "UnsupportedCloud"
                    | "CloudNotConfigured"
                    | "RegionNotSwept"
                    | "SubscriptionNotSwept" => 422,
                    "JitNotEnabled"
                    | "DuplicateGrant"
                    | "JitGroupConflict"
                    | "JitGroupShared"
                    | "PlaceholderConflict"
                    | "PriorityBandFull"
                    | "CannotRestore" => 409,
                    _ => 502,
                };
                Self::new(status, code, message)
            }
            AdapterError::Transient { message, .. } => Self::new(
                503,
                "Unavailable",
                format!(
                    "{message}; nothing was changed that a retry would not finish, so try again"
                ),
            ),
        }
    }
}

/// A JSON response with `status`.
pub fn json_response<T: Serialize + ?Sized>(status: u16, body: &T) -> Response<String> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    let mut response = Response::new(text);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An empty 204.
pub fn no_content() -> Response<String> {
    let mut response = Response::new(String::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Refuses a body over [`MAX_BODY_BYTES`] with 413, and an empty one with 400.
pub fn check_body(body: &Bytes) -> Result<&[u8], ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            413,
            "BodyTooLarge",
            format!(
                "the body is {} bytes; at most {MAX_BODY_BYTES} are accepted",
                body.len()
            ),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            400,
            "EmptyBody",
            "the body must be a JSON object",
        ));
    }
    Ok(body)
}

/// The path's segments after percent-decoding (`/v1/policies/arn%3Aaws...`
/// gives `["v1", "policies", "arn:aws..."]`). A segment that does not decode
/// to UTF-8 is refused.
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect()
}

/// `text` percent-decoded, once; 400 `InvalidPath` when that is not UTF-8.
fn decode(text: &str) -> Result<String, ApiError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            ApiError::new(
                400,
                "InvalidPath",
                "a part of the path is not UTF-8 once percent-decoded",
            )
        })
}

/// A VM id as a caller wrote it, already percent-decoded: an instance ARN
/// or an Azure resource id. The Azure id's leading `/` may be left out
/// (`$API/v1/policies/subscriptions/...` reads better than a double slash).
pub fn parse_vm(text: &str) -> Result<VmId, ApiError> {
    // Only spaces, as `VmId::parse` ignores them: other whitespace and
    // control characters at the ends are for it to refuse, not to trim.
    let text = text.trim_matches(' ');
    let missing_slash = text
        .get(..SUBSCRIPTIONS.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(SUBSCRIPTIONS));
    let text = if missing_slash {
        Cow::Owned(format!("/{text}"))
    } else {
        Cow::Borrowed(text)
    };
    VmId::parse(&text).map_err(|e| ApiError::new(400, "InvalidVmId", e.to_string()))
}

const SUBSCRIPTIONS: &str = "subscriptions/";

/// The VM id that ends a path, given what follows the route's prefix
/// (`/v1/policies/`). A VM id holds `/`, so it is the whole rest of the
/// path, written plainly or percent-encoded once, and decoded exactly once
/// here: more rounds would let one VM be named by path strings that API
/// Gateway routed, and IAM authorised, as something else.
pub fn vm_in_path(rest: &str) -> Result<VmId, ApiError> {
    parse_vm(&decode(rest)?)
}

/// The value of query parameter `name`, percent-decoded (`+` as space).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode_str(&k.replace('+', " "))
            .decode_utf8()
            .ok()?
            .into_owned();
        (key == name).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// A method that a route does not accept.
pub fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("this route accepts {allowed}"),
    )
}

pub fn no_route(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NoRoute",
        format!(
            "no route {}; see README.md for the API",
            path.chars().take(200).collect::<String>()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_vm_ids() {
        let s = segments("/v1/policies/arn%3Aaws%3Aec2%3Aus-east-1%3A123456789012%3Ainstance%2Fi-0123456789abcdef0").unwrap();
        assert_eq!(
            s[2],
            "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"
        );
        assert!(parse_vm(&s[2]).is_ok());
        assert!(segments("/v1/%FF").is_err());
    }

    #[test]
    fn a_vm_id_is_the_rest_of_the_path_plain_or_encoded() {
        let arn = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
        let azure = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-01";
        let want_arn = VmId::parse(arn).unwrap();
        let want_azure = VmId::parse(azure).unwrap();
        for rest in [
            arn.to_owned(),
            encode(arn),
            "arn:aws:ec2:us-east-1:123456789012:instance%2Fi-0123456789abcdef0".to_owned(),
        ] {
            assert_eq!(vm_in_path(&rest).unwrap(), want_arn, "{rest}");
        }
        for rest in [
            azure.to_owned(),
            azure.trim_start_matches('/').to_owned(),
            encode(azure),
            encode(azure.trim_start_matches('/')),
            azure.to_uppercase().trim_start_matches('/').to_owned(),
        ] {
            assert_eq!(vm_in_path(&rest).unwrap(), want_azure, "{rest}");
        }
    }

    #[test]
    fn a_bad_vm_path_is_a_400_naming_the_forms() {
        for rest in ["", "i-0123456789abcdef0", "%FF%FE", "arn:aws:ec2:x", "a%2"] {
            let e = vm_in_path(rest).unwrap_err();
            assert_eq!(e.status, 400, "{rest}: {e:?}");
            assert!(
                matches!(e.code.as_str(), "InvalidVmId" | "InvalidPath"),
                "{rest}: {e:?}"
            );
        }
        let e = vm_in_path("web-01").unwrap_err();
        assert!(e.message.contains("arn:aws:ec2"), "{}", e.message);
        // A line break or a no-break space around the id is refused, not
        // trimmed; spaces are ignored.
        for rest in [
            format!("{}%0A", encode(azure_id())),
            format!("%C2%A0{}", encode(azure_id())),
            format!("{}%2F", encode(azure_id())),
        ] {
            assert_eq!(vm_in_path(&rest).unwrap_err().code, "InvalidVmId", "{rest}");
        }
        assert!(vm_in_path(&format!("%20{}%20", encode(azure_id()))).is_ok());
        // Decoded once: an id encoded twice is not an id.
        let twice = encode(&encode(
            "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0",
        ));
        assert_eq!(vm_in_path(&twice).unwrap_err().code, "InvalidVmId");
    }

    fn azure_id() -> &'static str {
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-01"
    }

    #[test]
    fn a_subscription_not_swept_is_a_422() {
        let e = ApiError::from(AdapterError::permanent(
            "SubscriptionNotSwept",
            "web-01: its subscription is not in JITVM_AZURE_SUBSCRIPTIONS",
        ));
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (422, "SubscriptionNotSwept")
        );
    }

    /// Every byte but the unreserved ones percent-encoded, as
    /// `encodeURIComponent` or Python's `quote(safe="")` write a segment.
    fn encode(text: &str) -> String {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("vm=a%2Fb&limit=5"), "vm").as_deref(),
            Some("a/b")
        );
        assert_eq!(query_param(Some("limit=5"), "vm"), None);
        assert_eq!(query_param(None, "vm"), None);
    }

    #[test]
    fn body_limits() {
        assert_eq!(
            check_body(&Bytes::from(vec![b' '; 3])).unwrap_err().status,
            400
        );
        assert_eq!(
            check_body(&Bytes::from(vec![b'{'; MAX_BODY_BYTES + 1]))
                .unwrap_err()
                .status,
            413
        );
        assert!(check_body(&Bytes::from_static(b"{}")).is_ok());
    }

    #[test]
    fn errors_have_the_contract_shape() {
        let r = ApiError::new(403, "SourceNotAllowed", "no").into_response();
        assert_eq!(r.status(), 403);
        let v: serde_json::Value = serde_json::from_str(r.body()).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": "SourceNotAllowed", "message": "no"}})
        );
    }
}

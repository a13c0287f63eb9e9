//! API Gateway's HTTP API, as far as a Lambda function can tell: which route
//! of `template.yaml` a call reaches, and the event (payload format 2.0) it
//! is invoked with.
//!
//! It does what the documentation and captured events say API Gateway does:
//! the path is percent-decoded before routing (so `%2F` is a `/`, and a VM
//! id can only match a greedy `{vm+}` parameter), `rawPath` and
//! `pathParameters` arrive decoded, a route's authorizer decides what
//! `requestContext.authorizer` holds (and refuses calls without one before
//! any function runs), and bodies may arrive base64-encoded.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use crate::template::{Route, api_routes};

/// Who API Gateway says is calling.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A SigV4-signed call: IAM authorization reports the caller's ARN.
    Iam(String),
    /// A bearer token the JWT authorizer accepted, with its claims.
    Jwt(Value),
    /// No credentials.
    Anonymous,
}

/// A call as a client sends it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The path and query exactly as sent (percent-encoded or not).
    pub target: String,
    pub auth: Auth,
    pub body: Option<Vec<u8>>,
    pub content_type: Option<String>,
    /// Whether API Gateway hands the body over base64-encoded.
    pub base64: bool,
    pub headers: Vec<(String, String)>,
    pub source_ip: String,
}

impl Call {
    pub fn new(method: &str, target: &str, auth: Auth) -> Self {
        Self {
            method: method.to_owned(),
            target: target.to_owned(),
            auth,
            body: None,
            content_type: None,
            base64: false,
            headers: Vec::new(),
            source_ip: "198.51.100.7".into(),
        }
    }

    /// A JSON body, handed over as text.
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self.content_type = Some("application/json".into());
        self
    }

    /// The body handed over base64-encoded, as API Gateway does for
    /// content it does not take for text.
    pub fn base64(mut self) -> Self {
        self.base64 = true;
        self
    }

    pub fn body(mut self, content_type: &str, body: &str) -> Self {
        self.body = Some(body.as_bytes().to_vec());
        self.content_type = Some(content_type.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }
}

/// API Gateway's own answer, given before any function runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub message: &'static str,
}

/// An HTTP API of the template, on one stage.
pub struct HttpApi {
    routes: Vec<Route>,
    stage: String,
    api_id: String,
}

impl HttpApi {
    /// The HTTP API with logical id `api` (`Api` or `SsoApi`), on its
    /// `$default` stage (what SAM makes when no stage is named).
    pub fn from_template(api: &str) -> Self {
        let routes = api_routes(api);
        assert!(!routes.is_empty(), "{api} has no routes");
        Self {
            routes,
            stage: "$default".into(),
            api_id: "a1b2c3d4e5".into(),
        }
    }

    /// The same routes on a named stage, whose name leads every `rawPath`.
    pub fn on_stage(mut self, stage: &str) -> Self {
        self.stage = stage.to_owned();
        self
    }

    /// The route a call reaches and the event its function is invoked
    /// with, or API Gateway's own refusal (404 when no route matches, 403
    /// or 401 when the route's authorizer turns the call away).
    pub fn event(&self, call: &Call) -> Result<(Route, Value), Refused> {
        let (path, query) = call
            .target
            .split_once('?')
            .unwrap_or((call.target.as_str(), ""));
        let decoded = percent_decode_str(path).decode_utf8_lossy().into_owned();
        let (route, params) = self.route(&call.method, &decoded).ok_or(Refused {
            status: 404,
            message: "Not Found",
        })?;
        let authorizer = authorizer(&route, &call.auth)?;
        let raw_path = match self.stage.as_str() {
            "$default" => decoded.clone(),
            stage => format!("/{stage}{decoded}"),
        };
        let mut event = json!({
            "version": "2.0",
            "routeKey": route.key,
            "rawPath": raw_path,
            "rawQueryString": query,
            "headers": self.headers(call),
            "requestContext": {
                "accountId": "123456789012",
                "apiId": self.api_id,
                "domainName": format!("{}.execute-api.us-east-1.amazonaws.com", self.api_id),
                "domainPrefix": self.api_id,
                "http": {
                    "method": call.method,
                    "path": raw_path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": call.source_ip,
                    "userAgent": "curl/8.5.0",
                },
                "requestId": uuid::Uuid::now_v7().simple().to_string(),
                "routeKey": route.key,
                "stage": self.stage,
                "time": "01/Dec/2026:10:00:00 +0000",
                "timeEpoch": jiff::Timestamp::now().as_millisecond(),
            },
            "isBase64Encoded": call.base64,
        });
        if let Some(authorizer) = authorizer {
            event["requestContext"]["authorizer"] = authorizer;
        }
        if !query.is_empty() {
            event["queryStringParameters"] = query_parameters(query);
        }
        if !params.is_empty() {
            event["pathParameters"] = Value::Object(params);
        }
        if let Some(body) = &call.body {
            event["body"] = json!(if call.base64 {
                STANDARD.encode(body)
            } else {
                String::from_utf8(body.clone()).expect("a text body is UTF-8")
            });
        }
        Ok((route, event))
    }

    /// The most specific route for `method` and the decoded `path`, as API
    /// Gateway picks it: literal segments over parameters, and a greedy
    /// parameter last.
    fn route(&self, method: &str, path: &str) -> Option<(Route, Map<String, Value>)> {
        let mut found: Vec<(usize, usize, Route, Map<String, Value>)> = self
            .routes
            .iter()
            .filter(|r| r.method() == method || r.method() == "ANY")
            .filter_map(|r| {
                let params = match_path(r.path(), path)?;
                let greedy = usize::from(r.path().contains("+}"));
                Some((greedy, params.len(), r.clone(), params))
            })
            .collect();
        found.sort_by_key(|(greedy, params, _, _)| (*greedy, *params));
        found
            .into_iter()
            .next()
            .map(|(_, _, route, params)| (route, params))
    }

    fn headers(&self, call: &Call) -> Value {
        let mut headers = Map::new();
        let host = format!("{}.execute-api.us-east-1.amazonaws.com", self.api_id);
        for (name, value) in [
            ("accept", "*/*"),
            ("host", host.as_str()),
            ("user-agent", "curl/8.5.0"),
            (
                "x-amzn-trace-id",
                "Root=1-674c2f00-0123456789abcdef01234567",
            ),
            ("x-forwarded-for", call.source_ip.as_str()),
            ("x-forwarded-port", "443"),
            ("x-forwarded-proto", "https"),
        ] {
            headers.insert(name.into(), json!(value));
        }
        if let Some(body) = &call.body {
            headers.insert("content-length".into(), json!(body.len().to_string()));
        }
        if let Some(ct) = &call.content_type {
            headers.insert("content-type".into(), json!(ct));
        }
        for (name, value) in &call.headers {
            headers.insert(name.clone(), json!(value));
        }
        Value::Object(headers)
    }
}

/// The parameters `template` (`/v1/policies/{vm+}`) catches from `path`,
/// or `None` when it does not match.
fn match_path(template: &str, path: &str) -> Option<Map<String, Value>> {
    let mut params = Map::new();
    let mut rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let param = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        match param {
            Some(name) if name.ends_with('+') => {
                if !last || rest.is_empty() {
                    return None;
                }
                params.insert(name.trim_end_matches('+').into(), json!(rest));
                rest = "";
            }
            Some(name) => {
                let (value, tail) = rest.split_once('/').unwrap_or((rest, ""));
                if value.is_empty() || (last && rest.contains('/')) {
                    return None;
                }
                params.insert(name.into(), json!(value));
                rest = tail;
            }
            None => {
                let (value, tail) = rest.split_once('/').unwrap_or((rest, ""));
                if value != *segment || (last && rest.contains('/')) {
                    return None;
                }
                rest = tail;
            }
        }
    }
    rest.is_empty().then_some(params)
}

/// `requestContext.authorizer` for a call on `route`, or API Gateway's
/// refusal: IAM authorization answers 403 to an unsigned call, a JWT
/// authorizer 401 to a call without a valid token.
fn authorizer(route: &Route, auth: &Auth) -> Result<Option<Value>, Refused> {
    let scheme = route.security[0]
        .as_object()
        .and_then(|o| o.keys().next())
        .map(String::as_str)
        .unwrap_or("NONE");
    match (scheme, auth) {
        ("NONE", _) => Ok(None),
        ("AWS_IAM", Auth::Iam(arn)) => {
            let account = arn.split(':').nth(4).unwrap_or_default();
            Ok(Some(json!({"iam": {
                "accessKey": "ASIAEXAMPLEKEY000001",
                "accountId": account,
                "callerId": "AROAEXAMPLEID0000001:session",
                "cognitoIdentity": null,
                "principalOrgId": "o-exampleorg",
                "userArn": arn,
                "userId": "AROAEXAMPLEID0000001:session",
            }})))
        }
        ("AWS_IAM", _) => Err(Refused {
            status: 403,
            message: "Forbidden",
        }),
        (_, Auth::Jwt(claims)) => Ok(Some(json!({"jwt": {"claims": claims, "scopes": null}}))),
        _ => Err(Refused {
            status: 401,
            message: "Unauthorized",
        }),
    }
}

/// `queryStringParameters`: decoded, repeated names joined by commas.
fn query_parameters(query: &str) -> Value {
    let mut map: Map<String, Value> = Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let joined = match map.get(k.as_ref()).and_then(Value::as_str) {
            Some(before) => format!("{before},{v}"),
            None => v.into_owned(),
        };
        map.insert(k.into_owned(), json!(joined));
    }
    Value::Object(map)
}

/// A function's answer in the HTTP API's response format 2.0.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Map<String, Value>,
    /// The body, decoded when the function sent it base64-encoded.
    pub body: String,
}

impl Response {
    /// Reads a function's result as API Gateway does, failing on anything
    /// that is not the 2.0 response format.
    pub fn from_result(result: &Value) -> Response {
        let status = result["statusCode"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or_else(|| panic!("no statusCode in the response: {result}"));
        let encoded = result["isBase64Encoded"]
            .as_bool()
            .unwrap_or_else(|| panic!("no isBase64Encoded in the response: {result}"));
        let body = result["body"].as_str().unwrap_or_default();
        let body = if encoded {
            String::from_utf8(STANDARD.decode(body).expect("base64 body")).expect("UTF-8 body")
        } else {
            body.to_owned()
        };
        Response {
            status,
            headers: result["headers"].as_object().cloned().unwrap_or_default(),
            body,
        }
    }

    /// The body as JSON (`Null` when empty).
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_as_api_gateway_routes() {
        let p = match_path(
            "/v1/policies/{vm+}",
            "/v1/policies/arn:aws:ec2:x/instance/i-1",
        )
        .unwrap();
        assert_eq!(p["vm"], "arn:aws:ec2:x/instance/i-1");
        assert!(
            match_path(
                "/v1/policies/{vm}",
                "/v1/policies/arn:aws:ec2:x/instance/i-1"
            )
            .is_none()
        );
        assert!(match_path("/v1/policies/{vm+}", "/v1/policies/").is_none());
        let p = match_path("/v1/requests/{id}/approve", "/v1/requests/abc/approve").unwrap();
        assert_eq!(p["id"], "abc");
        assert!(match_path("/v1/requests/{id}", "/v1/requests/abc/approve").is_none());
        assert!(match_path("/v1/vms", "/v1/vms").unwrap().is_empty());
        assert!(match_path("/v1/vms", "/v1/vms/x").is_none());
    }
}

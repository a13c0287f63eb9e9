//! Between API Gateway's HTTP API events (through `lambda_http`) and the
//! handlers' plain `http` types.

use std::net::IpAddr;

use bytes::Bytes;
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::api::Caller;
use crate::domain::{Principal, SessionTrust};

/// The caller of an HTTP API request, with the principal derived as
/// README "Principals" says: from the IAM ARN API Gateway reports (an
/// assumed role's session name counting only for the roles `trust` names),
/// or `jwt:<iss>#<sub>` from the JWT authorizer's claims; and the source
/// address. `None` when API Gateway authenticated nobody.
pub fn caller(request: &lambda_http::Request, trust: &SessionTrust) -> Option<Caller> {
    let Some(RequestContext::ApiGatewayV2(ctx)) = request.request_context_ref() else {
        return None;
    };
    let authorizer = ctx.authorizer.as_ref()?;
    let iam = authorizer.iam.as_ref().and_then(|iam| iam.user_arn.clone());
    let (principal, reported) = match iam {
        Some(arn) => (Principal::from_iam(&arn, trust).ok()?, arn),
        None => {
            let claims = &authorizer.jwt.as_ref()?.claims;
            let (iss, sub) = (claims.get("iss")?, claims.get("sub")?);
            let principal = Principal::from_jwt(iss, sub).ok()?;
            (principal, format!("JWT of {iss}, subject {sub}"))
        }
    };
    let address = ctx
        .http
        .source_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    Some(Caller {
        reported: (reported != principal.as_str()).then_some(reported),
        principal,
        address,
    })
}

/// The request as the handlers take it: its body as bytes, and its path
/// the one the handlers route on ([`route_path`]).
pub fn into_handler_request(request: lambda_http::Request) -> http::Request<Bytes> {
    let path = route_path(&request);
    let mut request = into_bytes(request);
    let uri = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    match uri.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        // Every piece is percent-encoded or came from a parsed URI; keep
        // lambda_http's own URI should that ever not hold.
        Err(e) => {
            tracing::warn!(error = %e, "the route's path is not a URI; routing on lambda_http's")
        }
    }
    request
}

/// The path the handlers route on, with every path parameter one
/// percent-encoded segment: API Gateway's route (`PUT /v1/policies/{vm+}`)
/// with the values it matched (`pathParameters`, already decoded by API
/// Gateway) put back. A VM id holds `/`, so it can only arrive through a
/// greedy parameter; encoded here, the handler finds it whole. This also
/// holds behind a named stage or a custom domain's mapping, which `rawPath`
/// includes or leaves out. Only for a `$default` route, which has no
/// template, is it the path as sent, less the stage.
pub fn route_path(request: &lambda_http::Request) -> String {
    let Some(RequestContext::ApiGatewayV2(ctx)) = request.request_context_ref() else {
        return request.uri().path().to_owned();
    };
    let template = ctx
        .route_key
        .as_deref()
        .and_then(|key| key.split_once(' '))
        .map(|(_, template)| template)
        .filter(|template| template.starts_with('/'));
    if let Some(template) = template {
        let params = request.path_parameters_ref();
        return fill_route(template, |name| params?.first(name));
    }
    let path = request.uri().path();
    match ctx.stage.as_deref() {
        Some(stage) if stage != "$default" => path
            .strip_prefix(&format!("/{stage}"))
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(path)
            .to_owned(),
        _ => path.to_owned(),
    }
}

/// Everything but the unreserved characters of RFC 3986.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `template` (`/v1/requests/{id}/approve`, `/v1/policies/{vm+}`) with each
/// `{name}` or `{name+}` replaced by `param(name)`, percent-encoded as one
/// segment. A parameter API Gateway did not send stays its placeholder
/// (encoded), which no handler takes for an id.
fn fill_route<'a>(template: &str, param: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut path = String::with_capacity(template.len() * 2);
    for segment in template.split('/').skip(1) {
        path.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let value = param(name.trim_end_matches('+')).unwrap_or(segment);
                path.extend(utf8_percent_encode(value, SEGMENT));
            }
            None => path.push_str(segment),
        }
    }
    path
}

/// The request with its body as bytes.
fn into_bytes(request: lambda_http::Request) -> http::Request<Bytes> {
    let (parts, body) = request.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    http::Request::from_parts(parts, bytes)
}

/// The handler's response as `lambda_http` sends it.
pub fn into_lambda(response: http::Response<String>) -> lambda_http::Response<Body> {
    response.map(Body::Text)
}

/// Runs an HTTP handler as a Lambda function behind API Gateway: works out
/// the caller (trusting the session names of the roles `trust` names),
/// hands the handler plain `http` types and the current time, and sends
/// back its response.
pub async fn run_http<H, F>(trust: &SessionTrust, handler: H) -> Result<(), lambda_http::Error>
where
    H: Fn(Option<Caller>, http::Request<Bytes>, jiff::Timestamp) -> F + Sync,
    F: std::future::Future<Output = http::Response<String>> + Send,
{
    let handler = &handler;
    lambda_http::run(lambda_http::service_fn(
        move |event: lambda_http::Request| async move {
            let caller = caller(&event, trust);
            let request = into_handler_request(event);
            let response = handler(caller, request, jiff::Timestamp::now()).await;
            Ok::<_, lambda_http::Error>(into_lambda(response))
        },
    ))
    .await
}

/// The answer to an SQS batch whose messages were handled side by side:
/// each message whose `outcome` is an error is reported failed (logged
/// with `what` went wrong), for SQS to deliver again; the others are done.
pub fn batch_response<E: std::fmt::Display>(
    messages: &[aws_lambda_events::event::sqs::SqsMessage],
    outcomes: Vec<Result<(), E>>,
    what: &str,
) -> aws_lambda_events::event::sqs::SqsBatchResponse {
    let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
    for (message, outcome) in messages.iter().zip(outcomes) {
        if let Err(e) = outcome {
            let id = message.message_id.clone().unwrap_or_default();
            tracing::error!(message_id = %id, error = %e, "{what}; SQS delivers it again");
            let mut failure = aws_lambda_events::event::sqs::BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::api::vm_in_path;
    use crate::domain::VmId;

    const ARN: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0";
    const AZURE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-01";

    /// An HTTP API (payload 2.0) event as API Gateway sends it: the path
    /// decoded, the route that matched, and what its parameters caught.
    fn event(route_key: &str, raw_path: &str, params: Value, stage: &str) -> lambda_http::Request {
        let alice = json!({"iam": {"accessKey": "AKIA", "accountId": "123456789012",
            "callerId": "AIDA", "principalOrgId": null,
            "userArn": "arn:aws:iam::123456789012:user/alice", "userId": "AIDA"}});
        event_as(route_key, raw_path, params, stage, alice)
    }

    /// [`event`] with the authorizer context `authorizer`.
    fn event_as(
        route_key: &str,
        raw_path: &str,
        params: Value,
        stage: &str,
        authorizer: Value,
    ) -> lambda_http::Request {
        let method = route_key.split(' ').next().unwrap_or("GET");
        let event = json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": raw_path,
            "rawQueryString": "limit=5&vm=arn%3Aaws",
            "headers": {"host": "abc123.execute-api.us-east-1.amazonaws.com",
                        "x-forwarded-proto": "https"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "abc123",
                "authorizer": authorizer,
                "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                "domainPrefix": "abc123",
                "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1",
                         "sourceIp": "198.51.100.7", "userAgent": "curl/8.5.0"},
                "requestId": "id", "routeKey": route_key, "stage": stage,
                "time": "01/Dec/2026:00:00:00 +0000", "timeEpoch": 1_795_996_800_000_u64
            },
            "pathParameters": params,
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).expect("a v2 event")
    }

    fn vm_of(request: &lambda_http::Request) -> VmId {
        let path = route_path(request);
        let rest = path.strip_prefix("/v1/policies/").expect("a policy path");
        vm_in_path(rest).expect("a VM id")
    }

    #[test]
    fn a_greedy_vm_parameter_reaches_the_handler_whole() {
        for (vm, stage) in [(ARN, "$default"), (AZURE, "$default"), (ARN, "prod")] {
            let prefix = if stage == "prod" { "/prod" } else { "" };
            // A leading `/` of an Azure id makes `//` after `policies`.
            let raw = format!("{prefix}/v1/policies/{vm}");
            let request = event(
                "PUT /v1/policies/{vm+}",
                &raw,
                json!({"vm": vm.trim_start_matches('/')}),
                stage,
            );
            assert_eq!(vm_of(&request), VmId::parse(vm).unwrap(), "{raw}");
            let handed = into_handler_request(request);
            assert_eq!(handed.uri().query(), Some("limit=5&vm=arn%3Aaws"));
            assert!(handed.uri().path().starts_with("/v1/policies/"));
        }
    }

    #[test]
    fn other_parameters_are_one_segment_each() {
        let request = event(
            "POST /v1/requests/{id}/approve",
            "/v1/requests/0193a1b2c3/approve",
            json!({"id": "0193a1b2c3"}),
            "$default",
        );
        assert_eq!(route_path(&request), "/v1/requests/0193a1b2c3/approve");
        let request = event(
            "GET /v1/requests/{id}",
            "/v1/requests/a b",
            json!({"id": "a/b c"}),
            "$default",
        );
        assert_eq!(route_path(&request), "/v1/requests/a%2Fb%20c");
    }

    #[test]
    fn without_a_route_the_path_as_sent_less_the_stage() {
        let request = event("$default", "/prod/v1/vms", json!(null), "prod");
        assert_eq!(route_path(&request), "/v1/vms");
        let request = event("$default", "/v1/vms", json!(null), "$default");
        assert_eq!(route_path(&request), "/v1/vms");
        // A route whose parameter API Gateway did not send names no VM.
        let request = event(
            "GET /v1/policies/{vm+}",
            &format!("/v1/policies/{ARN}"),
            json!({}),
            "$default",
        );
        assert_eq!(route_path(&request), "/v1/policies/%7Bvm%2B%7D");
        assert_eq!(vm_in_path("%7Bvm%2B%7D").unwrap_err().code, "InvalidVmId");
    }

    #[test]
    fn the_caller_is_the_iam_principal_or_the_jwt_subject() {
        let request = event("GET /v1/vms", "/v1/vms", json!(null), "$default");
        let caller = caller(&request, &SessionTrust::default()).expect("an IAM caller");
        assert_eq!(
            caller.principal.as_str(),
            "arn:aws:iam::123456789012:user/alice"
        );
        assert_eq!(caller.address, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(caller.reported, None);
    }

    fn principal_of(authorizer: Value, trust: &SessionTrust) -> Option<String> {
        let request = event_as(
            "GET /v1/whoami",
            "/v1/whoami",
            json!(null),
            "$default",
            authorizer,
        );
        caller(&request, trust).map(|c| c.principal.to_string())
    }

    fn iam(arn: &str) -> Value {
        json!({"iam": {"accessKey": "ASIA", "accountId": "123456789012", "callerId": "AROA:x",
            "principalOrgId": null, "userArn": arn, "userId": "AROA:x"}})
    }

    #[test]
    fn a_session_name_counts_only_for_trusted_roles() {
        let sso = SessionTrust::parse(&["AWSReservedSSO_*".to_owned()]).unwrap();
        let session = "arn:aws:sts::123456789012:assumed-role/Approvers/carol";
        for trust in [&SessionTrust::default(), &sso] {
            assert_eq!(
                principal_of(iam(session), trust).as_deref(),
                Some("arn:aws:sts::123456789012:assumed-role/Approvers/*"),
                "whoever may assume Approvers can call the session carol"
            );
        }
        let sso_session =
            "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Ops_0123abcd/carol@example.com";
        assert_eq!(
            principal_of(iam(sso_session), &sso).as_deref(),
            Some(sso_session)
        );
        assert_eq!(
            principal_of(iam(sso_session), &SessionTrust::default()).as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Ops_0123abcd/*")
        );
        assert_eq!(
            principal_of(iam("arn:aws:sts::123456789012:federated-user/carol"), &sso).as_deref(),
            Some("arn:aws:sts::123456789012:federated-user/*")
        );
    }

    #[test]
    fn a_jwt_caller_is_unique_across_issuers() {
        let jwt = |iss: &str, sub: &str| json!({"jwt": {"claims": {"iss": iss, "sub": sub}, "scopes": null}});
        let a = principal_of(
            jwt("https://a.example.com/", "u1"),
            &SessionTrust::default(),
        );
        let b = principal_of(
            jwt("https://b.example.com/", "u1"),
            &SessionTrust::default(),
        );
        assert_eq!(a.as_deref(), Some("jwt:https://a.example.com/#u1"));
        assert_ne!(a, b);
        let no_issuer = json!({"jwt": {"claims": {"sub": "u1"}, "scopes": null}});
        assert_eq!(principal_of(no_issuer, &SessionTrust::default()), None);
        let forged = jwt("https://a.example.com/#u1", "x");
        assert_eq!(principal_of(forged, &SessionTrust::default()), None);
    }
}

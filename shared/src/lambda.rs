//! Between API Gateway's HTTP API events (through `lambda_http`) and the
//! handlers' plain `http` types.

use std::net::IpAddr;

use bytes::Bytes;
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};

use crate::api::Caller;
use crate::domain::Principal;

/// The caller of an HTTP API request: the IAM principal (IAM
/// authorization) or `jwt:<sub>` (JWT authorizer), and the source address.
/// `None` when API Gateway authenticated nobody.
pub fn caller(request: &lambda_http::Request) -> Option<Caller> {
    let Some(RequestContext::ApiGatewayV2(ctx)) = request.request_context_ref() else {
        return None;
    };
    let authorizer = ctx.authorizer.as_ref()?;
    let name = authorizer
        .iam
        .as_ref()
        .and_then(|iam| iam.user_arn.clone())
        .or_else(|| {
            authorizer
                .jwt
                .as_ref()
                .and_then(|jwt| jwt.claims.get("sub"))
                .map(|sub| format!("jwt:{sub}"))
        })?;
    let principal = Principal::parse(&name).ok()?;
    let address = ctx
        .http
        .source_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    Some(Caller { principal, address })
}

/// The request with its body as bytes.
pub fn into_bytes(request: lambda_http::Request) -> http::Request<Bytes> {
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
/// the caller, hands the handler plain `http` types and the current time,
/// and sends back its response.
pub async fn run_http<H, F>(handler: H) -> Result<(), lambda_http::Error>
where
    H: Fn(Option<Caller>, http::Request<Bytes>, jiff::Timestamp) -> F + Sync,
    F: std::future::Future<Output = http::Response<String>> + Send,
{
    let handler = &handler;
    lambda_http::run(lambda_http::service_fn(
        move |event: lambda_http::Request| async move {
            let caller = caller(&event);
            let response = handler(caller, into_bytes(event), jiff::Timestamp::now()).await;
            Ok::<_, lambda_http::Error>(into_lambda(response))
        },
    ))
    .await
}

//! SigV4 signing of calls to the IAM-authorised API, with the AWS SDK's own
//! signer: what to sign is ours, how to sign it is theirs.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::error::CliError;

/// API Gateway's signing name.
pub const SERVICE: &str = "execute-api";

/// The headers (`authorization`, `x-amz-date`, and `x-amz-security-token`
/// for temporary credentials) that sign a request of `method` to `url` with
/// `body`, as `credentials` in `region` for `service` at `time`.
pub fn signing_headers(
    method: &str,
    url: &str,
    body: &[u8],
    credentials: Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, CliError> {
    let identity: Identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| CliError::Config(format!("cannot sign the request: {e}")))?;
    let signable = SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(body))
        .map_err(|e| CliError::Config(format!("cannot sign the request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params.into())
        .map_err(|e| CliError::Config(format!("cannot sign the request: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases of AWS's published SigV4 test suite (shipped with aws-sigv4 as
    /// `aws-signing-test-suite/v4/<case>`): method, URL, session token, and
    /// the `Authorization` header of `header-signed-request.txt`. All are
    /// signed at 2015-08-30T12:36:00Z for service `service` in us-east-1
    /// with the suite's example credentials.
    const SUITE: &[(&str, &str, &str, Option<&str>, &str)] = &[
        (
            "get-vanilla",
            "GET",
            "https://example.amazonaws.com/",
            None,
            "SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "post-vanilla",
            "POST",
            "https://example.amazonaws.com/",
            None,
            "SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            None,
            "SignedHeaders=host;x-amz-date, \
             Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "get-vanilla-with-session-token",
            "GET",
            "https://example.amazonaws.com/",
            Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
            "SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
        ),
    ];

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_published_test_suite_signs_as_published() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        for (case, method, url, token, expected) in SUITE {
            let credentials = Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                token.map(str::to_owned),
                None,
                "test-suite",
            );
            let headers =
                signing_headers(method, url, b"", credentials, "us-east-1", "service", time)
                    .unwrap();
            assert_eq!(
                header(&headers, "x-amz-date"),
                Some("20150830T123600Z"),
                "{case}"
            );
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, {expected}"
            );
            assert_eq!(
                header(&headers, "authorization"),
                Some(authorization.as_str()),
                "{case}"
            );
            assert_eq!(header(&headers, "x-amz-security-token"), *token, "{case}");
        }
    }

    #[test]
    fn api_calls_are_scoped_to_execute_api_in_the_region() {
        let credentials = Credentials::new("AKID", "secret", None, None, "test");
        let headers = signing_headers(
            "POST",
            "https://abc.execute-api.eu-west-1.amazonaws.com/v1/requests",
            b"{}",
            credentials,
            "eu-west-1",
            SERVICE,
            SystemTime::now(),
        )
        .unwrap();
        let authorization = header(&headers, "authorization").unwrap();
        assert!(
            authorization.contains("/eu-west-1/execute-api/aws4_request"),
            "{authorization}"
        );
    }
}

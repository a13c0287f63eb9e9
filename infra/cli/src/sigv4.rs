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

    /// AWS's published SigV4 test suite, case `get-vanilla` (shipped with
    /// aws-sigv4 as `aws-signing-test-suite/v4/get-vanilla`): the request
    /// `GET /` to `example.amazonaws.com`, signed at 2015-08-30T12:36:00Z
    /// for service `service` in us-east-1 with the example credentials.
    #[test]
    fn get_vanilla_matches_the_published_signature() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test-suite",
        );
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        let headers = signing_headers(
            "GET",
            "https://example.amazonaws.com/",
            b"",
            credentials,
            "us-east-1",
            "service",
            time,
        )
        .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
        assert_eq!(get("x-amz-security-token"), None);
    }

    #[test]
    fn temporary_credentials_send_their_session_token() {
        let credentials = Credentials::new("AKID", "secret", Some("session".into()), None, "test");
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
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "x-amz-security-token" && v == "session")
        );
        assert!(headers.iter().any(
            |(n, v)| n == "authorization" && v.contains("/eu-west-1/execute-api/aws4_request")
        ));
    }
}

//! Configuration from the environment, read once at start-up (a function
//! fails fast there, never mid-request). The Lambda functions and the local
//! host read the same variable names.

use crate::domain::{PrincipalPattern, SessionTrust};
use crate::slack::is_slack_id;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {name}: {message}")]
pub struct ConfigError {
    pub name: &'static str,
    pub message: String,
}

/// Everything the functions read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `JITVM_POLICIES_TABLE`, default `jitvm-policies`.
    pub policies_table: String,
    /// `JITVM_REQUESTS_TABLE`, default `jitvm-requests`.
    pub requests_table: String,
    /// `JITVM_REQUEST_QUEUE`: the FIFO queue's name, default `jitvm-requests.fifo`.
    pub request_queue: String,
    /// `JITVM_REQUEST_QUEUE_URL`: the queue's URL, when known (Lambda); else
    /// it is looked up by name.
    pub request_queue_url: Option<String>,
    /// `JITVM_EXPIRY_QUEUE`: the standard queue each grant's expiry timer
    /// waits on, default `jitvm-expiry`.
    pub expiry_queue: String,
    /// `JITVM_EXPIRY_QUEUE_URL`: its URL, when known (Lambda); else it is
    /// looked up by name.
    pub expiry_queue_url: Option<String>,
    /// `JITVM_ADMINS`: comma-separated principals (or patterns) who may
    /// write policies.
    pub admins: Vec<PrincipalPattern>,
    /// `JITVM_REGIONS`: comma-separated regions whose instances are listed
    /// and swept; default the SDK's region.
    pub regions: Vec<String>,
    /// `JITVM_MAX_GROUPS_PER_INTERFACE`, default 5 (the EC2 quota).
    pub max_groups_per_interface: usize,
    /// Azure, when `JITVM_AZURE_TENANT_ID` is set; see [`AzureConfig`].
    pub azure: Option<AzureConfig>,
    /// `JITVM_AUDITORS`: comma-separated principals (or patterns) who may
    /// read every request and export the audit trail, and change nothing.
    pub auditors: Vec<PrincipalPattern>,
    /// `JITVM_APPROVAL_TIMEOUT`: how long a request waits for an approver
    /// before it is denied, ISO 8601 (`PT1H`, the default) or `90m`; from 5
    /// minutes to 7 days.
    pub approval_timeout: jiff::SignedDuration,
    /// `JITVM_SLACK_SIGNING_SECRET` or `JITVM_SLACK_SIGNING_SECRET_ARN`:
    /// the Slack app's signing secret, which turns the Slack routes on.
    pub slack_signing_secret: Option<Secret>,
    /// `JITVM_SLACK_WORKSPACES`: the Slack workspaces (team ids, `T...`)
    /// and Enterprise Grid organisations (enterprise ids, `E...`) whose
    /// members may use the Slack app; required with the signing secret.
    /// Everyone else is refused before anything is read or written.
    pub slack_workspaces: Vec<String>,
    /// `JITVM_TRUSTED_SESSION_ROLES`: the IAM roles whose session names an
    /// identity provider sets (see [`SessionTrust`]); default none.
    pub trusted_session_roles: SessionTrust,
    /// How the web console signs people in (`JITVM_CONSOLE_OIDC_*`, see
    /// [`crate::console::ConsoleConfig`]).
    pub console: crate::console::ConsoleConfig,
    /// Where notices and events go (see [`crate::notify::NotifySettings`]).
    pub notify: crate::notify::NotifySettings,
}

/// A secret given in the environment, or the ARN of the Secrets Manager
/// secret that holds it (read once at start-up, see
/// [`crate::aws::resolve_secrets`]).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Value(String),
    Arn(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Value(_) => f.write_str("Secret::Value(..)"),
            Secret::Arn(arn) => write!(f, "Secret::Arn({arn})"),
        }
    }
}

/// The secret `name` (its value) or `name_ARN` (the Secrets Manager
/// secret that holds it); not both.
pub fn secret_setting(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    arn_name: &'static str,
) -> Result<Option<Secret>, ConfigError> {
    let set = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    match (set(name), set(arn_name)) {
        (Some(_), Some(_)) => Err(ConfigError {
            name,
            message: format!("give {name} or {arn_name}, not both"),
        }),
        (Some(value), None) => Ok(Some(Secret::Value(value))),
        (None, Some(arn)) if arn.starts_with("arn:") => Ok(Some(Secret::Arn(arn))),
        (None, Some(arn)) => Err(ConfigError {
            name: arn_name,
            message: format!("{arn:?} is not an ARN (arn:aws:secretsmanager:...)"),
        }),
        (None, None) => Ok(None),
    }
}

/// How jitvm reaches Azure: an app registration (service principal) with a
/// role that may read VMs and NICs and write NSG rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// `JITVM_AZURE_TENANT_ID`: the Microsoft Entra tenant.
    pub tenant_id: String,
    /// `JITVM_AZURE_CLIENT_ID`: the app registration's client id.
    pub client_id: String,
    /// `JITVM_AZURE_CLIENT_SECRET`, `JITVM_AZURE_CLIENT_SECRET_ARN` or
    /// `JITVM_AZURE_FEDERATED_TOKEN_FILE`: exactly one.
    pub credential: AzureCredential,
    /// `JITVM_AZURE_AUTHORITY_URL`, default `https://login.microsoftonline.com`.
    pub authority_url: String,
    /// `JITVM_AZURE_ARM_URL`, default `https://management.azure.com`.
    pub arm_url: String,
    /// `JITVM_AZURE_SCOPE`, default `https://management.azure.com/.default`.
    pub scope: String,
    /// `JITVM_AZURE_SUBSCRIPTIONS`: comma-separated subscription ids whose
    /// VMs are listed and whose NSGs are swept (beside those that policies
    /// name).
    pub subscriptions: Vec<String>,
    /// `JITVM_AZURE_ALLOW_PRIORITIES`, default `100-199`: where grants go.
    pub allow_priorities: PriorityBand,
    /// `JITVM_AZURE_DENY_PRIORITIES`, default `200-299`: where the Deny
    /// rules of protected ports go. Above the allow band, so a grant always
    /// wins over the Deny rule of its port.
    pub deny_priorities: PriorityBand,
}

/// The secret an app registration proves itself with.
#[derive(Clone, PartialEq, Eq)]
pub enum AzureCredential {
    /// A client secret.
    Secret(String),
    /// A file holding a signed client assertion (a JWT), re-read for each
    /// token: workload identity federation writes and rotates such a file.
    AssertionFile(std::path::PathBuf),
    /// The ARN of a Secrets Manager secret whose `SecretString` is the
    /// client secret; read once at start-up (see
    /// [`crate::stack::Stack::connect`]), then held as [`Self::Secret`].
    SecretArn(String),
}

impl std::fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AzureCredential::Secret(_) => f.write_str("Secret(<redacted>)"),
            AzureCredential::AssertionFile(path) => {
                f.debug_tuple("AssertionFile").field(path).finish()
            }
            AzureCredential::SecretArn(arn) => f.debug_tuple("SecretArn").field(arn).finish(),
        }
    }
}

/// An inclusive range of NSG rule priorities (Azure allows 100 to 4096).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityBand {
    pub first: u16,
    pub last: u16,
}

impl PriorityBand {
    pub const MIN: u16 = 100;
    pub const MAX: u16 = 4096;

    /// Parses `first-last`, within 100..=4096.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (a, b) = text
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not first-last, such as 100-199"))?;
        let num = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| (Self::MIN..=Self::MAX).contains(n))
                .ok_or_else(|| format!("{s:?} is not a priority from 100 to 4096"))
        };
        let (first, last) = (num(a)?, num(b)?);
        if first > last {
            return Err(format!("{text:?}: the first priority is above the last"));
        }
        Ok(Self { first, last })
    }

    pub fn contains(&self, priority: u16) -> bool {
        (self.first..=self.last).contains(&priority)
    }
}

impl std::fmt::Display for PriorityBand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, for tests and the local host.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str, default: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let list = |name: &str| -> Vec<String> {
            lookup(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let admins = list("JITVM_ADMINS")
            .iter()
            .map(|a| {
                PrincipalPattern::parse(a).map_err(|e| ConfigError {
                    name: "JITVM_ADMINS",
                    message: format!("{a:?}: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_groups = get("JITVM_MAX_GROUPS_PER_INTERFACE", "5");
        let max_groups_per_interface = max_groups
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .ok_or_else(|| ConfigError {
                name: "JITVM_MAX_GROUPS_PER_INTERFACE",
                message: format!("{max_groups:?} is not a number from 1 to 16"),
            })?;
        let request_queue = get("JITVM_REQUEST_QUEUE", "jitvm-requests.fifo");
        if !request_queue.ends_with(".fifo") {
            return Err(ConfigError {
                name: "JITVM_REQUEST_QUEUE",
                message: format!("{request_queue:?} must name a FIFO queue (ending in .fifo)"),
            });
        }
        let expiry_queue = get("JITVM_EXPIRY_QUEUE", "jitvm-expiry");
        if expiry_queue.ends_with(".fifo") {
            return Err(ConfigError {
                name: "JITVM_EXPIRY_QUEUE",
                message: format!(
                    "{expiry_queue:?} must name a standard queue (not .fifo): timers need per-message delays"
                ),
            });
        }
        let azure = azure_config(&lookup, &get, &list)?;
        let auditors = list("JITVM_AUDITORS")
            .iter()
            .map(|a| {
                PrincipalPattern::parse(a).map_err(|e| ConfigError {
                    name: "JITVM_AUDITORS",
                    message: format!("{a:?}: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = get("JITVM_APPROVAL_TIMEOUT", "PT1H");
        let approval_timeout = timeout
            .parse::<jiff::SignedDuration>()
            .ok()
            .filter(|d| {
                *d >= jiff::SignedDuration::from_mins(5)
                    && *d <= jiff::SignedDuration::from_hours(24 * 7)
            })
            .ok_or_else(|| ConfigError {
                name: "JITVM_APPROVAL_TIMEOUT",
                message: format!(
                    "{timeout:?} is not a duration from 5 minutes to 7 days, such as PT1H or 90m"
                ),
            })?;
        let slack_signing_secret = secret_setting(
            &lookup,
            "JITVM_SLACK_SIGNING_SECRET",
            "JITVM_SLACK_SIGNING_SECRET_ARN",
        )?;
        let slack_workspaces = slack_workspaces(&list, slack_signing_secret.is_some())?;
        let trusted_session_roles = session_trust(&list, &admins, &auditors)?;
        let console = crate::console::ConsoleConfig::from_lookup(&lookup)?;
        let notify = crate::notify::NotifySettings::from_lookup(&lookup)?;
        Ok(Self {
            console,
            notify,
            slack_workspaces,
            trusted_session_roles,
            azure,
            auditors,
            approval_timeout,
            slack_signing_secret,
            policies_table: get("JITVM_POLICIES_TABLE", "jitvm-policies"),
            requests_table: get("JITVM_REQUESTS_TABLE", "jitvm-requests"),
            request_queue,
            request_queue_url: lookup("JITVM_REQUEST_QUEUE_URL").filter(|u| !u.trim().is_empty()),
            expiry_queue,
            expiry_queue_url: lookup("JITVM_EXPIRY_QUEUE_URL").filter(|u| !u.trim().is_empty()),
            admins,
            regions: list("JITVM_REGIONS"),
            max_groups_per_interface,
        })
    }
}

/// The roles whose session names count, checked against the admins and
/// auditors: an entry that can match nobody is a lock-out, refused now.
fn session_trust(
    list: &impl Fn(&str) -> Vec<String>,
    admins: &[PrincipalPattern],
    auditors: &[PrincipalPattern],
) -> Result<SessionTrust, ConfigError> {
    let trust =
        SessionTrust::parse(&list("JITVM_TRUSTED_SESSION_ROLES")).map_err(|e| ConfigError {
            name: "JITVM_TRUSTED_SESSION_ROLES",
            message: e.to_string(),
        })?;
    for (name, patterns) in [("JITVM_ADMINS", admins), ("JITVM_AUDITORS", auditors)] {
        if let Some(message) = patterns.iter().find_map(|p| trust.matches_nobody(p)) {
            return Err(ConfigError { name, message });
        }
    }
    Ok(trust)
}

/// The Slack workspaces allowed in, which must be named whenever the Slack
/// app is on: an app can be installed in any workspace, and an empty list
/// must never mean "all of them".
fn slack_workspaces(
    list: &impl Fn(&str) -> Vec<String>,
    slack_on: bool,
) -> Result<Vec<String>, ConfigError> {
    const NAME: &str = "JITVM_SLACK_WORKSPACES";
    let workspaces = list(NAME);
    if let Some(bad) = workspaces
        .iter()
        .find(|w| !is_slack_id(w) || !(w.starts_with('T') || w.starts_with('E')))
    {
        return Err(ConfigError {
            name: NAME,
            message: format!(
                "{bad:?} is not a Slack team id (T...) or Enterprise Grid id (E...); find them in Slack's workspace settings or in `/jit help`"
            ),
        });
    }
    if slack_on && workspaces.is_empty() {
        return Err(ConfigError {
            name: NAME,
            message: "required with the Slack signing secret: the comma-separated team ids (T...) or Enterprise Grid ids (E...) whose members may use the Slack app".into(),
        });
    }
    Ok(workspaces)
}

fn azure_config(
    lookup: &impl Fn(&str) -> Option<String>,
    get: &impl Fn(&str, &str) -> String,
    list: &impl Fn(&str) -> Vec<String>,
) -> Result<Option<AzureConfig>, ConfigError> {
    let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let Some(tenant_id) = set("JITVM_AZURE_TENANT_ID") else {
        return Ok(None);
    };
    let missing = |name: &'static str, message: &str| ConfigError {
        name,
        message: message.to_owned(),
    };
    let client_id = set("JITVM_AZURE_CLIENT_ID").ok_or_else(|| {
        missing(
            "JITVM_AZURE_CLIENT_ID",
            "required with JITVM_AZURE_TENANT_ID: the app registration's client id",
        )
    })?;
    let given: Vec<(&str, String)> = [
        "JITVM_AZURE_CLIENT_SECRET",
        "JITVM_AZURE_CLIENT_SECRET_ARN",
        "JITVM_AZURE_FEDERATED_TOKEN_FILE",
    ]
    .into_iter()
    .filter_map(|name| set(name).map(|v| (name, v)))
    .collect();
    let credential = match given.as_slice() {
        [("JITVM_AZURE_CLIENT_SECRET", secret)] => AzureCredential::Secret(secret.clone()),
        [("JITVM_AZURE_CLIENT_SECRET_ARN", arn)] => {
            let arn = arn.trim();
            if !arn.starts_with("arn:") || !arn.contains(":secretsmanager:") {
                return Err(missing(
                    "JITVM_AZURE_CLIENT_SECRET_ARN",
                    &format!("{arn:?} is not the ARN of a Secrets Manager secret"),
                ));
            }
            AzureCredential::SecretArn(arn.to_owned())
        }
        [(_, path)] => AzureCredential::AssertionFile(path.trim().into()),
        [] => {
            return Err(missing(
                "JITVM_AZURE_CLIENT_SECRET",
                "required with JITVM_AZURE_TENANT_ID (or JITVM_AZURE_CLIENT_SECRET_ARN, or JITVM_AZURE_FEDERATED_TOKEN_FILE for workload identity federation)",
            ));
        }
        _ => {
            return Err(missing(
                "JITVM_AZURE_CLIENT_SECRET",
                "give one of JITVM_AZURE_CLIENT_SECRET, JITVM_AZURE_CLIENT_SECRET_ARN and JITVM_AZURE_FEDERATED_TOKEN_FILE, not several",
            ));
        }
    };
    let url = |name: &'static str, default: &str| -> Result<String, ConfigError> {
        let value = get(name, default).trim_end_matches('/').to_owned();
        // Exactly 127.0.0.1 with a port: `http://127.0.0.1:1@other.host`
        // would send the secret elsewhere in plain text.
        let loopback = value.strip_prefix("http://127.0.0.1:").is_some_and(|rest| {
            let port = rest.split('/').next().unwrap_or("");
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        });
        if value.starts_with("https://") || loopback {
            Ok(value)
        } else {
            Err(missing(
                name,
                &format!(
                    "{value:?} must be an https:// URL (or http://127.0.0.1 for the ARM fake)"
                ),
            ))
        }
    };
    let band = |name: &'static str, default: &str| {
        PriorityBand::parse(&get(name, default)).map_err(|message| ConfigError { name, message })
    };
    let allow_priorities = band("JITVM_AZURE_ALLOW_PRIORITIES", "100-199")?;
    let deny_priorities = band("JITVM_AZURE_DENY_PRIORITIES", "200-299")?;
    if allow_priorities.last >= deny_priorities.first {
        return Err(missing(
            "JITVM_AZURE_ALLOW_PRIORITIES",
            &format!(
                "the allow band {allow_priorities} must come before the deny band {deny_priorities} (lower numbers), or grants would never beat the Deny rules"
            ),
        ));
    }
    let subscriptions = list("JITVM_AZURE_SUBSCRIPTIONS");
    if let Some(bad) = subscriptions.iter().find(|s| {
        let lens: Vec<usize> = s.split('-').map(str::len).collect();
        lens != [8, 4, 4, 4, 12] || !s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
    }) {
        return Err(missing(
            "JITVM_AZURE_SUBSCRIPTIONS",
            &format!("{bad:?} is not a subscription id (a GUID)"),
        ));
    }
    Ok(Some(AzureConfig {
        tenant_id: tenant_id.trim().to_owned(),
        client_id: client_id.trim().to_owned(),
        credential,
        authority_url: url(
            "JITVM_AZURE_AUTHORITY_URL",
            "https://login.microsoftonline.com",
        )?,
        arm_url: url("JITVM_AZURE_ARM_URL", "https://management.azure.com")?,
        scope: get("JITVM_AZURE_SCOPE", "https://management.azure.com/.default"),
        subscriptions: subscriptions
            .into_iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        allow_priorities,
        deny_priorities,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = from(&[]).unwrap();
        assert_eq!(s.policies_table, "jitvm-policies");
        assert_eq!(s.requests_table, "jitvm-requests");
        assert_eq!(s.request_queue, "jitvm-requests.fifo");
        assert!(s.admins.is_empty() && s.regions.is_empty());
        assert_eq!(s.max_groups_per_interface, 5);
        assert_eq!(s.azure, None);
    }

    #[test]
    fn azure() {
        let tenant = ("JITVM_AZURE_TENANT_ID", "t1");
        let client = ("JITVM_AZURE_CLIENT_ID", "c1");
        let secret = ("JITVM_AZURE_CLIENT_SECRET", "s3cret");
        let a = from(&[tenant, client, secret]).unwrap().azure.unwrap();
        assert_eq!(a.credential, AzureCredential::Secret("s3cret".into()));
        assert!(
            !format!("{a:?}").contains("s3cret"),
            "secrets stay out of logs"
        );
        assert_eq!(a.arm_url, "https://management.azure.com");
        assert_eq!(a.authority_url, "https://login.microsoftonline.com");
        assert_eq!(
            a.allow_priorities,
            PriorityBand {
                first: 100,
                last: 199
            }
        );
        assert_eq!(
            a.deny_priorities,
            PriorityBand {
                first: 200,
                last: 299
            }
        );

        let fed = from(&[
            tenant,
            client,
            ("JITVM_AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ])
        .unwrap()
        .azure
        .unwrap();
        assert_eq!(
            fed.credential,
            AzureCredential::AssertionFile("/var/run/token".into())
        );
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:jitvm-azure-AbCdEf";
        let stored = from(&[tenant, client, ("JITVM_AZURE_CLIENT_SECRET_ARN", arn)])
            .unwrap()
            .azure
            .unwrap();
        assert_eq!(stored.credential, AzureCredential::SecretArn(arn.into()));

        let fake = from(&[
            tenant,
            client,
            secret,
            ("JITVM_AZURE_ARM_URL", "http://127.0.0.1:8081/"),
            (
                "JITVM_AZURE_SUBSCRIPTIONS",
                "00000000-0000-0000-0000-0000000000A1",
            ),
            ("JITVM_AZURE_ALLOW_PRIORITIES", "1000-1099"),
            ("JITVM_AZURE_DENY_PRIORITIES", "1100-1109"),
        ])
        .unwrap()
        .azure
        .unwrap();
        assert_eq!(fake.arm_url, "http://127.0.0.1:8081");
        assert_eq!(
            fake.subscriptions,
            vec!["00000000-0000-0000-0000-0000000000a1"]
        );
        assert!(fake.deny_priorities.contains(1105));

        let err = |pairs: &[(&str, &str)]| from(pairs).unwrap_err().name;
        assert_eq!(err(&[tenant]), "JITVM_AZURE_CLIENT_ID");
        assert_eq!(err(&[tenant, client]), "JITVM_AZURE_CLIENT_SECRET");
        assert_eq!(
            err(&[
                tenant,
                client,
                secret,
                ("JITVM_AZURE_FEDERATED_TOKEN_FILE", "/t")
            ]),
            "JITVM_AZURE_CLIENT_SECRET"
        );
        assert_eq!(
            err(&[
                tenant,
                client,
                ("JITVM_AZURE_CLIENT_SECRET_ARN", "my-secret")
            ]),
            "JITVM_AZURE_CLIENT_SECRET_ARN"
        );
        assert_eq!(
            err(&[
                tenant,
                client,
                secret,
                ("JITVM_AZURE_ARM_URL", "http://example.com")
            ]),
            "JITVM_AZURE_ARM_URL"
        );
        for sneaky in [
            "http://127.0.0.1:1@evil.example",
            "http://127.0.0.1.evil.example:80",
            "http://127.0.0.1",
        ] {
            assert_eq!(
                err(&[
                    tenant,
                    client,
                    secret,
                    ("JITVM_AZURE_AUTHORITY_URL", sneaky)
                ]),
                "JITVM_AZURE_AUTHORITY_URL",
                "{sneaky}"
            );
        }
        assert_eq!(
            err(&[
                tenant,
                client,
                secret,
                ("JITVM_AZURE_DENY_PRIORITIES", "150-160")
            ]),
            "JITVM_AZURE_ALLOW_PRIORITIES"
        );
        assert_eq!(
            err(&[
                tenant,
                client,
                secret,
                ("JITVM_AZURE_ALLOW_PRIORITIES", "50-60")
            ]),
            "JITVM_AZURE_ALLOW_PRIORITIES"
        );
        assert_eq!(
            err(&[
                tenant,
                client,
                secret,
                ("JITVM_AZURE_SUBSCRIPTIONS", "prod")
            ]),
            "JITVM_AZURE_SUBSCRIPTIONS"
        );
    }

    #[test]
    fn approvals_audit_and_slack() {
        let s = from(&[]).unwrap();
        assert_eq!(s.approval_timeout, jiff::SignedDuration::from_hours(1));
        assert!(s.auditors.is_empty() && s.slack_signing_secret.is_none());
        let s = from(&[
            (
                "JITVM_AUDITORS",
                "local:auditor, arn:aws:iam::1:role/Audit/*",
            ),
            ("JITVM_APPROVAL_TIMEOUT", "90m"),
            ("JITVM_SLACK_SIGNING_SECRET", " s3cret "),
            ("JITVM_SLACK_WORKSPACES", "T0001, E0002"),
        ])
        .unwrap();
        assert_eq!(s.slack_workspaces, vec!["T0001", "E0002"]);
        assert_eq!(s.auditors.len(), 2);
        assert_eq!(s.approval_timeout, jiff::SignedDuration::from_mins(90));
        assert_eq!(s.slack_signing_secret, Some(Secret::Value("s3cret".into())));
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "secrets stay out of logs"
        );
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:slack-AbCdEf";
        let s = from(&[
            ("JITVM_SLACK_SIGNING_SECRET_ARN", arn),
            ("JITVM_SLACK_WORKSPACES", "T0001"),
        ])
        .unwrap();
        assert_eq!(s.slack_signing_secret, Some(Secret::Arn(arn.into())));
        for (name, value) in [
            ("JITVM_APPROVAL_TIMEOUT", "PT1M"),
            ("JITVM_APPROVAL_TIMEOUT", "P30D"),
            ("JITVM_APPROVAL_TIMEOUT", "soon"),
            ("JITVM_SLACK_SIGNING_SECRET_ARN", "slack-secret"),
            ("JITVM_AUDITORS", "local:a*b"),
        ] {
            let e = from(&[(name, value)])
                .err()
                .unwrap_or_else(|| panic!("{name}={value} must be refused"));
            assert_eq!(e.name, name, "{value}: {e}");
        }
        let both = from(&[
            ("JITVM_SLACK_WORKSPACES", "T0001"),
            ("JITVM_SLACK_SIGNING_SECRET", "x"),
            ("JITVM_SLACK_SIGNING_SECRET_ARN", arn),
        ]);
        assert!(both.is_err());
    }

    #[test]
    fn slack_needs_its_workspaces_named() {
        for secret in [
            ("JITVM_SLACK_SIGNING_SECRET", "s3cret"),
            (
                "JITVM_SLACK_SIGNING_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:slack-AbCdEf",
            ),
        ] {
            let e = from(&[secret]).unwrap_err();
            assert_eq!(e.name, "JITVM_SLACK_WORKSPACES", "{e}");
            assert!(e.to_string().contains("required"), "{e}");
        }
        for bad in ["*", "U0001", "t0001", "T0001/U1", "C0001"] {
            let e = from(&[
                ("JITVM_SLACK_SIGNING_SECRET", "s3cret"),
                ("JITVM_SLACK_WORKSPACES", bad),
            ])
            .unwrap_err();
            assert_eq!(e.name, "JITVM_SLACK_WORKSPACES", "{bad}: {e}");
        }
    }

    #[test]
    fn admins_that_name_a_session_anyone_could_take_are_refused() {
        let carol = "arn:aws:sts::123456789012:assumed-role/Admin/carol";
        for name in ["JITVM_ADMINS", "JITVM_AUDITORS"] {
            let e = from(&[(name, carol)]).unwrap_err();
            assert_eq!(e.name, name);
            assert!(e.message.contains("assumed-role/Admin/*"), "{e}");
            let prefix = "arn:aws:sts::123456789012:assumed-role/Admin/car*";
            assert_eq!(from(&[(name, prefix)]).unwrap_err().name, name);
            let federated = "arn:aws:sts::123456789012:federated-user/carol";
            assert!(
                from(&[(name, federated)])
                    .unwrap_err()
                    .message
                    .contains("federated-user/*")
            );
            assert!(from(&[(name, carol), ("JITVM_TRUSTED_SESSION_ROLES", "Admin")]).is_ok());
            assert!(from(&[(name, "arn:aws:sts::123456789012:assumed-role/Admin/*")]).is_ok());
        }
    }

    #[test]
    fn trusted_session_roles() {
        let s = from(&[("JITVM_TRUSTED_SESSION_ROLES", "AWSReservedSSO_*, Okta-Ops")]).unwrap();
        assert!(
            s.trusted_session_roles
                .trusts("AWSReservedSSO_Admin_0123abcd")
        );
        assert!(s.trusted_session_roles.trusts("Okta-Ops"));
        assert!(!s.trusted_session_roles.trusts("Okta-Ops2"));
        assert!(!from(&[]).unwrap().trusted_session_roles.trusts("Admin"));
        for bad in ["role/Admin", "Ad*min", "a b", "*"] {
            let e = from(&[("JITVM_TRUSTED_SESSION_ROLES", bad)]).unwrap_err();
            assert_eq!(e.name, "JITVM_TRUSTED_SESSION_ROLES", "{bad}: {e}");
        }
    }

    #[test]
    fn lists_and_refusals() {
        let s = from(&[
            ("JITVM_ADMINS", "local:alice, arn:aws:iam::1:role/Admin/*"),
            ("JITVM_REGIONS", "us-east-1,eu-west-1"),
        ])
        .unwrap();
        assert_eq!(s.admins.len(), 2);
        assert_eq!(s.regions, vec!["us-east-1", "eu-west-1"]);
        assert_eq!(
            from(&[("JITVM_REQUEST_QUEUE", "plain")]).unwrap_err().name,
            "JITVM_REQUEST_QUEUE"
        );
        assert_eq!(
            from(&[("JITVM_ADMINS", "a b")]).unwrap_err().name,
            "JITVM_ADMINS"
        );
        assert_eq!(
            from(&[("JITVM_MAX_GROUPS_PER_INTERFACE", "99")])
                .unwrap_err()
                .name,
            "JITVM_MAX_GROUPS_PER_INTERFACE"
        );
    }
}

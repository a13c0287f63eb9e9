//! Configuration from the environment, read once at start-up (a function
//! fails fast there, never mid-request). The Lambda functions and the local
//! host read the same variable names.

use crate::domain::PrincipalPattern;

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
    /// `JITVM_ADMINS`: comma-separated principals (or patterns) who may
    /// write policies.
    pub admins: Vec<PrincipalPattern>,
    /// `JITVM_REGIONS`: comma-separated regions whose instances are listed
    /// and swept; default the SDK's region.
    pub regions: Vec<String>,
    /// `JITVM_MAX_GROUPS_PER_INTERFACE`, default 5 (the EC2 quota).
    pub max_groups_per_interface: usize,
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
        Ok(Self {
            policies_table: get("JITVM_POLICIES_TABLE", "jitvm-policies"),
            requests_table: get("JITVM_REQUESTS_TABLE", "jitvm-requests"),
            request_queue,
            request_queue_url: lookup("JITVM_REQUEST_QUEUE_URL").filter(|u| !u.trim().is_empty()),
            admins,
            regions: list("JITVM_REGIONS"),
            max_groups_per_interface,
        })
    }
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

//! Capabilities the handlers need from the outside world, one narrow trait
//! each, so a handler asks for exactly what it uses (and its IAM role grants
//! exactly that). Adapters in [`crate::aws`] implement them against AWS;
//! the same traits are implemented for Azure's NSGs.

use std::fmt;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::rule::{DecodeError, RuleMeta};
use crate::domain::{
    Cloud, Grant, Justification, Policy, Port, Principal, RequestId, RequestRecord, VmId,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong outside the domain, sorted by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The thing asked for does not exist (a VM, a request, a policy).
    #[error("{0}")]
    NotFound(String),
    /// A conditional write lost a race, or a version did not match.
    #[error("{0}")]
    Conflict(String),
    /// The cloud refused, and will refuse again: retrying is pointless.
    /// `code` is the provider's error code, when it gave one.
    #[error("{message}")]
    Permanent { code: String, message: String },
    /// A failure that may pass: throttling, a timeout, a 5xx.
    #[error("{message}")]
    Transient {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl AdapterError {
    pub fn transient(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        AdapterError::Transient {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        AdapterError::Permanent {
            code: code.into(),
            message: message.into(),
        }
    }

    /// What `happened` (such as "the cloud did not answer") within `limit`:
    /// a failure that may pass.
    pub fn timed_out(happened: impl fmt::Display, limit: std::time::Duration) -> Self {
        AdapterError::Transient {
            message: format!("{happened} within {} s", limit.as_secs_f64()),
            source: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, AdapterError::Transient { .. })
    }
}

/// Whether jitvm can protect a VM, and what a person needs to see about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmFacts {
    pub id: VmId,
    /// The VM's own name (the `Name` tag on EC2), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `None` when supported; otherwise why not, in words a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// A standing rule (not jitvm's) that already lets traffic reach a
/// protected port. With `closeStandingAccess` it is revoked (`closed`) and
/// kept, in `spec`, in the adapter's own terms, to be restored when JIT is
/// disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    pub port: Port,
    /// The security group id or NSG id holding the rule.
    pub firewall: String,
    /// The rule's id (AWS) or name (Azure).
    pub rule: String,
    pub protocol: String,
    /// Where the rule admits traffic from: a CIDR, a group, a prefix list.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub closed: bool,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub spec: serde_json::Value,
}

/// What enabling JIT on a VM did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enablement {
    /// The firewall grants are written to (the dedicated security group id,
    /// or the NSG id).
    pub firewall: String,
    pub exposures: Vec<Exposure>,
}

/// Where one firewall rule is, in provider terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleKey {
    /// The cloud whose adapter removes it.
    pub cloud: Cloud,
    /// AWS region or Azure subscription.
    pub scope: String,
    /// Security group id, or NSG id.
    pub firewall: String,
    /// Security group rule id, or security rule name.
    pub rule: String,
}

impl fmt::Display for RuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.scope, self.firewall, self.rule)
    }
}

/// One part of a deployment the sweep lists and cleans on its own, with its
/// own deadline: an AWS region or an Azure subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub cloud: Cloud,
    /// The region or the subscription id.
    pub name: String,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cloud = match self.cloud {
            Cloud::Aws => "aws",
            Cloud::Azure => "azure",
        };
        write!(f, "{cloud}:{}", self.name)
    }
}

/// One rule found on a jitvm-managed firewall, with what it says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRule {
    pub key: RuleKey,
    /// The VM the firewall protects, when known.
    pub vm: Option<VmId>,
    pub port: Option<Port>,
    pub source: String,
    pub decoded: Result<RuleMeta, DecodeError>,
}

/// A jitvm firewall taken off a network interface that is not its VM's:
/// what [`Firewall::keep_exclusive`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// The network interface it was on.
    pub interface: String,
    /// The instance that interface is attached to; `None` when unattached.
    pub instance: Option<String>,
    /// The security group id.
    pub firewall: String,
    /// The VM the firewall belongs to.
    pub vm: VmId,
}

/// What opening a grant did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub rules: Vec<RuleKey>,
    /// True when the rules were already there (a redelivered message).
    pub already_open: bool,
}

/// Removes every rule of request `id` on `vm`, or only those on `ports`
/// when given; returns how many were removed.
pub async fn close_request_rules(
    firewall: &dyn Firewall,
    vm: &VmId,
    id: &RequestId,
    ports: Option<&[Port]>,
) -> Result<usize, AdapterError> {
    let keys: Vec<RuleKey> = firewall
        .rules_of(vm)
        .await?
        .into_iter()
        .filter(|r| r.decoded.as_ref().is_ok_and(|m| &m.request_id == id))
        .filter(|r| ports.is_none_or(|ports| r.port.is_none_or(|p| ports.contains(&p))))
        .map(|r| r.key)
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    firewall.revoke(&keys).await
}

/// The firewall of one or more clouds.
#[async_trait]
pub trait Firewall: Send + Sync {
    /// Looks a VM up. `NotFound` when it does not exist.
    async fn inspect(&self, vm: &VmId) -> Result<VmFacts, AdapterError>;

    /// Every VM this deployment can see, with whether it is supported.
    async fn list_vms(&self) -> Result<Vec<VmFacts>, AdapterError>;

    /// Prepares a VM for JIT (idempotent): the dedicated group or the deny
    /// rules, and the exposures of standing rules. With
    /// `policy.close_standing_access()`, standing rules are revoked;
    /// `already_closed` are those a previous enablement closed, carried over.
    async fn enable(
        &self,
        policy: &Policy,
        already_closed: &[Exposure],
    ) -> Result<Enablement, AdapterError>;

    /// Undoes [`Firewall::enable`]: closes every grant (returned, so their
    /// records can be updated), removes what enabling added, and restores
    /// the `closed` standing rules.
    async fn disable(&self, vm: &VmId, closed: &[Exposure])
    -> Result<Vec<FoundRule>, AdapterError>;

    /// Re-creates standing rules that enabling closed (`closed` exposures):
    /// used when the policy that keeps them could not be stored, so they are
    /// never lost. Rules already there are not an error.
    async fn restore_standing(&self, vm: &VmId, closed: &[Exposure]) -> Result<(), AdapterError>;

    /// Opens the rules of one grant. Idempotent: if they are already there
    /// for this request, succeeds with `already_open`.
    async fn open(
        &self,
        grant: &Grant,
        justification: Option<&Justification>,
    ) -> Result<Opened, AdapterError>;

    /// The parts of the deployment the sweep covers, each listed and
    /// cleaned on its own.
    fn scopes(&self) -> Vec<Scope>;

    /// The scope whose sweep covers `vm`'s rules; `None` when no sweep
    /// does (a region or cloud this deployment does not manage).
    fn scope_of(&self, vm: &VmId) -> Option<Scope>;

    /// Every rule on the jitvm-managed firewalls of one scope.
    async fn rules_in(&self, scope: &Scope) -> Result<Vec<FoundRule>, AdapterError>;

    /// Every rule on every jitvm-managed firewall, the scopes read at
    /// once. Fails only if every scope failed.
    async fn rules(&self) -> Result<Vec<FoundRule>, AdapterError> {
        let scopes = self.scopes();
        let listed =
            futures_util::future::join_all(scopes.iter().map(|scope| self.rules_in(scope))).await;
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for (scope, result) in scopes.iter().zip(listed) {
            match result {
                Ok(rules) => found.extend(rules),
                Err(e) => {
                    tracing::error!(scope = %scope, error = %e, "cannot list the rules of this scope");
                    failures.push(e);
                }
            }
        }
        if !failures.is_empty() && failures.len() == scopes.len() {
            return Err(failures.remove(0));
        }
        Ok(found)
    }

    /// The rules still at `keys`, read now; those gone are left out. An
    /// expiry timer reads its rules here, so it judges them by what they
    /// say of themselves today.
    async fn rules_at(&self, keys: &[RuleKey]) -> Result<Vec<FoundRule>, AdapterError>;

    /// The grant rules of one VM (an early revoke looks its request up here).
    async fn rules_of(&self, vm: &VmId) -> Result<Vec<FoundRule>, AdapterError>;

    /// Removes rules, batched per firewall. Rules already gone are not an
    /// error. Returns how many were removed.
    async fn revoke(&self, rules: &[RuleKey]) -> Result<usize, AdapterError>;

    /// Takes every jitvm firewall of `scope` off the interfaces that are
    /// not its VM's (a copied launch template carries it along), so that a
    /// grant opens exactly one VM; returns what it removed. The default
    /// does nothing: for a cloud whose firewall rules name their VM (Azure),
    /// there is nothing to carry.
    async fn keep_exclusive(&self, scope: &Scope) -> Result<Vec<Detached>, AdapterError> {
        let _ = scope;
        Ok(Vec::new())
    }
}

/// A stored policy and what enabling it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntry {
    pub policy: Policy,
    pub enablement: Enablement,
    pub updated_at: Timestamp,
    pub updated_by: Principal,
}

#[async_trait]
pub trait PolicyStore: Send + Sync {
    async fn get_policy(&self, vm: &VmId) -> Result<Option<PolicyEntry>, AdapterError>;

    /// Writes `entry` if the stored version is `expected` (`None`: no policy
    /// stored yet). Returns the new version; `Conflict` when another write
    /// came first.
    async fn put_policy(
        &self,
        entry: &PolicyEntry,
        expected: Option<u64>,
    ) -> Result<u64, AdapterError>;

    /// Deletes the policy if its stored version is `expected`.
    async fn delete_policy(&self, vm: &VmId, expected: u64) -> Result<(), AdapterError>;

    async fn list_policies(&self) -> Result<Vec<PolicyEntry>, AdapterError>;
}

/// A record with the revision its conditional update must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revised<T> {
    pub value: T,
    pub revision: u64,
}

#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Stores a new record (revision 1); `Conflict` if the id exists.
    async fn create_request(&self, record: &RequestRecord) -> Result<(), AdapterError>;

    async fn get_request(
        &self,
        id: &RequestId,
    ) -> Result<Option<Revised<RequestRecord>>, AdapterError>;

    /// Replaces a record if its revision is still `expected`; returns the
    /// new revision, or `Conflict`.
    async fn update_request(
        &self,
        record: &RequestRecord,
        expected: u64,
    ) -> Result<u64, AdapterError>;

    /// A VM's requests, newest first, started at or after `since`: the
    /// first page of [`RequestStore::query_requests`] for the VM.
    async fn requests_for_vm(
        &self,
        vm: &VmId,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, AdapterError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = RequestQuery {
            vm: Some(vm.clone()),
            requestor: None,
            since,
            until: None,
            after: None,
            limit,
        };
        Ok(self.query_requests(&query).await?.records)
    }

    /// One page of the records `query` selects, newest first (by
    /// `startTimeUtc`, then id). `next` is set when more may follow; pass it
    /// back as `query.after` for the next page.
    async fn query_requests(&self, query: &RequestQuery) -> Result<RequestPage, AdapterError>;

    /// Requests still `PendingApproval` that started before `started_before`,
    /// oldest first, at most `limit`: the sweep denies those that waited too
    /// long for an approver.
    async fn pending_requests(
        &self,
        started_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, AdapterError>;
}

/// Which request records to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestQuery {
    /// Only this VM's requests.
    pub vm: Option<VmId>,
    /// Only this requestor's requests.
    pub requestor: Option<Principal>,
    /// Started at or after this time. Required when neither `vm` nor
    /// `requestor` is given (the listing then walks day by day).
    pub since: Option<Timestamp>,
    /// Started strictly before this time.
    pub until: Option<Timestamp>,
    /// Continue after this position (the `next` of the previous page).
    pub after: Option<PageCursor>,
    /// At most this many records (1 or more).
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPage {
    pub records: Vec<RequestRecord>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<PageCursor>,
}

/// A position in a listing: the sort key of the last record returned,
/// `<startTimeUtc with nanoseconds>#<request id>`. Callers treat it as
/// opaque text (`nextToken`); [`PageCursor::parse`] refuses anything that
/// is not such a key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageCursor(String);

impl PageCursor {
    /// The cursor just after `record`.
    pub fn after(record: &RequestRecord) -> Self {
        Self(format!(
            "{}#{}",
            sort_time(record.start_time_utc()),
            record.id()
        ))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a nextToken this API gave out");
        let (time, id) = text.split_once('#').ok_or_else(bad)?;
        let t: Timestamp = time.parse().map_err(|_| bad())?;
        RequestId::parse(id).map_err(|_| bad())?;
        if sort_time(t) != time {
            return Err(bad());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A time as text whose order is the time's order: RFC 3339 in UTC with
/// nanoseconds always written. Request listings sort on it.
pub fn sort_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%NZ").to_string()
}

/// Where each grant's timer waits (see [`crate::expiry`]).
#[async_trait]
pub trait ExpiryTimers: Send + Sync {
    /// Sets `timer` to come back after `delay` (at most
    /// [`crate::expiry::MAX_HOP`]; longer is cut to that).
    async fn arm(
        &self,
        timer: &crate::expiry::Timer,
        delay: std::time::Duration,
    ) -> Result<(), AdapterError>;
}

/// Where every audit event goes for other systems (an EventBridge bus).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Puts `events` on the bus; an error when any of them did not get
    /// there (the caller tries them all again; each carries an id).
    async fn publish(&self, events: &[crate::notify::AuditEvent]) -> Result<(), AdapterError>;
}

/// The channels notices are posted to (Slack, Teams), behind one call.
#[async_trait]
pub trait NoticeChannels: Send + Sync {
    /// Whether Slack is configured (a bot token), so Slack targets exist.
    fn slack_on(&self) -> bool;
    /// Posts `notice` to `target`.
    async fn send(
        &self,
        target: &crate::notify::Target,
        notice: &crate::notify::Notice,
    ) -> Result<(), crate::notify::DeliveryError>;
}

/// The notify queue: deliveries to try again, reminders (see
/// [`crate::notify::Job`]).
#[async_trait]
pub trait NotifyJobs: Send + Sync {
    /// Puts `job` on the queue to come back after `delay` (at most
    /// [`crate::expiry::MAX_HOP`]; longer is cut to that).
    async fn put(
        &self,
        job: &crate::notify::Job,
        delay: std::time::Duration,
    ) -> Result<(), AdapterError>;
}

#[async_trait]
pub trait RequestQueue: Send + Sync {
    /// Puts a request on the FIFO queue: group = VM, deduplication = id.
    async fn enqueue(&self, message: &crate::domain::RequestMessage) -> Result<(), AdapterError>;
}

//! EC2 security groups as the [`Firewall`].
//!
//! # Design
//!
//! Enabling JIT on an instance gives it a security group of its own,
//! `jitvm-<instance-id>`, tagged `jitvm:managed=true` and `jitvm:vm=<arn>`,
//! attached to the instance's primary network interface beside the groups it
//! already has. Grants are ingress rules on that group and nowhere else.
//! Security groups are often shared by many instances (a "web" or "bastion"
//! group), so a rule added to one of those would open every instance that
//! carries it; a group dedicated to one instance makes a grant open exactly
//! the VM that was asked for.
//!
//! That holds only while no other interface carries the group, and a launch
//! template or "launch more like this" copies an instance's groups to the
//! next one. So exclusivity is kept by the sweep
//! ([`Firewall::keep_exclusive`], every minute, in each swept region): each
//! jitvm group is taken off every interface that is not attached to its
//! own instance (unattached ones included), with an audit event each. A
//! rule is also refused while the group is shared, so the gap until the
//! next sweep opens nothing new.
//!
//! Taking a group off an interface never widens it. An interface needs at
//! least one group, and the VPC's `default` group would admit all traffic
//! from its other members; so an interface that would be left with none
//! gets instead the VPC's placeholder group, `jitvm-empty-<vpc-id>`, made
//! on first need with no inbound rule and its default outbound rule
//! revoked: it allows nothing either way. It is tagged
//! `jitvm:placeholder=true`, not `jitvm:managed`: it belongs to no VM,
//! holds no grant, and the sweep does not list it. Disabling JIT takes the
//! group off its interfaces the same way.
//!
//! Each grant is written in one `AuthorizeSecurityGroupIngress` call: one
//! permission per concrete protocol (`*` becomes TCP and UDP, because "all
//! protocols" in AWS would also mean all ports), one range per CIDR (`*`
//! becomes `0.0.0.0/0` and `::/0`), tagged `jitvm:request`, `jitvm:expires`
//! and `jitvm:requester` in the same call. The tags carry the end time, so
//! the expiry sweep ([`Firewall::rules`]) works from EC2's state alone, even
//! if a database write or a message was lost; the description is for people.
//!
//! Standing rules in the instance's other groups that already let traffic
//! reach a protected port are reported as [`Exposure`]s. With
//! `closeStandingAccess` they are revoked, and their full definition is kept
//! in the exposure's `spec` so that [`Firewall::disable`] can restore them.
//!
//! An interface that already carries the maximum number of security groups
//! (5 by default) cannot take the dedicated group: such a VM is reported as
//! unsupported, with what to do about it.
//!
//! Every operation is idempotent: a redelivered message or a retried call
//! never makes a second group or a second rule. Every change of state is
//! logged as an `audit` event.
//!
//! Two behaviours of moto (the local stand-in for EC2) are handled as well
//! as AWS's: an instance's `SecurityGroups` in `DescribeInstances` do not
//! follow `ModifyNetworkInterfaceAttribute` (so interface groups are always
//! read with `DescribeNetworkInterfaces`), and the
//! `AuthorizeSecurityGroupIngress` response lists only the rules of its last
//! permission (so rule ids missing from it are looked up by their tags).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::Region;
use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::operation::authorize_security_group_ingress::AuthorizeSecurityGroupIngressError;
use aws_sdk_ec2::types::{
    Filter, Instance, InstanceStateName, IpPermission, IpRange, Ipv6Range, NetworkInterface,
    PrefixListId, ResourceType, SecurityGroup, SecurityGroupRule, Tag, TagSpecification,
    UserIdGroupPair,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{CallCounter, error_code, sdk_error};
use crate::domain::rule::{self, TAG_MANAGED, TAG_REQUEST, TAG_VM};
use crate::domain::{AwsInstance, Cloud, Grant, Justification, Policy, Port, Protocol, VmId};
use crate::ports::{
    AdapterError, Detached, Enablement, Exposure, Firewall, FoundRule, Opened, RuleKey, Scope,
    VmFacts,
};

/// AWS's default quota of security groups per network interface.
pub const DEFAULT_MAX_GROUPS_PER_INTERFACE: usize = 5;

/// Filter values per `Describe*` call (AWS accepts up to 200).
const FILTER_CHUNK: usize = 200;

/// Codes EC2 gives for a security group rule that is not there.
const RULE_NOT_FOUND: &[&str] = &[
    "InvalidPermission.NotFound",
    "InvalidSecurityGroupRuleId.NotFound",
];
const GROUP_NOT_FOUND: &str = "InvalidGroup.NotFound";
const DUPLICATE_GROUP: &str = "InvalidGroup.Duplicate";
const DUPLICATE_RULE: &str = "InvalidPermission.Duplicate";
const RULE_LIMIT: &str = "RulesPerSecurityGroupLimitExceeded";

/// The tag (value `true`) of the placeholder group jitvm puts on an
/// interface it would otherwise leave with no group. Not
/// `jitvm:managed`: the placeholder belongs to no VM and holds no grant.
pub const TAG_PLACEHOLDER: &str = "jitvm:placeholder";

/// The name of the placeholder group of `vpc_id`.
pub fn placeholder_name(vpc_id: &str) -> String {
    format!("jitvm-empty-{vpc_id}")
}

/// How the adapter is set up.
#[derive(Debug, Clone)]
pub struct Ec2Settings {
    /// Regions [`Firewall::list_vms`] and [`Firewall::rules`] look at. Empty:
    /// the region of the SDK config. A VM in another region is still served
    /// (its client is made when first needed).
    pub regions: Vec<String>,
    /// The "Security groups per network interface" quota of the account.
    pub max_groups_per_interface: usize,
    /// Counts API calls, when set (benchmarks).
    pub counter: Option<CallCounter>,
}

impl Default for Ec2Settings {
    fn default() -> Self {
        Self {
            regions: Vec::new(),
            max_groups_per_interface: DEFAULT_MAX_GROUPS_PER_INTERFACE,
            counter: None,
        }
    }
}

impl Ec2Settings {
    /// Default settings covering `regions`.
    pub fn for_regions<I, S>(regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            regions: regions.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// The firewall of EC2 instances: one dedicated security group per instance.
pub struct Ec2Firewall {
    config: SdkConfig,
    regions: Vec<String>,
    max_groups: usize,
    counter: Option<CallCounter>,
    clients: Mutex<HashMap<String, Client>>,
}

impl std::fmt::Debug for Ec2Firewall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Firewall")
            .field("regions", &self.regions)
            .field("max_groups", &self.max_groups)
            .finish_non_exhaustive()
    }
}

impl Ec2Firewall {
    pub fn new(config: &SdkConfig, settings: Ec2Settings) -> Self {
        let mut regions = settings.regions;
        if regions.is_empty() {
            match config.region() {
                Some(r) => regions.push(r.as_ref().to_owned()),
                None => tracing::warn!(
                    "no EC2 region configured and none in the SDK config: listing covers no region"
                ),
            }
        }
        let mut seen = std::collections::HashSet::new();
        regions.retain(|r| seen.insert(r.clone()));
        let firewall = Self {
            config: config.clone(),
            regions,
            max_groups: settings.max_groups_per_interface.max(1),
            counter: settings.counter,
            clients: Mutex::new(HashMap::new()),
        };
        for region in &firewall.regions {
            firewall.client(region);
        }
        firewall
    }

    /// The regions listed by [`Firewall::list_vms`] and [`Firewall::rules`].
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// Why `inst` cannot be protected by this deployment's sweep, if it
    /// cannot: grants are only opened where the sweep will close them.
    fn uncovered(&self, inst: &AwsInstance) -> Option<String> {
        (!self.regions.iter().any(|r| r == inst.region())).then(|| {
            format!(
                "its region {} is not swept by this deployment (JITVM_REGIONS is {}); add it so that grants there expire",
                inst.region(),
                if self.regions.is_empty() { "empty".to_owned() } else { self.regions.join(",") }
            )
        })
    }

    /// Every rule on the jitvm groups of one region.
    async fn region_rules(&self, region: &str) -> Result<Vec<FoundRule>, AdapterError> {
        let client = self.client(region);
        let groups = managed_groups(&client, region).await?;
        self.found_rules(&client, region, &groups).await
    }

    /// Takes each jitvm group of `region` off every interface that is not
    /// its instance's (see [`Firewall::keep_exclusive`]). One interface
    /// failing does not stop the others; the call fails only if every
    /// interface it tried failed (the next sweep finds them again).
    async fn region_exclusive(&self, region: &str) -> Result<Vec<Detached>, AdapterError> {
        let client = self.client(region);
        let mut owners: HashMap<String, AwsInstance> = HashMap::new();
        for (group, vm) in managed_groups(&client, region).await? {
            match vm {
                Some(VmId::Aws(inst)) => {
                    owners.insert(group, inst);
                }
                // Without its VM, there is no telling which interface is
                // the right one: the group is left where it is.
                _ => {
                    tracing::warn!(region, group = %group, "jitvm security group without a readable {TAG_VM} tag: cannot tell which instance it belongs to; left where it is");
                }
            }
        }
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = owners.keys().cloned().collect();
        let enis = describe_interfaces(&client, "group-id", &ids)
            .await
            .map_err(|e| {
                sdk_error(
                    &format!("listing the interfaces of jitvm groups in {region}"),
                    e,
                )
            })?;
        let mut seen = BTreeSet::new();
        let mut detached = Vec::new();
        let mut failures = Vec::new();
        for eni in &enis {
            let Some(eni_id) = eni.network_interface_id() else {
                continue;
            };
            // Chunks of the filter can list an interface twice.
            if !seen.insert(eni_id) {
                continue;
            }
            let instance = eni.attachment().and_then(|a| a.instance_id());
            let strays: Vec<(&str, &AwsInstance)> = eni
                .groups()
                .iter()
                .filter_map(|g| g.group_id())
                .filter_map(|g| owners.get_key_value(g))
                .filter(|(_, owner)| Some(owner.instance_id()) != instance)
                .map(|(g, owner)| (g.as_str(), owner))
                .collect();
            if strays.is_empty() {
                continue;
            }
            let remove: BTreeSet<&str> = strays.iter().map(|(g, _)| *g).collect();
            match self.take_off(&client, eni, &remove).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(region, eni = eni_id, groups = ?remove, error = %e, "cannot take jitvm groups off an interface that is not their instance's; carrying on with the others");
                    failures.push(e);
                    continue;
                }
            }
            for (group, owner) in strays {
                let vm = owner.to_string();
                let carrier = instance.unwrap_or("none");
                tracing::info!(target: "audit", event = "jit_group_detached", vm = %vm, group, eni = eni_id, instance = carrier, "detached {group} from {eni_id}: it was carried by an interface that is not its VM's ({} is jitvm's for {} only; the interface is attached to {carrier})", group, owner.instance_id());
                detached.push(Detached {
                    interface: eni_id.to_owned(),
                    instance: instance.map(str::to_owned),
                    firewall: group.to_owned(),
                    vm: VmId::Aws(owner.clone()),
                });
            }
        }
        if detached.is_empty() && !failures.is_empty() {
            return Err(failures.remove(0));
        }
        Ok(detached)
    }

    /// Refuses to open `group` when any interface other than the
    /// instance's own carries it (a launch template or "launch more like
    /// this" can copy it): a grant must open exactly one instance.
    async fn check_exclusive(
        &self,
        client: &Client,
        inst: &AwsInstance,
        group: &str,
    ) -> Result<(), AdapterError> {
        let carriers = describe_interfaces(client, "group-id", &[group.to_owned()])
            .await
            .map_err(|e| sdk_error(&format!("listing the interfaces of {group}"), e))?;
        let strangers: Vec<String> = carriers
            .iter()
            .filter(|n| n.attachment().and_then(|a| a.instance_id()) != Some(inst.instance_id()))
            .map(|n| {
                format!(
                    "{} ({})",
                    n.network_interface_id().unwrap_or("?"),
                    n.attachment()
                        .and_then(|a| a.instance_id())
                        .unwrap_or("not attached")
                )
            })
            .collect();
        if strangers.is_empty() {
            return Ok(());
        }
        Err(AdapterError::permanent(
            "JitGroupShared",
            format!(
                "security group {group} is jitvm's for {} only, but {} also carry it, so a grant would open them too; the sweep takes it off them within a minute, or remove it from them and try again",
                inst.instance_id(),
                strangers.join(", ")
            ),
        ))
    }

    /// The client of `region`, made on first use.
    fn client(&self, region: &str) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let mut builder = aws_sdk_ec2::config::Builder::from(&self.config)
                    .region(Region::new(region.to_owned()));
                if let Some(counter) = &self.counter {
                    builder = builder.interceptor(counter.clone());
                }
                Client::from_conf(builder.build())
            })
            .clone()
    }

    /// Looks the instance and its primary interface up.
    async fn resolve(&self, client: &Client, inst: &AwsInstance) -> Result<Resolved, AdapterError> {
        let id = inst.instance_id();
        let found = match describe_instances(client, Some(id)).await {
            Ok(found) => found,
            Err(e)
                if matches!(
                    error_code(&e),
                    Some("InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed")
                ) =>
            {
                Vec::new()
            }
            Err(e) => return Err(sdk_error(&format!("describing instance {id}"), e)),
        };
        let Some((owner, instance)) = found.into_iter().find(|(_, i)| i.instance_id() == Some(id))
        else {
            return Err(not_found(inst));
        };
        if let Some(owner) = owner.as_deref()
            && owner != inst.account()
        {
            return Err(AdapterError::NotFound(format!(
                "instance {id} in {} belongs to account {owner}, not {}",
                inst.region(),
                inst.account()
            )));
        }
        let eni_id = primary_interface(&instance).map(str::to_owned);
        let eni = match &eni_id {
            Some(eni_id) => {
                describe_interfaces(client, "network-interface-id", std::slice::from_ref(eni_id))
                    .await
                    .map_err(|e| sdk_error(&format!("describing interface {eni_id}"), e))?
                    .into_iter()
                    .find(|n| n.network_interface_id() == Some(eni_id))
            }
            None => None,
        };
        let eni = eni_id.map(|eni_id| Interface::of(&instance, &eni_id, eni.as_ref()));
        let unsupported = support(&instance, eni.as_ref(), inst, self.max_groups)
            .or_else(|| self.uncovered(inst));
        Ok(Resolved {
            vpc_id: instance.vpc_id().map(str::to_owned),
            name: name_tag(&instance),
            eni,
            unsupported,
        })
    }

    /// The dedicated group of `inst` (by name and `jitvm:managed` tag).
    async fn find_jit_groups(
        &self,
        client: &Client,
        inst: &AwsInstance,
    ) -> Result<Vec<SecurityGroup>, AdapterError> {
        let name = inst.jit_group_name();
        let groups = describe_groups(
            client,
            vec![
                filter("group-name", [name.as_str()]),
                filter(&format!("tag:{TAG_MANAGED}"), ["true"]),
            ],
        )
        .await
        .map_err(|e| sdk_error(&format!("looking for security group {name}"), e))?;
        let vm = VmId::Aws(inst.clone());
        Ok(groups
            .into_iter()
            .filter(|g| g.group_name() == Some(name.as_str()))
            .filter(|g| match tag(g.tags(), TAG_VM).map(VmId::parse) {
                Some(Ok(tagged)) if tagged == vm => true,
                Some(_) => {
                    tracing::warn!(group = g.group_id(), vm = %vm, "security group named for this instance is tagged for another VM; ignored");
                    false
                }
                None => {
                    tracing::warn!(group = g.group_id(), vm = %vm, "security group named for this instance has no jitvm:vm tag; ignored");
                    false
                }
            })
            .collect())
    }

    /// Finds or creates the dedicated group of `inst` in `vpc_id`.
    async fn ensure_group(
        &self,
        client: &Client,
        inst: &AwsInstance,
        vpc_id: &str,
    ) -> Result<String, AdapterError> {
        let name = inst.jit_group_name();
        let arn = inst.to_string();
        for _ in 0..2 {
            if let Some(group) = group_named(client, &name, vpc_id).await? {
                let id = group
                    .group_id()
                    .ok_or_else(|| {
                        AdapterError::permanent(
                            "InvalidResponse",
                            format!("security group {name} has no id"),
                        )
                    })?
                    .to_owned();
                match tag(group.tags(), TAG_VM).map(VmId::parse) {
                    Some(Ok(VmId::Aws(tagged))) if &tagged == inst => {}
                    Some(_) => {
                        return Err(AdapterError::permanent(
                            "JitGroupConflict",
                            format!(
                                "security group {id} is named {name} but tagged {TAG_VM}={}; remove or rename it",
                                tag(group.tags(), TAG_VM).unwrap_or_default()
                            ),
                        ));
                    }
                    None => {}
                }
                if tag(group.tags(), TAG_MANAGED) != Some("true")
                    || tag(group.tags(), TAG_VM).is_none()
                {
                    client
                        .create_tags()
                        .resources(&id)
                        .tags(ec2_tag(TAG_MANAGED, "true"))
                        .tags(ec2_tag(TAG_VM, &arn))
                        .send()
                        .await
                        .map_err(|e| sdk_error(&format!("tagging security group {id}"), e))?;
                }
                return Ok(id);
            }
            let description = format!("jitvm just-in-time access for {}", inst.instance_id());
            let tags = [(TAG_MANAGED, "true"), (TAG_VM, arn.as_str())];
            // None: another enable made it first; it is read back.
            if let Some(id) = create_group(client, &name, &description, vpc_id, &tags).await? {
                tracing::info!(target: "audit", event = "jit_group_created", vm = %arn, group = %id, vpc = vpc_id, "created security group {name}");
                return Ok(id);
            }
        }
        Err(both_missing_and_existing(&name))
    }

    /// The ingress rules of `group_ids`, as found rules of `vm`.
    async fn found_rules(
        &self,
        client: &Client,
        region: &str,
        groups: &[(String, Option<VmId>)],
    ) -> Result<Vec<FoundRule>, AdapterError> {
        let ids: Vec<&str> = groups.iter().map(|(id, _)| id.as_str()).collect();
        let vms: HashMap<&str, &Option<VmId>> =
            groups.iter().map(|(id, vm)| (id.as_str(), vm)).collect();
        let rules = describe_ingress_rules(client, "group-id", &ids)
            .await
            .map_err(|e| sdk_error("describing security group rules", e))?;
        Ok(rules
            .iter()
            .filter_map(|r| {
                let vm = r
                    .group_id()
                    .and_then(|g| vms.get(g))
                    .and_then(|vm| (*vm).clone());
                found_rule(region, vm, r)
            })
            .collect())
    }

    /// Revokes `ids` from `group`; returns the ids actually removed. Rules
    /// (or the group) already gone are not an error.
    async fn revoke_in(
        &self,
        client: &Client,
        group: &str,
        ids: &[String],
    ) -> Result<Vec<String>, AdapterError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let result = client
            .revoke_security_group_ingress()
            .group_id(group)
            .set_security_group_rule_ids(Some(ids.to_vec()))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(ids.to_vec()),
            Err(e) => e,
        };
        match error_code(&err) {
            Some(GROUP_NOT_FOUND) => return Ok(Vec::new()),
            Some(code) if RULE_NOT_FOUND.contains(&code) => {}
            _ => return Err(sdk_error(&format!("revoking rules of {group}"), err)),
        }
        // Some are gone: one at a time, skipping those.
        let mut removed = Vec::new();
        for id in ids {
            match client
                .revoke_security_group_ingress()
                .group_id(group)
                .security_group_rule_ids(id)
                .send()
                .await
            {
                Ok(_) => removed.push(id.clone()),
                Err(e) => match error_code(&e) {
                    Some(GROUP_NOT_FOUND) => break,
                    Some(code) if RULE_NOT_FOUND.contains(&code) => {}
                    _ => return Err(sdk_error(&format!("revoking rule {id} of {group}"), e)),
                },
            }
        }
        Ok(removed)
    }

    /// Takes `group` off every interface that carries it.
    async fn detach(&self, client: &Client, group: &str, vm: &str) -> Result<(), AdapterError> {
        let enis = describe_interfaces(client, "group-id", &[group.to_owned()])
            .await
            .map_err(|e| sdk_error(&format!("finding the interfaces of {group}"), e))?;
        let remove = BTreeSet::from([group]);
        for eni in &enis {
            if self.take_off(client, eni, &remove).await? {
                let eni_id = eni.network_interface_id().unwrap_or_default();
                let instance = eni
                    .attachment()
                    .and_then(|a| a.instance_id())
                    .unwrap_or("none");
                tracing::info!(target: "audit", event = "jit_group_detached", vm, group, eni = eni_id, instance, "detached {group} from {eni_id}");
            }
        }
        Ok(())
    }

    /// Takes `remove` off interface `eni` without widening it: an
    /// interface left with no group gets its VPC's placeholder group, which
    /// admits nothing, never the VPC's `default` group, which admits
    /// everything from the default group's other members. Returns whether
    /// it changed the interface (not when none of `remove` was on it, or
    /// the interface is gone).
    async fn take_off(
        &self,
        client: &Client,
        eni: &NetworkInterface,
        remove: &BTreeSet<&str>,
    ) -> Result<bool, AdapterError> {
        let Some(eni_id) = eni.network_interface_id() else {
            return Ok(false);
        };
        let current: Vec<&str> = eni.groups().iter().filter_map(|g| g.group_id()).collect();
        if !current.iter().any(|g| remove.contains(g)) {
            return Ok(false);
        }
        let mut keep: Vec<String> = current
            .into_iter()
            .filter(|g| !remove.contains(g))
            .map(str::to_owned)
            .collect();
        if keep.is_empty() {
            // An interface needs one group.
            let vpc = eni.vpc_id().filter(|v| !v.is_empty()).ok_or_else(|| {
                AdapterError::permanent(
                    "InvalidResponse",
                    format!("interface {eni_id} has no VPC, so no placeholder group can replace its last group"),
                )
            })?;
            keep.push(self.placeholder(client, vpc).await?);
        }
        match client
            .modify_network_interface_attribute()
            .network_interface_id(eni_id)
            .set_groups(Some(keep))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some("InvalidNetworkInterfaceID.NotFound") => Ok(false),
            Err(e) => Err(sdk_error(
                &format!(
                    "taking {} off {eni_id}",
                    remove.iter().copied().collect::<Vec<_>>().join(", ")
                ),
                e,
            )),
        }
    }

    /// Finds or creates the placeholder group of `vpc_id`: no inbound and
    /// no outbound rule, so an interface that carries it alone is reached
    /// by nothing and reaches nothing. A placeholder found with rules (a
    /// creator stopped before emptying it, or someone added some) is
    /// emptied first.
    async fn placeholder(&self, client: &Client, vpc_id: &str) -> Result<String, AdapterError> {
        let name = placeholder_name(vpc_id);
        for _ in 0..2 {
            if let Some(group) = group_named(client, &name, vpc_id).await? {
                let id = group.group_id().ok_or_else(|| {
                    AdapterError::permanent(
                        "InvalidResponse",
                        format!("security group {name} has no id"),
                    )
                })?;
                if tag(group.tags(), TAG_PLACEHOLDER) != Some("true") {
                    return Err(AdapterError::permanent(
                        "PlaceholderConflict",
                        format!(
                            "security group {id} is named {name} but is not tagged {TAG_PLACEHOLDER}=true, so jitvm will not use it in place of a removed group; remove or rename it"
                        ),
                    ));
                }
                if !group.ip_permissions().is_empty() || !group.ip_permissions_egress().is_empty() {
                    self.empty_group(client, id).await?;
                }
                return Ok(id.to_owned());
            }
            let description = format!(
                "jitvm placeholder for {vpc_id}: allows nothing; stands in for a jitvm group taken off an interface that had no other group"
            );
            let tags = [(TAG_PLACEHOLDER, "true")];
            // None: another sweep or disable made it first; it is read back.
            if let Some(id) = create_group(client, &name, &description, vpc_id, &tags).await? {
                // A new group allows all outbound traffic.
                self.empty_group(client, &id).await?;
                tracing::info!(target: "audit", event = "placeholder_group_created", group = %id, vpc = vpc_id, "created security group {name}, which allows nothing, to stand in for jitvm groups taken off interfaces with no other group");
                return Ok(id);
            }
        }
        Err(both_missing_and_existing(&name))
    }

    /// Revokes every rule of `group`, inbound and outbound.
    async fn empty_group(&self, client: &Client, group: &str) -> Result<(), AdapterError> {
        let rules = describe_rules(client, "group-id", &[group])
            .await
            .map_err(|e| sdk_error(&format!("describing the rules of {group}"), e))?;
        let (egress, ingress): (Vec<&SecurityGroupRule>, Vec<&SecurityGroupRule>) =
            rules.iter().partition(|r| r.is_egress() == Some(true));
        let ids = |rules: &[&SecurityGroupRule]| -> Vec<String> {
            rules
                .iter()
                .filter_map(|r| r.security_group_rule_id().map(str::to_owned))
                .collect()
        };
        self.revoke_in(client, group, &ids(&ingress)).await?;
        let egress = ids(&egress);
        if egress.is_empty() {
            return Ok(());
        }
        match client
            .revoke_security_group_egress()
            .group_id(group)
            .set_security_group_rule_ids(Some(egress))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e).is_some_and(|c| RULE_NOT_FOUND.contains(&c)) => Ok(()),
            Err(e) => Err(sdk_error(
                &format!("revoking the outbound rules of {group}"),
                e,
            )),
        }
    }

    /// Re-creates a standing rule that enabling closed.
    async fn restore(
        &self,
        client: &Client,
        vm: &str,
        exposure: &Exposure,
    ) -> Result<(), AdapterError> {
        let spec: RuleSpec = match serde_json::from_value(exposure.spec.clone()) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(vm, group = %exposure.firewall, rule = %exposure.rule, error = %e, "cannot restore a closed rule: its stored definition is unreadable");
                return Ok(());
            }
        };
        let result = client
            .authorize_security_group_ingress()
            .group_id(&spec.group_id)
            .ip_permissions(spec.permission())
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::info!(target: "audit", event = "standing_rule_restored", vm, group = %spec.group_id, rule = %exposure.rule, protocol = %spec.ip_protocol, source = %exposure.source, "restored a standing rule closed by jitvm");
                Ok(())
            }
            Err(e) if error_code(&e) == Some(DUPLICATE_RULE) => Ok(()),
            Err(e) if error_code(&e) == Some(GROUP_NOT_FOUND) => {
                tracing::warn!(vm, group = %spec.group_id, rule = %exposure.rule, "cannot restore a closed rule: its security group no longer exists");
                Ok(())
            }
            Err(e) => Err(sdk_error(
                &format!("restoring rule {} of {}", exposure.rule, spec.group_id),
                e,
            )),
        }
    }

    /// One AuthorizeSecurityGroupIngress for `wanted`; the ids of the rules
    /// it made, looked up by tag when the response does not list them all.
    async fn authorize(
        &self,
        client: &Client,
        group: &str,
        grant: &Grant,
        wanted: &[(Protocol, IpNet)],
        description: &str,
    ) -> Result<Vec<String>, SdkError<AuthorizeSecurityGroupIngressError>> {
        let port = i32::from(grant.port().get());
        let mut request = client.authorize_security_group_ingress().group_id(group);
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let nets: Vec<IpNet> = wanted
                .iter()
                .filter(|(p, _)| *p == protocol)
                .map(|(_, n)| *n)
                .collect();
            if nets.is_empty() {
                continue;
            }
            let mut permission = IpPermission::builder()
                .ip_protocol(protocol.as_str())
                .from_port(port)
                .to_port(port);
            for net in nets {
                permission = match net {
                    IpNet::V4(_) => permission.ip_ranges(
                        IpRange::builder()
                            .cidr_ip(net.to_string())
                            .description(description)
                            .build(),
                    ),
                    IpNet::V6(_) => permission.ipv6_ranges(
                        Ipv6Range::builder()
                            .cidr_ipv6(net.to_string())
                            .description(description)
                            .build(),
                    ),
                };
            }
            request = request.ip_permissions(permission.build());
        }
        let mut tags = TagSpecification::builder().resource_type(ResourceType::SecurityGroupRule);
        for (key, value) in rule::aws_rule_tags(grant) {
            tags = tags.tags(ec2_tag(key, &value));
        }
        let out = request.tag_specifications(tags.build()).send().await?;
        Ok(out
            .security_group_rules()
            .iter()
            .filter(|r| r.is_egress() != Some(true))
            .filter_map(|r| r.security_group_rule_id().map(str::to_owned))
            .collect())
    }
}

/// What [`Ec2Firewall::resolve`] found.
struct Resolved {
    vpc_id: Option<String>,
    name: Option<String>,
    eni: Option<Interface>,
    unsupported: Option<String>,
}

/// A primary interface and its current groups (id, name).
struct Interface {
    id: String,
    groups: Vec<(String, Option<String>)>,
}

impl Interface {
    /// From `DescribeNetworkInterfaces` when it answered (it sees changes
    /// `DescribeInstances` may not), else from the instance.
    fn of(instance: &Instance, eni_id: &str, eni: Option<&NetworkInterface>) -> Self {
        let groups = match eni {
            Some(eni) => eni
                .groups()
                .iter()
                .filter_map(|g| {
                    g.group_id()
                        .map(|id| (id.to_owned(), g.group_name().map(str::to_owned)))
                })
                .collect(),
            None => instance
                .network_interfaces()
                .iter()
                .find(|n| n.network_interface_id() == Some(eni_id))
                .map(|n| {
                    n.groups()
                        .iter()
                        .filter_map(|g| {
                            g.group_id()
                                .map(|id| (id.to_owned(), g.group_name().map(str::to_owned)))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        Self {
            id: eni_id.to_owned(),
            groups,
        }
    }

    fn has_group_named(&self, name: &str) -> bool {
        self.groups
            .iter()
            .any(|(_, gname)| gname.as_deref() == Some(name))
    }
}

/// How to re-create a standing rule: what `DescribeSecurityGroupRules` said
/// of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleSpec {
    group_id: String,
    ip_protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cidr_ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cidr_ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix_list_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    referenced_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    referenced_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

impl RuleSpec {
    fn of(group_id: &str, r: &SecurityGroupRule) -> Self {
        let referenced = r.referenced_group_info();
        Self {
            group_id: group_id.to_owned(),
            ip_protocol: r.ip_protocol().unwrap_or("-1").to_owned(),
            from_port: r.from_port(),
            to_port: r.to_port(),
            cidr_ipv4: r.cidr_ipv4().map(str::to_owned),
            cidr_ipv6: r.cidr_ipv6().map(str::to_owned),
            prefix_list_id: r.prefix_list_id().map(str::to_owned),
            referenced_group_id: referenced.and_then(|g| g.group_id()).map(str::to_owned),
            referenced_user_id: referenced.and_then(|g| g.user_id()).map(str::to_owned),
            description: r.description().map(str::to_owned),
        }
    }

    fn permission(&self) -> IpPermission {
        let mut p = IpPermission::builder().ip_protocol(&self.ip_protocol);
        if self.ip_protocol != "-1" {
            p = p.set_from_port(self.from_port).set_to_port(self.to_port);
        }
        let description = self.description.clone();
        if let Some(cidr) = &self.cidr_ipv4 {
            p = p.ip_ranges(
                IpRange::builder()
                    .cidr_ip(cidr)
                    .set_description(description.clone())
                    .build(),
            );
        }
        if let Some(cidr) = &self.cidr_ipv6 {
            p = p.ipv6_ranges(
                Ipv6Range::builder()
                    .cidr_ipv6(cidr)
                    .set_description(description.clone())
                    .build(),
            );
        }
        if let Some(id) = &self.prefix_list_id {
            p = p.prefix_list_ids(
                PrefixListId::builder()
                    .prefix_list_id(id)
                    .set_description(description.clone())
                    .build(),
            );
        }
        if let Some(id) = &self.referenced_group_id {
            p = p.user_id_group_pairs(
                UserIdGroupPair::builder()
                    .group_id(id)
                    .set_user_id(self.referenced_user_id.clone())
                    .set_description(description)
                    .build(),
            );
        }
        p.build()
    }
}

#[async_trait]
impl Firewall for Ec2Firewall {
    async fn inspect(&self, vm: &VmId) -> Result<VmFacts, AdapterError> {
        let inst = aws(vm)?;
        let client = self.client(inst.region());
        let resolved = self.resolve(&client, inst).await?;
        Ok(VmFacts {
            id: vm.clone(),
            name: resolved.name,
            unsupported: resolved.unsupported,
        })
    }

    async fn list_vms(&self) -> Result<Vec<VmFacts>, AdapterError> {
        let mut facts = Vec::new();
        for region in &self.regions {
            let client = self.client(region);
            let instances = describe_instances(&client, None)
                .await
                .map_err(|e| sdk_error(&format!("listing instances in {region}"), e))?;
            let instances: Vec<(Option<String>, Instance)> = instances
                .into_iter()
                .filter(|(_, i)| state(i) != Some(&InstanceStateName::Terminated))
                .collect();
            let eni_ids: Vec<String> = instances
                .iter()
                .filter_map(|(_, i)| primary_interface(i).map(str::to_owned))
                .collect();
            let enis = describe_interfaces(&client, "network-interface-id", &eni_ids)
                .await
                .map_err(|e| sdk_error(&format!("listing interfaces in {region}"), e))?;
            let enis: HashMap<&str, &NetworkInterface> = enis
                .iter()
                .filter_map(|n| n.network_interface_id().map(|id| (id, n)))
                .collect();
            for (owner, instance) in &instances {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                let Some(owner) = owner else {
                    tracing::warn!(instance = id, region = %region, "instance without an owner account; skipped");
                    continue;
                };
                let arn = format!(
                    "arn:{}:ec2:{region}:{owner}:instance/{id}",
                    partition(region)
                );
                let vm = match VmId::parse(&arn) {
                    Ok(vm) => vm,
                    Err(e) => {
                        tracing::warn!(instance = id, error = %e, "instance with an unexpected ARN; skipped");
                        continue;
                    }
                };
                let VmId::Aws(inst) = &vm else { continue };
                let eni = primary_interface(instance)
                    .map(|eni_id| Interface::of(instance, eni_id, enis.get(eni_id).copied()));
                let unsupported = support(instance, eni.as_ref(), inst, self.max_groups);
                facts.push(VmFacts {
                    name: name_tag(instance),
                    id: vm,
                    unsupported,
                });
            }
        }
        Ok(facts)
    }

    async fn enable(
        &self,
        policy: &Policy,
        already_closed: &[Exposure],
    ) -> Result<Enablement, AdapterError> {
        let inst = aws(policy.vm())?;
        let vm = inst.to_string();
        let client = self.client(inst.region());
        let resolved = self.resolve(&client, inst).await?;
        if let Some(reason) = resolved.unsupported {
            return Err(AdapterError::permanent("Unsupported", reason));
        }
        let (Some(vpc_id), Some(eni)) = (resolved.vpc_id, resolved.eni) else {
            return Err(AdapterError::permanent(
                "Unsupported",
                format!(
                    "instance {} has no VPC or no primary interface",
                    inst.instance_id()
                ),
            ));
        };
        let group = self.ensure_group(&client, inst, &vpc_id).await?;
        if !eni.groups.iter().any(|(id, _)| *id == group) {
            let mut groups: Vec<String> = eni.groups.iter().map(|(id, _)| id.clone()).collect();
            groups.push(group.clone());
            client
                .modify_network_interface_attribute()
                .network_interface_id(&eni.id)
                .set_groups(Some(groups))
                .send()
                .await
                .map_err(|e| sdk_error(&format!("attaching {group} to {}", eni.id), e))?;
            tracing::info!(target: "audit", event = "jit_group_attached", vm = %vm, group = %group, eni = %eni.id, "attached {group} to {}", eni.id);
        }

        // Standing rules of the other groups that reach a protected port.
        let jit_name = inst.jit_group_name();
        let others: Vec<&str> = eni
            .groups
            .iter()
            .filter(|(id, name)| *id != group && name.as_deref() != Some(jit_name.as_str()))
            .map(|(id, _)| id.as_str())
            .collect();
        let standing = describe_ingress_rules(&client, "group-id", &others)
            .await
            .map_err(|e| sdk_error(&format!("describing the rules of {}", others.join(", ")), e))?;
        let mut exposures = Vec::new();
        for r in &standing {
            let (Some(gid), Some(rid)) = (r.group_id(), r.security_group_rule_id()) else {
                continue;
            };
            for port in policy.ports() {
                if !covers(r, port.number(), port.protocol()) {
                    continue;
                }
                exposures.push(Exposure {
                    port: port.number(),
                    firewall: gid.to_owned(),
                    rule: rid.to_owned(),
                    protocol: protocol_name(r.ip_protocol()),
                    source: rule_source(r),
                    description: r.description().filter(|d| !d.is_empty()).map(str::to_owned),
                    closed: false,
                    spec: serde_json::to_value(RuleSpec::of(gid, r)).unwrap_or_default(),
                });
            }
        }

        if policy.close_standing_access() && !exposures.is_empty() {
            let mut by_group: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for e in &exposures {
                by_group.entry(&e.firewall).or_default().insert(&e.rule);
            }
            let mut removed: BTreeSet<(String, String)> = BTreeSet::new();
            for (gid, ids) in &by_group {
                let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
                for id in self.revoke_in(&client, gid, &ids).await? {
                    removed.insert(((*gid).to_owned(), id));
                }
            }
            // A rule that vanished meanwhile exposes nothing any more.
            exposures.retain(|e| removed.contains(&(e.firewall.clone(), e.rule.clone())));
            for e in &mut exposures {
                e.closed = true;
            }
            let mut logged = BTreeSet::new();
            for e in &exposures {
                if logged.insert((&e.firewall, &e.rule)) {
                    tracing::info!(target: "audit", event = "standing_rule_closed", vm = %vm, group = %e.firewall, rule = %e.rule, protocol = %e.protocol, source = %e.source, port = e.port.get(), "closed a standing rule that exposed a protected port");
                }
            }
        }

        for closed in already_closed {
            let seen = exposures.iter().any(|e| {
                e.firewall == closed.firewall && e.rule == closed.rule && e.port == closed.port
            });
            if !seen {
                exposures.push(closed.clone());
            }
        }
        Ok(Enablement {
            firewall: group,
            exposures,
        })
    }

    async fn restore_standing(&self, vm: &VmId, closed: &[Exposure]) -> Result<(), AdapterError> {
        let inst = aws(vm)?;
        let client = self.client(inst.region());
        let arn = inst.to_string();
        for exposure in closed.iter().filter(|x| x.closed) {
            self.restore(&client, &arn, exposure).await?;
        }
        Ok(())
    }

    async fn disable(
        &self,
        vm: &VmId,
        closed: &[Exposure],
    ) -> Result<Vec<FoundRule>, AdapterError> {
        let inst = aws(vm)?;
        let arn = inst.to_string();
        let client = self.client(inst.region());
        let groups = self.find_jit_groups(&client, inst).await?;
        let mut revoked = Vec::new();
        for group in &groups {
            let Some(gid) = group.group_id() else {
                continue;
            };
            let rules = self
                .found_rules(
                    &client,
                    inst.region(),
                    &[(gid.to_owned(), Some(vm.clone()))],
                )
                .await?;
            let ids: Vec<String> = rules.iter().map(|r| r.key.rule.clone()).collect();
            let removed: BTreeSet<String> = self
                .revoke_in(&client, gid, &ids)
                .await?
                .into_iter()
                .collect();
            if !removed.is_empty() {
                tracing::info!(target: "audit", event = "grant_rules_revoked", vm = %arn, group = gid, count = removed.len(), rules = ?removed, "revoked the grant rules of {gid} while disabling JIT");
            }
            revoked.extend(rules.into_iter().filter(|r| removed.contains(&r.key.rule)));
            self.detach(&client, gid, &arn).await?;
            match client.delete_security_group().group_id(gid).send().await {
                Ok(_) => {
                    tracing::info!(target: "audit", event = "jit_group_deleted", vm = %arn, group = gid, "deleted security group {gid}");
                }
                Err(e) if error_code(&e) == Some(GROUP_NOT_FOUND) => {}
                Err(e) if error_code(&e) == Some("DependencyViolation") => {
                    return Err(AdapterError::transient(
                        format!(
                            "security group {gid} is still in use (detaching takes a moment); try again"
                        ),
                        e,
                    ));
                }
                Err(e) => return Err(sdk_error(&format!("deleting security group {gid}"), e)),
            }
        }
        let mut restored = BTreeSet::new();
        for exposure in closed.iter().filter(|e| e.closed) {
            if restored.insert((exposure.firewall.as_str(), exposure.rule.as_str())) {
                self.restore(&client, &arn, exposure).await?;
            }
        }
        Ok(revoked)
    }

    async fn open(
        &self,
        grant: &Grant,
        justification: Option<&Justification>,
    ) -> Result<Opened, AdapterError> {
        let inst = aws(grant.vm())?;
        if let Some(reason) = self.uncovered(inst) {
            return Err(AdapterError::permanent(
                "RegionNotSwept",
                format!("{}: {reason}", inst.instance_id()),
            ));
        }
        let client = self.client(inst.region());
        let region = inst.region();
        let group = self
            .find_jit_groups(&client, inst)
            .await?
            .into_iter()
            .find_map(|g| g.group_id().map(str::to_owned))
            .ok_or_else(|| not_enabled(inst))?;
        self.check_exclusive(&client, inst, &group).await?;
        let description = rule::aws_rule_description(grant, justification);
        let wanted: Vec<(Protocol, IpNet)> = grant
            .protocol()
            .concrete()
            .iter()
            .flat_map(|p| grant.source().cidrs().into_iter().map(move |n| (*p, n)))
            .collect();
        let key = |rule: String| RuleKey {
            cloud: Cloud::Aws,
            scope: region.to_owned(),
            firewall: group.clone(),
            rule,
        };

        let (made, already_open) = match self
            .authorize(&client, &group, grant, &wanted, &description)
            .await
        {
            Ok(ids) => (ids, false),
            Err(e) if error_code(&e) == Some(DUPLICATE_RULE) => {
                // Some or all are there: ours (a redelivery) or another request's.
                let rules = describe_ingress_rules(&client, "group-id", &[group.as_str()])
                    .await
                    .map_err(|e| sdk_error(&format!("describing the rules of {group}"), e))?;
                let mut present = Vec::new();
                let mut missing = Vec::new();
                for w in &wanted {
                    match rules.iter().find(|r| is_rule_for(r, grant.port(), *w)) {
                        Some(r) => {
                            let owner = rule::decode_aws_tags(tag_pairs(r.tags()));
                            match owner {
                                Ok(meta) if meta.request_id == *grant.request_id() => {
                                    present.extend(r.security_group_rule_id().map(str::to_owned));
                                }
                                Ok(meta) => {
                                    return Err(AdapterError::permanent(
                                        "DuplicateGrant",
                                        format!(
                                            "an identical rule from request {} is already open until {}",
                                            meta.request_id,
                                            rule::rfc3339(meta.expires)
                                        ),
                                    ));
                                }
                                Err(_) => {
                                    return Err(AdapterError::permanent(
                                        "DuplicateGrant",
                                        format!(
                                            "an identical rule ({}) that jitvm did not make is already on {group}; the sweep removes it, or remove it by hand",
                                            r.security_group_rule_id().unwrap_or("?")
                                        ),
                                    ));
                                }
                            }
                        }
                        None => missing.push(*w),
                    }
                }
                if missing.is_empty() {
                    (present, true)
                } else {
                    match self
                        .authorize(&client, &group, grant, &missing, &description)
                        .await
                    {
                        Ok(mut ids) => {
                            ids.extend(present);
                            (ids, false)
                        }
                        Err(e) if error_code(&e) == Some(DUPLICATE_RULE) => {
                            return Err(AdapterError::Conflict(format!(
                                "rules of {group} changed while opening request {}; try again",
                                grant.request_id()
                            )));
                        }
                        Err(e) => return Err(authorize_error(inst, &group, e)),
                    }
                }
            }
            Err(e) => return Err(authorize_error(inst, &group, e)),
        };

        let mut ids: BTreeSet<String> = made.into_iter().collect();
        if ids.len() < wanted.len() {
            // The response does not list every rule it made (moto lists the
            // last one): find the rest by their tags.
            let rules = describe_ingress_rules(&client, "group-id", &[group.as_str()])
                .await
                .map_err(|e| sdk_error(&format!("describing the rules of {group}"), e))?;
            for r in &rules {
                let ours = tag(r.tags(), TAG_REQUEST) == Some(grant.request_id().as_str());
                if ours && wanted.iter().any(|w| is_rule_for(r, grant.port(), *w)) {
                    ids.extend(r.security_group_rule_id().map(str::to_owned));
                }
            }
        }
        if !already_open {
            tracing::info!(
                target: "audit",
                event = "grant_rule_opened",
                vm = %grant.vm(),
                request_id = %grant.request_id(),
                requestor = %grant.requestor(),
                group = %group,
                rules = ?ids,
                port = grant.port().get(),
                protocol = %grant.protocol(),
                source = %grant.source(),
                expires = %rule::rfc3339(grant.end()),
                "opened port {} on {} until {}", grant.port(), inst.instance_id(), rule::rfc3339(grant.end())
            );
        }
        Ok(Opened {
            rules: ids.into_iter().map(key).collect(),
            already_open,
        })
    }

    fn scopes(&self) -> Vec<Scope> {
        self.regions
            .iter()
            .map(|r| Scope {
                cloud: Cloud::Aws,
                name: r.clone(),
            })
            .collect()
    }

    fn scope_of(&self, vm: &VmId) -> Option<Scope> {
        let inst = aws(vm).ok()?;
        self.uncovered(inst).is_none().then(|| Scope {
            cloud: Cloud::Aws,
            name: inst.region().to_owned(),
        })
    }

    async fn rules_in(&self, scope: &Scope) -> Result<Vec<FoundRule>, AdapterError> {
        self.region_rules(&scope.name).await
    }

    async fn keep_exclusive(&self, scope: &Scope) -> Result<Vec<Detached>, AdapterError> {
        if scope.cloud != Cloud::Aws {
            return Ok(Vec::new());
        }
        self.region_exclusive(&scope.name).await
    }

    async fn rules_at(&self, keys: &[RuleKey]) -> Result<Vec<FoundRule>, AdapterError> {
        let mut by_region: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for key in keys.iter().filter(|k| k.cloud == Cloud::Aws) {
            by_region.entry(&key.scope).or_default().push(&key.rule);
        }
        let mut found = Vec::new();
        for (region, ids) in by_region {
            let client = self.client(region);
            let rules = describe_ingress_rules(&client, "security-group-rule-id", &ids)
                .await
                .map_err(|e| {
                    sdk_error(&format!("reading rules {} in {region}", ids.join(",")), e)
                })?;
            found.extend(rules.iter().filter_map(|r| found_rule(region, None, r)));
        }
        Ok(found)
    }

    async fn rules_of(&self, vm: &VmId) -> Result<Vec<FoundRule>, AdapterError> {
        let inst = aws(vm)?;
        let client = self.client(inst.region());
        let groups: Vec<(String, Option<VmId>)> = self
            .find_jit_groups(&client, inst)
            .await?
            .iter()
            .filter_map(|g| g.group_id().map(|id| (id.to_owned(), Some(vm.clone()))))
            .collect();
        self.found_rules(&client, inst.region(), &groups).await
    }

    async fn revoke(&self, rules: &[RuleKey]) -> Result<usize, AdapterError> {
        let mut by_group: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
        for key in rules {
            by_group
                .entry((&key.scope, &key.firewall))
                .or_default()
                .insert(&key.rule);
        }
        // One group failing must not keep the others' expired rules open:
        // each group is tried, and the call fails only if every group did
        // (the next sweep finds what is left, since it is still expired).
        let mut count = 0;
        let groups = by_group.len();
        let mut failures = Vec::new();
        for ((region, group), ids) in by_group {
            let client = self.client(region);
            let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
            let removed = match self.revoke_in(&client, group, &ids).await {
                Ok(removed) => removed,
                Err(e) => {
                    tracing::error!(region, group, error = %e, "cannot revoke rules of this group; carrying on with the others");
                    failures.push(e);
                    continue;
                }
            };
            if !removed.is_empty() {
                tracing::info!(target: "audit", event = "grant_rules_revoked", region, group, count = removed.len(), rules = ?removed, "revoked {} rule(s) of {group}", removed.len());
            }
            count += removed.len();
        }
        if groups > 0 && failures.len() == groups {
            return Err(failures.remove(0));
        }
        Ok(count)
    }
}

fn aws(vm: &VmId) -> Result<&AwsInstance, AdapterError> {
    match vm {
        VmId::Aws(inst) => Ok(inst),
        VmId::Azure(_) => Err(AdapterError::permanent(
            "UnsupportedCloud",
            format!("{vm} is an Azure VM; the EC2 firewall serves EC2 instances only"),
        )),
    }
}

fn not_found(inst: &AwsInstance) -> AdapterError {
    AdapterError::NotFound(format!(
        "instance {} does not exist in {} (account {})",
        inst.instance_id(),
        inst.region(),
        inst.account()
    ))
}

fn not_enabled(inst: &AwsInstance) -> AdapterError {
    AdapterError::permanent(
        "JitNotEnabled",
        format!(
            "JIT is not enabled on instance {}: its security group {} does not exist; set a policy for it first",
            inst.instance_id(),
            inst.jit_group_name()
        ),
    )
}

fn authorize_error(
    inst: &AwsInstance,
    group: &str,
    err: SdkError<AuthorizeSecurityGroupIngressError>,
) -> AdapterError {
    match error_code(&err) {
        Some(RULE_LIMIT) => AdapterError::permanent(
            RULE_LIMIT,
            format!(
                "security group {group} of instance {} already holds the most inbound rules allowed; \
                 revoke some open grants, wait for them to expire, or raise the \
                 \"Inbound or outbound rules per security group\" quota",
                inst.instance_id()
            ),
        ),
        Some(GROUP_NOT_FOUND) => not_enabled(inst),
        _ => sdk_error(&format!("opening a rule on {group}"), err),
    }
}

/// The partition of a region's ARNs.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

fn state(instance: &Instance) -> Option<&InstanceStateName> {
    instance.state().and_then(|s| s.name())
}

fn name_tag(instance: &Instance) -> Option<String> {
    tag(instance.tags(), "Name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// The id of the interface at device index 0.
fn primary_interface(instance: &Instance) -> Option<&str> {
    instance
        .network_interfaces()
        .iter()
        .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
        .and_then(|n| n.network_interface_id())
}

/// Why jitvm cannot protect `instance`, or `None`.
fn support(
    instance: &Instance,
    eni: Option<&Interface>,
    inst: &AwsInstance,
    max_groups: usize,
) -> Option<String> {
    let id = inst.instance_id();
    match state(instance) {
        Some(InstanceStateName::Terminated) => {
            return Some(format!("instance {id} is terminated"));
        }
        Some(InstanceStateName::ShuttingDown) => {
            return Some(format!("instance {id} is shutting down"));
        }
        _ => {}
    }
    if instance.vpc_id().is_none_or(str::is_empty) {
        return Some(format!(
            "instance {id} is not in a VPC; jitvm needs VPC security groups"
        ));
    }
    let Some(eni) = eni else {
        return Some(format!(
            "instance {id} has no primary network interface (device index 0)"
        ));
    };
    let jit_name = inst.jit_group_name();
    if eni.groups.len() >= max_groups && !eni.has_group_named(&jit_name) {
        return Some(format!(
            "the primary network interface {} of instance {id} already has {} security groups, \
             the most allowed, so jitvm cannot attach its own group {jit_name}; remove one of its \
             groups or raise the \"Security groups per network interface\" quota",
            eni.id,
            eni.groups.len()
        ));
    }
    None
}

/// Whether `r` lets traffic reach `port` over `protocol` (`*`: TCP or UDP).
fn covers(r: &SecurityGroupRule, port: Port, protocol: Protocol) -> bool {
    if r.is_egress() == Some(true) {
        return false;
    }
    let concrete = match normalise_protocol(r.ip_protocol()) {
        Some(RuleProtocol::All) => return true,
        Some(RuleProtocol::One(p)) => p,
        None => return false,
    };
    if !protocol.concrete().contains(&concrete) {
        return false;
    }
    let from = r.from_port().unwrap_or(-1);
    if from < 0 {
        return true;
    }
    let to = match r.to_port() {
        Some(to) if to >= 0 => to,
        _ => i32::from(u16::MAX),
    };
    (from..=to).contains(&i32::from(port.get()))
}

enum RuleProtocol {
    All,
    One(Protocol),
}

fn normalise_protocol(p: Option<&str>) -> Option<RuleProtocol> {
    match p?.to_ascii_lowercase().as_str() {
        "-1" | "all" => Some(RuleProtocol::All),
        "tcp" | "6" => Some(RuleProtocol::One(Protocol::Tcp)),
        "udp" | "17" => Some(RuleProtocol::One(Protocol::Udp)),
        _ => None,
    }
}

fn protocol_name(p: Option<&str>) -> String {
    match normalise_protocol(p) {
        Some(RuleProtocol::All) => "-1".to_owned(),
        Some(RuleProtocol::One(p)) => p.as_str().to_owned(),
        None => p.unwrap_or_default().to_owned(),
    }
}

/// Where a rule admits traffic from.
fn rule_source(r: &SecurityGroupRule) -> String {
    r.cidr_ipv4()
        .or(r.cidr_ipv6())
        .or(r.prefix_list_id())
        .or(r.referenced_group_info().and_then(|g| g.group_id()))
        .unwrap_or_default()
        .to_owned()
}

fn rule_net(r: &SecurityGroupRule) -> Option<IpNet> {
    r.cidr_ipv4()
        .or(r.cidr_ipv6())
        .and_then(|c| c.parse::<IpNet>().ok())
        .map(|n| n.trunc())
}

/// Whether `r` is the single-port ingress rule `(protocol, net)` on `port`.
fn is_rule_for(r: &SecurityGroupRule, port: Port, (protocol, net): (Protocol, IpNet)) -> bool {
    let port = i32::from(port.get());
    r.is_egress() != Some(true)
        && matches!(normalise_protocol(r.ip_protocol()), Some(RuleProtocol::One(p)) if p == protocol)
        && r.from_port() == Some(port)
        && r.to_port() == Some(port)
        && rule_net(r) == Some(net.trunc())
}

fn found_rule(region: &str, vm: Option<VmId>, r: &SecurityGroupRule) -> Option<FoundRule> {
    let port = match (r.from_port(), r.to_port()) {
        (Some(from), Some(to))
            if from == to
                && normalise_protocol(r.ip_protocol())
                    .is_some_and(|p| matches!(p, RuleProtocol::One(_))) =>
        {
            Port::parse(i64::from(from)).ok()
        }
        _ => None,
    };
    Some(FoundRule {
        key: RuleKey {
            cloud: Cloud::Aws,
            scope: region.to_owned(),
            firewall: r.group_id()?.to_owned(),
            rule: r.security_group_rule_id()?.to_owned(),
        },
        vm,
        port,
        source: rule_source(r),
        // Tags can be written by anyone with EC2 rights: a rule is only a
        // grant if it also has the shape jitvm gives grants.
        decoded: match (port, r.cidr_ipv4().or(r.cidr_ipv6())) {
            (Some(_), Some(_)) => rule::decode_aws_tags(tag_pairs(r.tags())),
            _ => Err(rule::DecodeError::NotAGrant(format!(
                "{} {}-{} from {}",
                r.ip_protocol().unwrap_or("?"),
                r.from_port().unwrap_or(-1),
                r.to_port().unwrap_or(-1),
                rule_source(r)
            ))),
        },
    })
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn tag_pairs(tags: &[Tag]) -> impl Iterator<Item = (&str, &str)> {
    tags.iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default())))
}

fn ec2_tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn filter<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(str::to_owned).collect()))
        .build()
}

fn next(token: Option<&str>) -> Option<String> {
    token.filter(|t| !t.is_empty()).map(str::to_owned)
}

/// Instances (with their reservation's owner), all of them or one, every page.
async fn describe_instances(
    client: &Client,
    id: Option<&str>,
) -> Result<
    Vec<(Option<String>, Instance)>,
    SdkError<aws_sdk_ec2::operation::describe_instances::DescribeInstancesError>,
> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .describe_instances()
            .set_instance_ids(id.map(|i| vec![i.to_owned()]))
            .set_next_token(token)
            .send()
            .await?;
        for reservation in page.reservations() {
            let owner = reservation.owner_id().map(str::to_owned);
            for instance in reservation.instances() {
                out.push((owner.clone(), instance.clone()));
            }
        }
        token = next(page.next_token());
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// Interfaces whose `filter_name` is one of `values`, every page.
async fn describe_interfaces(
    client: &Client,
    filter_name: &str,
    values: &[String],
) -> Result<
    Vec<NetworkInterface>,
    SdkError<aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesError>,
> {
    let mut out = Vec::new();
    for chunk in values.chunks(FILTER_CHUNK) {
        let mut token = None;
        loop {
            let page = client
                .describe_network_interfaces()
                .filters(filter(filter_name, chunk.iter().map(String::as_str)))
                .set_next_token(token)
                .send()
                .await?;
            out.extend(page.network_interfaces().iter().cloned());
            token = next(page.next_token());
            if token.is_none() {
                break;
            }
        }
    }
    Ok(out)
}

/// The security group named `name` in `vpc_id`, if there is one.
async fn group_named(
    client: &Client,
    name: &str,
    vpc_id: &str,
) -> Result<Option<SecurityGroup>, AdapterError> {
    let found = describe_groups(
        client,
        vec![filter("group-name", [name]), filter("vpc-id", [vpc_id])],
    )
    .await
    .map_err(|e| sdk_error(&format!("looking for security group {name}"), e))?;
    Ok(found.into_iter().find(|g| g.group_name() == Some(name)))
}

/// Creates security group `name` in `vpc_id` with `tags` and its `Name`,
/// in one call. `None` when a group of that name exists already (another
/// writer came first).
async fn create_group(
    client: &Client,
    name: &str,
    description: &str,
    vpc_id: &str,
    tags: &[(&str, &str)],
) -> Result<Option<String>, AdapterError> {
    let spec = tags
        .iter()
        .chain([&("Name", name)])
        .fold(
            TagSpecification::builder().resource_type(ResourceType::SecurityGroup),
            |spec, (k, v)| spec.tags(ec2_tag(k, v)),
        )
        .build();
    let created = client
        .create_security_group()
        .group_name(name)
        .description(description)
        .vpc_id(vpc_id)
        .tag_specifications(spec)
        .send()
        .await;
    match created {
        Ok(out) => out.group_id().map(|id| Some(id.to_owned())).ok_or_else(|| {
            AdapterError::permanent(
                "InvalidResponse",
                format!("CreateSecurityGroup for {name} returned no id"),
            )
        }),
        Err(e) if error_code(&e) == Some(DUPLICATE_GROUP) => Ok(None),
        Err(e) => Err(sdk_error(&format!("creating security group {name}"), e)),
    }
}

fn both_missing_and_existing(name: &str) -> AdapterError {
    AdapterError::Conflict(format!(
        "security group {name} was reported both missing and existing; try again"
    ))
}

/// Security groups matching `filters`, every page.
async fn describe_groups(
    client: &Client,
    filters: Vec<Filter>,
) -> Result<
    Vec<SecurityGroup>,
    SdkError<aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsError>,
> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .describe_security_groups()
            .set_filters(Some(filters.clone()))
            .set_next_token(token)
            .send()
            .await?;
        out.extend(page.security_groups().iter().cloned());
        token = next(page.next_token());
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// The jitvm-managed groups of `region` (by tag), each with the VM its
/// `jitvm:vm` tag names, when that tag reads as a VM id.
async fn managed_groups(
    client: &Client,
    region: &str,
) -> Result<Vec<(String, Option<VmId>)>, AdapterError> {
    let groups = describe_groups(
        client,
        vec![filter(&format!("tag:{TAG_MANAGED}"), ["true"])],
    )
    .await
    .map_err(|e| sdk_error(&format!("listing jitvm security groups in {region}"), e))?;
    Ok(groups
        .iter()
        .filter(|g| tag(g.tags(), TAG_MANAGED) == Some("true"))
        .filter_map(|g| {
            let vm = tag(g.tags(), TAG_VM).and_then(|v| VmId::parse(v).ok());
            g.group_id().map(|id| (id.to_owned(), vm))
        })
        .collect())
}

type DescribeRulesError = SdkError<
    aws_sdk_ec2::operation::describe_security_group_rules::DescribeSecurityGroupRulesError,
>;

/// The ingress rules whose `by` (a filter name: `group-id`,
/// `security-group-rule-id`) is one of `values`, every page. A filter,
/// not the ids parameter, so a rule already gone is left out rather than
/// failing the call.
async fn describe_ingress_rules(
    client: &Client,
    by: &str,
    values: &[&str],
) -> Result<Vec<SecurityGroupRule>, DescribeRulesError> {
    let mut rules = describe_rules(client, by, values).await?;
    rules.retain(|r| r.is_egress() != Some(true));
    Ok(rules)
}

/// The rules, inbound and outbound, whose `by` is one of `values`, every
/// page (see [`describe_ingress_rules`]).
async fn describe_rules(
    client: &Client,
    by: &str,
    values: &[&str],
) -> Result<Vec<SecurityGroupRule>, DescribeRulesError> {
    let mut out = Vec::new();
    for chunk in values.chunks(FILTER_CHUNK) {
        let mut token = None;
        loop {
            let page = client
                .describe_security_group_rules()
                .filters(filter(by, chunk.iter().copied()))
                .set_next_token(token)
                .send()
                .await?;
            out.extend(page.security_group_rules().iter().cloned());
            token = next(page.next_token());
            if token.is_none() {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: &str, from: i32, to: i32) -> SecurityGroupRule {
        SecurityGroupRule::builder()
            .is_egress(false)
            .ip_protocol(protocol)
            .from_port(from)
            .to_port(to)
            .cidr_ipv4("10.0.0.0/8")
            .build()
    }

    fn port(n: i64) -> Port {
        Port::parse(n).unwrap()
    }

    #[test]
    fn coverage_of_protocols_and_ranges() {
        assert!(covers(&rule("-1", -1, -1), port(22), Protocol::Tcp));
        assert!(covers(&rule("tcp", 22, 22), port(22), Protocol::Tcp));
        assert!(covers(&rule("6", 0, 65535), port(3389), Protocol::Tcp));
        assert!(covers(&rule("tcp", -1, -1), port(3389), Protocol::Any));
        assert!(covers(&rule("udp", 20, 30), port(22), Protocol::Any));
        assert!(covers(&rule("17", 22, 22), port(22), Protocol::Udp));
        assert!(!covers(&rule("udp", 22, 22), port(22), Protocol::Tcp));
        assert!(!covers(&rule("tcp", 23, 80), port(22), Protocol::Tcp));
        assert!(!covers(&rule("icmp", -1, -1), port(22), Protocol::Any));
        let egress = SecurityGroupRule::builder()
            .is_egress(true)
            .ip_protocol("-1")
            .build();
        assert!(!covers(&egress, port(22), Protocol::Tcp));
    }

    #[test]
    fn partitions() {
        assert_eq!(partition("us-east-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    }

    #[test]
    fn spec_round_trip() {
        let r = rule("tcp", 22, 22);
        let spec = RuleSpec::of("sg-1", &r);
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"groupId": "sg-1", "ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv4": "10.0.0.0/8"})
        );
        let back: RuleSpec = serde_json::from_value(value).unwrap();
        assert_eq!(back, spec);
        let p = back.permission();
        assert_eq!(p.from_port(), Some(22));
        assert_eq!(p.ip_ranges()[0].cidr_ip(), Some("10.0.0.0/8"));
    }
}

//! Azure network security groups as the [`Firewall`].
//!
//! # Design
//!
//! A VM is resolved with ARM GETs: the VM, its primary network interface,
//! that interface's primary IP configuration (the private address), and the
//! NSG on the interface, else the NSG on its subnet. A VM with neither is
//! unsupported, with that reason. The interface's NSG is preferred: Azure
//! applies both, and a Deny there cannot be undone by the subnet's NSG.
//!
//! Enabling JIT adds, per protected port, a Deny rule
//! `jitvm-deny-<port>-<vm key>` (destination: the VM's private address,
//! source: any) at the first free priority of the deny band. Grants are
//! Allow rules `jitvm-<port>-<end>-<request id>` for exactly the granted
//! source, destination the VM's private address, at the first free priority
//! of the allow band, which lies below the deny band (lower numbers win), so
//! a grant opens this VM and no other even on a subnet's shared NSG.
//! Priorities are only ever picked among free ones: the customer's own
//! rules never move. Allow rules of the customer with a lower priority
//! number than a port's Deny rule that reach that port and address are
//! reported as exposures; with `closeStandingAccess` they are deleted and
//! kept (their full properties) to be put back when JIT is disabled.
//!
//! NSGs have no usable ETag for rule-level changes, so the adapter works
//! rule by rule: each rule is one PUT or DELETE, and a priority taken by
//! someone else meanwhile (`SecurityRuleConflict`) makes it try the next
//! free one. The rule name carries the end time and request id, so the
//! sweep needs no database: it reads the NSGs that policies name (and every
//! NSG of the configured subscriptions) and deletes the expired grants and
//! any `jitvm-` rule that is not a valid grant or Deny rule (drift).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use serde_json::{Value, json};

use super::arm::{Arm, ArmError, COMPUTE_API_VERSION, NETWORK_API_VERSION, RetryPolicy};
use super::token::TokenSource;
use crate::config::{AzureConfig, PriorityBand};
use crate::domain::rule::{
    self, AzureRuleName, DecodeError, RuleMeta, azure_deny_rule_description, azure_deny_rule_name,
    azure_grant_rule_description, azure_grant_rule_name, azure_vm_key,
};
use crate::domain::{
    AzureVm, Cloud, Grant, Justification, Policy, Port, Protocol, SourcePrefix, VmId,
};
use crate::ports::{
    AdapterError, Enablement, Exposure, Firewall, FoundRule, Opened, PolicyStore, RuleKey, Scope,
    VmFacts,
};

/// How many times a grant tries another priority after losing one to a
/// concurrent writer.
const PRIORITY_ATTEMPTS: usize = 5;

/// The firewall of Azure VMs: rules on the NSG of each VM's NIC or subnet.
pub struct AzureFirewall {
    arm: Arm,
    subscriptions: Vec<String>,
    allow: PriorityBand,
    deny: PriorityBand,
    policies: Option<Arc<dyn PolicyStore>>,
}

impl std::fmt::Debug for AzureFirewall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureFirewall")
            .field("subscriptions", &self.subscriptions)
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .finish_non_exhaustive()
    }
}

/// The sweep scope of the NSGs that policies name in subscriptions
/// `JITVM_AZURE_SUBSCRIPTIONS` no longer lists: their grants expire too.
pub const OTHER_SUBSCRIPTIONS: &str = "other-subscriptions";

/// Where one VM's rules go.
#[derive(Debug, Clone)]
struct Target {
    vm: AzureVm,
    nsg: String,
    ip: IpAddr,
}

impl AzureFirewall {
    /// Builds the adapter. `policies`, when given, names the NSGs the sweep
    /// must read beside those of the configured subscriptions.
    pub fn new(
        config: &AzureConfig,
        retry: RetryPolicy,
        policies: Option<Arc<dyn PolicyStore>>,
    ) -> Self {
        // Building fails only if the TLS backend cannot start, and then so
        // would the default client: that is a broken deployment, at start-up.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            // ARM and the token endpoint do not redirect; following one
            // could carry the token or the client secret to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let tokens = TokenSource::new(
            http.clone(),
            config,
            retry.request_timeout.min(super::token::TOKEN_TIMEOUT),
        );
        Self {
            arm: Arm::new(http, &config.arm_url, tokens, retry),
            subscriptions: config.subscriptions.clone(),
            allow: config.allow_priorities,
            deny: config.deny_priorities,
            policies,
        }
    }

    /// Resolves a VM to its NSG and private address, or why it cannot be
    /// protected. A VM or an NSG outside the configured subscriptions is
    /// refused: the sweep lists those, so a grant there expires even if the
    /// policy record naming the NSG were lost. The VM's own subscription is
    /// checked first, from its id alone, so that ARM is never asked about
    /// a subscription this deployment does not manage.
    async fn resolve(&self, vm: &AzureVm) -> Result<Result<Target, String>, AdapterError> {
        if let Some(reason) = unmanaged(&self.subscriptions, vm) {
            return Ok(Err(reason));
        }
        Ok(self.locate(vm).await?.and_then(|t| {
            let sub = subscription_of(&t.nsg);
            if self.subscriptions.contains(&sub) {
                Ok(t)
            } else {
                Err(format!(
                    "{}: its NSG {} is in subscription {sub}, which JITVM_AZURE_SUBSCRIPTIONS does not list, so the sweep would not see its grants",
                    vm.name(),
                    t.nsg
                ))
            }
        }))
    }

    /// Finds a VM's NSG and private address, or why there is none.
    async fn locate(&self, vm: &AzureVm) -> Result<Result<Target, String>, AdapterError> {
        let id = vm.to_string();
        let body = self
            .arm
            .get(&id, COMPUTE_API_VERSION)
            .await
            .map_err(|e| vm_error(vm, e))?;
        let nic_id = match primary_nic(&body) {
            Ok(nic) => nic,
            Err(reason) => return Ok(Err(reason)),
        };
        let nic = self
            .arm
            .get(&nic_id, NETWORK_API_VERSION)
            .await
            .map_err(|e| e.into_adapter(&format!("reading network interface {nic_id}")))?;
        let (ip, subnet) = match primary_address(&nic) {
            Ok(found) => found,
            Err(reason) => return Ok(Err(reason)),
        };
        if let Some(nsg) = nsg_of(&nic) {
            return Ok(Ok(Target {
                vm: vm.clone(),
                nsg,
                ip,
            }));
        }
        let Some(subnet) = subnet else {
            return Ok(Err(no_nsg(vm)));
        };
        let subnet_body = self
            .arm
            .get(&subnet, NETWORK_API_VERSION)
            .await
            .map_err(|e| e.into_adapter(&format!("reading subnet {subnet}")))?;
        Ok(match nsg_of(&subnet_body) {
            Some(nsg) => Ok(Target {
                vm: vm.clone(),
                nsg,
                ip,
            }),
            None => Err(no_nsg(vm)),
        })
    }

    /// Resolves a VM that must be supported.
    async fn target(&self, vm: &VmId) -> Result<Target, AdapterError> {
        let azure = azure(vm)?;
        self.resolve(azure)
            .await?
            .map_err(|reason| AdapterError::permanent("Unsupported", reason))
    }

    /// The rules of an NSG (its own, not the defaults).
    async fn nsg_rules(&self, nsg: &str) -> Result<Vec<Value>, AdapterError> {
        let body = self
            .arm
            .get(nsg, NETWORK_API_VERSION)
            .await
            .map_err(|e| e.into_adapter(&format!("reading network security group {nsg}")))?;
        Ok(rules_of_nsg(&body))
    }

    /// Writes a rule at the first free priority of `band` (below `below`,
    /// when given), trying the next one when another writer took it.
    async fn put_at_free_priority(
        &self,
        nsg: &str,
        name: &str,
        band: PriorityBand,
        below: Option<u16>,
        mut rules: Vec<Value>,
        properties: impl Fn(u16) -> Value,
    ) -> Result<u16, AdapterError> {
        let path = rule_path(nsg, name);
        let mut tried = BTreeSet::new();
        for _ in 0..PRIORITY_ATTEMPTS {
            let mut taken = inbound_priorities(&rules);
            taken.extend(&tried);
            let limit = below.map_or(band.last, |b| band.last.min(b.saturating_sub(1)));
            let Some(priority) = (band.first..=limit).find(|p| !taken.contains(p)) else {
                return Err(AdapterError::permanent(
                    "PriorityBandFull",
                    format!(
                        "no free inbound priority in {}-{limit} on {nsg}: widen the band (JITVM_AZURE_{}_PRIORITIES) or move rules out of it",
                        band.first,
                        if below.is_some() { "ALLOW" } else { "DENY" }
                    ),
                ));
            };
            match self
                .arm
                .put(
                    &path,
                    NETWORK_API_VERSION,
                    &json!({ "properties": properties(priority) }),
                )
                .await
            {
                Ok(_) => return Ok(priority),
                Err(e) if e.is("SecurityRuleConflict") => {
                    tracing::info!(
                        nsg,
                        rule = name,
                        priority,
                        "priority taken meanwhile; trying the next one"
                    );
                    tried.insert(priority);
                    rules = self.nsg_rules(nsg).await?;
                }
                Err(e) if e.is("SecurityRuleCountLimitReached") => {
                    return Err(AdapterError::permanent(
                        "SecurityRuleCountLimitReached",
                        format!(
                            "network security group {nsg} holds as many rules as Azure allows ({}); remove unused rules or raise the limit",
                            e.message
                        ),
                    ));
                }
                Err(e) => return Err(e.into_adapter(&format!("writing rule {name} on {nsg}"))),
            }
        }
        Err(AdapterError::Transient {
            message: format!(
                "{PRIORITY_ATTEMPTS} priorities on {nsg} were taken by other writers while writing {name}; try again"
            ),
            source: None,
        })
    }

    async fn delete_rule(&self, nsg: &str, name: &str) -> Result<bool, AdapterError> {
        self.arm
            .delete(&rule_path(nsg, name), NETWORK_API_VERSION)
            .await
            .map_err(|e| e.into_adapter(&format!("deleting rule {name} of {nsg}")))
    }

    /// Puts back a standing rule that enabling deleted.
    async fn restore(&self, vm: &str, exposure: &Exposure) -> Result<(), AdapterError> {
        let Some(properties) = exposure.spec.get("properties").filter(|p| p.is_object()) else {
            return Err(AdapterError::permanent(
                "CannotRestore",
                format!(
                    "the closed rule {} of {} was stored without its definition; re-create it by hand",
                    exposure.rule, exposure.firewall
                ),
            ));
        };
        let path = rule_path(&exposure.firewall, &exposure.rule);
        match self.arm.get(&path, NETWORK_API_VERSION).await {
            Ok(_) => {
                // Someone made a rule of that name since: theirs stands.
                tracing::warn!(vm, nsg = %exposure.firewall, rule = %exposure.rule, "a rule of that name exists again; not overwriting it");
                return Ok(());
            }
            Err(e) if e.status == 404 => {}
            Err(e) => {
                return Err(e.into_adapter(&format!(
                    "reading rule {} of {}",
                    exposure.rule, exposure.firewall
                )));
            }
        }
        match self
            .arm
            .put(
                &path,
                NETWORK_API_VERSION,
                &json!({ "properties": properties }),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(target: "audit", event = "standing_rule_restored", vm, nsg = %exposure.firewall, rule = %exposure.rule, "restored a standing rule closed when JIT was enabled");
                Ok(())
            }
            Err(e) if e.is("SecurityRuleConflict") => Err(AdapterError::permanent(
                "CannotRestore",
                format!(
                    "cannot put back rule {} on {}: its priority is now taken ({}); re-create it by hand at a free priority",
                    exposure.rule, exposure.firewall, e.message
                ),
            )),
            Err(e) => Err(e.into_adapter(&format!(
                "restoring rule {} on {}",
                exposure.rule, exposure.firewall
            ))),
        }
    }

    /// Where enabling put a VM's rules, from its stored policy and its own
    /// Deny rules: used to disable JIT on a VM that was deleted or lost its
    /// NIC, so its rules do not stay behind. `None` when nothing is known.
    async fn recorded_target(&self, vm: &VmId) -> Result<Option<Target>, AdapterError> {
        let (Some(store), VmId::Azure(azure)) = (&self.policies, vm) else {
            return Ok(None);
        };
        let Some(entry) = store.get_policy(vm).await? else {
            return Ok(None);
        };
        let nsg = entry.enablement.firewall;
        let rules = match self.nsg_rules(&nsg).await {
            Ok(rules) => rules,
            Err(AdapterError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = azure_vm_key(azure);
        let ip = rules
            .iter()
            .filter(|r| {
                matches!(rule::decode_azure_rule_name(rule_name(r)),
                    Ok(Some(AzureRuleName::Deny { vm_key, .. })) if vm_key == key)
            })
            .find_map(|r| {
                destinations(r)
                    .first()
                    .and_then(|d| normalise_address(d).parse().ok())
            });
        Ok(ip.map(|ip| Target {
            vm: azure.clone(),
            nsg,
            ip,
        }))
    }

    /// Every NSG of scope `scope` the sweep reads, with the VMs that
    /// policies put there: for a subscription, those it lists and those
    /// policies name there; for [`OTHER_SUBSCRIPTIONS`], those policies name
    /// in subscriptions no longer configured (so their grants still
    /// expire). A subscription that cannot be listed fails; the policies
    /// are a help, not a need: without them its NSGs are still swept.
    async fn sweep_targets(
        &self,
        scope: &str,
    ) -> Result<
        (
            BTreeMap<String, (String, Option<Value>)>,
            HashMap<String, VmId>,
        ),
        AdapterError,
    > {
        let mut nsgs: BTreeMap<String, (String, Option<Value>)> = BTreeMap::new();
        let others = scope == OTHER_SUBSCRIPTIONS;
        if !others {
            let path =
                format!("/subscriptions/{scope}/providers/Microsoft.Network/networkSecurityGroups");
            // A subscription that cannot be listed fails its scope: a grant
            // whose policy record was lost would otherwise stay open unseen.
            let listed = self
                .arm
                .list(&path, NETWORK_API_VERSION)
                .await
                .map_err(|e| {
                    e.into_adapter(&format!("listing the NSGs of subscription {scope}"))
                })?;
            for nsg in listed {
                if let Some(id) = nsg.get("id").and_then(Value::as_str) {
                    nsgs.insert(id.to_ascii_lowercase(), (id.to_owned(), Some(nsg.clone())));
                }
            }
        }
        let in_scope = |nsg: &str| {
            let sub = subscription_of(nsg);
            if others {
                !self
                    .subscriptions
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&sub))
            } else {
                sub.eq_ignore_ascii_case(scope)
            }
        };
        // VM keys of the policies, to tell whose address a rule opens.
        let mut keys = HashMap::new();
        if let Some(store) = &self.policies {
            match store.list_policies().await {
                Ok(entries) => {
                    for entry in entries {
                        let VmId::Azure(vm) = entry.policy.vm() else {
                            continue;
                        };
                        keys.insert(azure_vm_key(vm), entry.policy.vm().clone());
                        let id = entry.enablement.firewall;
                        if in_scope(&id) {
                            nsgs.entry(id.to_ascii_lowercase()).or_insert((id, None));
                        }
                    }
                }
                Err(e) if others => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, "cannot list policies; sweeping the subscription's NSGs only");
                }
            }
        }
        Ok((nsgs, keys))
    }
}

#[async_trait]
impl Firewall for AzureFirewall {
    async fn inspect(&self, vm: &VmId) -> Result<VmFacts, AdapterError> {
        let azure = azure(vm)?;
        let resolved = self.resolve(azure).await?;
        Ok(VmFacts {
            id: vm.clone(),
            name: Some(azure.name().to_owned()),
            unsupported: resolved.err(),
        })
    }

    async fn list_vms(&self) -> Result<Vec<VmFacts>, AdapterError> {
        let mut facts = Vec::new();
        for sub in &self.subscriptions {
            let vms = self
                .arm
                .list(
                    &format!("/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines"),
                    COMPUTE_API_VERSION,
                )
                .await
                .map_err(|e| e.into_adapter(&format!("listing the VMs of subscription {sub}")))?;
            let nics = self
                .arm
                .list(
                    &format!("/subscriptions/{sub}/providers/Microsoft.Network/networkInterfaces"),
                    NETWORK_API_VERSION,
                )
                .await
                .map_err(|e| e.into_adapter(&format!("listing the NICs of subscription {sub}")))?;
            let nics: HashMap<String, &Value> = nics
                .iter()
                .filter_map(|n| {
                    n.get("id")
                        .and_then(Value::as_str)
                        .map(|id| (id.to_ascii_lowercase(), n))
                })
                .collect();
            let mut subnets: HashMap<String, Option<String>> = HashMap::new();
            for body in &vms {
                let Some(vm) = body
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|id| VmId::parse(id).ok())
                else {
                    tracing::warn!(vm = ?body.get("id"), "VM with an unexpected id; skipped");
                    continue;
                };
                let unsupported = match primary_nic(body) {
                    Err(reason) => Some(reason),
                    Ok(nic_id) => match nics.get(&nic_id.to_ascii_lowercase()) {
                        None => Some(format!("its network interface {nic_id} was not found")),
                        Some(nic) => match primary_address(nic) {
                            Err(reason) => Some(reason),
                            Ok(_) if nsg_of(nic).is_some() => None,
                            Ok((_, None)) => Some(no_nsg_text()),
                            Ok((_, Some(subnet))) => {
                                let key = subnet.to_ascii_lowercase();
                                if !subnets.contains_key(&key) {
                                    let nsg = match self.arm.get(&subnet, NETWORK_API_VERSION).await
                                    {
                                        Ok(s) => nsg_of(&s),
                                        Err(e) if e.status == 404 => None,
                                        Err(e) => {
                                            return Err(e.into_adapter(&format!(
                                                "reading subnet {subnet}"
                                            )));
                                        }
                                    };
                                    subnets.insert(key.clone(), nsg);
                                }
                                subnets
                                    .get(&key)
                                    .cloned()
                                    .flatten()
                                    .map_or_else(|| Some(no_nsg_text()), |_| None)
                            }
                        },
                    },
                };
                let VmId::Azure(azure) = &vm else { continue };
                facts.push(VmFacts {
                    name: Some(azure.name().to_owned()),
                    id: vm.clone(),
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
        let t = self.target(policy.vm()).await?;
        let vm_text = t.vm.to_string();
        let key = azure_vm_key(&t.vm);
        let mut rules = self.nsg_rules(&t.nsg).await?;

        // One Deny rule per protected port, kept in step with the policy.
        let mut deny_priority: BTreeMap<Port, u16> = BTreeMap::new();
        for port in policy.ports() {
            let name = azure_deny_rule_name(&t.vm, port.number());
            let props = |priority: u16| {
                json!({
                    "description": azure_deny_rule_description(&t.vm, port.number()),
                    "protocol": azure_protocol(port.protocol()),
                    "sourcePortRange": "*",
                    "destinationPortRange": port.number().to_string(),
                    "sourceAddressPrefix": "*",
                    "destinationAddressPrefix": t.ip.to_string(),
                    "access": "Deny",
                    "priority": priority,
                    "direction": "Inbound",
                })
            };
            let existing = find_rule(&rules, &name).and_then(|r| priority(r).map(|p| (r, p)));
            let priority = match existing {
                Some((r, p)) if same_rule(r, &props(p)) => p,
                Some((_, p)) => {
                    self.arm
                        .put(
                            &rule_path(&t.nsg, &name),
                            NETWORK_API_VERSION,
                            &json!({ "properties": props(p) }),
                        )
                        .await
                        .map_err(|e| {
                            e.into_adapter(&format!("updating rule {name} on {}", t.nsg))
                        })?;
                    p
                }
                None => {
                    let p = self
                        .put_at_free_priority(&t.nsg, &name, self.deny, None, rules.clone(), &props)
                        .await?;
                    // What was just written, without reading the NSG again.
                    rules.push(json!({ "name": name, "properties": props(p) }));
                    tracing::info!(target: "audit", event = "deny_rule_added", vm = %vm_text, nsg = %t.nsg, rule = %name, priority = p, port = port.number().get(), "closed port {} of {} with a Deny rule", port.number(), t.vm.name());
                    p
                }
            };
            deny_priority.insert(port.number(), priority);
        }
        // Deny rules of ports the policy no longer protects.
        for r in &rules {
            let name = rule_name(r);
            if let Ok(Some(AzureRuleName::Deny { port, vm_key })) =
                rule::decode_azure_rule_name(name)
                && vm_key == key
                && !deny_priority.contains_key(&port)
                && self.delete_rule(&t.nsg, name).await?
            {
                tracing::info!(target: "audit", event = "deny_rule_removed", vm = %vm_text, nsg = %t.nsg, rule = %name, port = port.get(), "port {port} of {} is no longer protected", t.vm.name());
            }
        }

        // Customer rules that still let traffic reach a protected port.
        let mut exposures = Vec::new();
        for r in &rules {
            let name = rule_name(r);
            if name.starts_with("jitvm-")
                || !is(r, "direction", "Inbound")
                || !is(r, "access", "Allow")
            {
                continue;
            }
            let Some(p) = priority(r) else { continue };
            for port in policy.ports() {
                let Some(deny) = deny_priority.get(&port.number()) else {
                    continue;
                };
                if p >= *deny || !reaches(r, port.number(), port.protocol(), t.ip) {
                    continue;
                }
                exposures.push(Exposure {
                    port: port.number(),
                    firewall: t.nsg.clone(),
                    rule: name.to_owned(),
                    protocol: prop(r, "protocol").unwrap_or("*").to_owned(),
                    source: sources(r).join(","),
                    description: prop(r, "description")
                        .filter(|d| !d.is_empty())
                        .map(str::to_owned),
                    closed: false,
                    spec: json!({ "properties": writable_properties(r) }),
                });
            }
        }
        if policy.close_standing_access() && !exposures.is_empty() {
            let names: BTreeSet<String> = exposures.iter().map(|e| e.rule.clone()).collect();
            let mut removed = BTreeSet::new();
            for name in names {
                if self.delete_rule(&t.nsg, &name).await? {
                    tracing::info!(target: "audit", event = "standing_rule_closed", vm = %vm_text, nsg = %t.nsg, rule = %name, "closed a standing rule that exposed a protected port");
                    removed.insert(name);
                }
            }
            exposures.retain(|e| removed.contains(&e.rule));
            for e in &mut exposures {
                e.closed = true;
            }
        }
        for closed in already_closed {
            let seen = exposures.iter().any(|e| {
                e.firewall.eq_ignore_ascii_case(&closed.firewall)
                    && e.rule == closed.rule
                    && e.port == closed.port
            });
            if !seen {
                exposures.push(closed.clone());
            }
        }
        Ok(Enablement {
            firewall: t.nsg,
            exposures,
        })
    }

    async fn disable(
        &self,
        vm: &VmId,
        closed: &[Exposure],
    ) -> Result<Vec<FoundRule>, AdapterError> {
        let t = match self.target(vm).await {
            Ok(t) => t,
            Err(e) => self.recorded_target(vm).await?.ok_or(e)?,
        };
        let vm_text = t.vm.to_string();
        let key = azure_vm_key(&t.vm);
        let rules = self.nsg_rules(&t.nsg).await?;
        let mut revoked = Vec::new();
        let ips = addresses_of(&rules, &key, t.ip);
        for found in grant_rules(&rules, &t.nsg, Some(vm), Some(&ips)) {
            if self.delete_rule(&t.nsg, &found.key.rule).await? {
                revoked.push(found);
            }
        }
        if !revoked.is_empty() {
            tracing::info!(target: "audit", event = "grant_rules_revoked", vm = %vm_text, nsg = %t.nsg, count = revoked.len(), "revoked the grant rules of {} while disabling JIT", t.vm.name());
        }
        for r in &rules {
            let name = rule_name(r);
            if let Ok(Some(AzureRuleName::Deny { vm_key, .. })) = rule::decode_azure_rule_name(name)
                && vm_key == key
                && self.delete_rule(&t.nsg, name).await?
            {
                tracing::info!(target: "audit", event = "deny_rule_removed", vm = %vm_text, nsg = %t.nsg, rule = %name, "removed a Deny rule while disabling JIT");
            }
        }
        let mut restored = BTreeSet::new();
        for exposure in closed.iter().filter(|e| e.closed) {
            if restored.insert((
                exposure.firewall.to_ascii_lowercase(),
                exposure.rule.clone(),
            )) {
                self.restore(&vm_text, exposure).await?;
            }
        }
        Ok(revoked)
    }

    async fn restore_standing(&self, vm: &VmId, closed: &[Exposure]) -> Result<(), AdapterError> {
        let vm_text = vm.to_string();
        for exposure in closed.iter().filter(|x| x.closed) {
            self.restore(&vm_text, exposure).await?;
        }
        Ok(())
    }

    async fn open(
        &self,
        grant: &Grant,
        _justification: Option<&Justification>,
    ) -> Result<Opened, AdapterError> {
        // As on EC2 for a region it does not sweep: a policy written while
        // the subscription was managed opens nothing once it no longer is.
        if let Some(reason) = unmanaged(&self.subscriptions, azure(grant.vm())?) {
            return Err(AdapterError::permanent("SubscriptionNotSwept", reason));
        }
        let t = self.target(grant.vm()).await?;
        let mut rules = self.nsg_rules(&t.nsg).await?;
        let name = azure_grant_rule_name(grant);
        let key = |rule: String| rule_key(&t.nsg, &rule);
        // A redelivered message finds its rule by request and port (not by
        // the whole name: its end time is what the record says, and names
        // compare without regard to case).
        let mine = rules.iter().find(|r| {
            matches!(rule::decode_azure_rule_name(rule_name(r)),
                Ok(Some(AzureRuleName::Grant { port, request_id, .. }))
                    if port == grant.port() && request_id == *grant.request_id())
        });
        if let Some(r) = mine {
            let existing = rule_name(r).to_owned();
            if !is(r, "provisioningState", "Failed") {
                return Ok(Opened {
                    rules: vec![key(existing)],
                    already_open: true,
                });
            }
            // Left behind by a failed operation: write it again.
            self.delete_rule(&t.nsg, &existing).await?;
            rules = self.nsg_rules(&t.nsg).await?;
        }
        let deny_name = azure_deny_rule_name(&t.vm, grant.port());
        let deny_rule = find_rule(&rules, &deny_name);
        let stale = deny_rule.is_some_and(|r| {
            !is(r, "access", "Deny")
                || !destinations(r)
                    .iter()
                    .any(|d| normalise_address(d) == t.ip.to_canonical().to_string())
        });
        if stale {
            return Err(AdapterError::permanent(
                "JitNotEnabled",
                format!(
                    "the Deny rule {deny_name} on {} no longer closes port {} at {}'s address {} (the address changed, or the rule was edited); PUT its policy again",
                    t.nsg,
                    grant.port(),
                    t.vm.name(),
                    t.ip
                ),
            ));
        }
        let Some(deny) = deny_rule.and_then(priority) else {
            return Err(AdapterError::permanent(
                "JitNotEnabled",
                format!(
                    "JIT is not enabled for port {} of {} (no Deny rule {deny_name} on {}); PUT its policy again",
                    grant.port(),
                    t.vm.name(),
                    t.nsg
                ),
            ));
        };
        let source = match grant.source() {
            SourcePrefix::Any => "*".to_owned(),
            SourcePrefix::Net(net) if net.addr().is_ipv4() != t.ip.is_ipv4() => {
                // Azure refuses a rule mixing address families, and such a
                // rule could never match: say so rather than pass on ARM's
                // error.
                return Err(AdapterError::permanent(
                    "AddressFamilyMismatch",
                    format!(
                        "{} is reached at {}, so a grant from {net} cannot apply; ask from an {} address",
                        t.vm.name(),
                        t.ip,
                        if t.ip.is_ipv4() { "IPv4" } else { "IPv6" }
                    ),
                ));
            }
            SourcePrefix::Net(net) => net.to_string(),
        };
        let props = |priority: u16| {
            json!({
                "description": azure_grant_rule_description(grant),
                "protocol": azure_protocol(grant.protocol()),
                "sourcePortRange": "*",
                "destinationPortRange": grant.port().to_string(),
                "sourceAddressPrefix": source,
                "destinationAddressPrefix": t.ip.to_string(),
                "access": "Allow",
                "priority": priority,
                "direction": "Inbound",
            })
        };
        let priority = self
            .put_at_free_priority(&t.nsg, &name, self.allow, Some(deny), rules, props)
            .await?;
        tracing::info!(
            target: "audit",
            event = "grant_rule_opened",
            vm = %grant.vm(),
            request_id = %grant.request_id(),
            requestor = %grant.requestor(),
            nsg = %t.nsg,
            rule = %name,
            priority,
            port = grant.port().get(),
            protocol = %grant.protocol(),
            source = %grant.source(),
            expires = %rule::rfc3339(grant.end()),
            "opened port {} on {} until {}", grant.port(), t.vm.name(), rule::rfc3339(grant.end())
        );
        Ok(Opened {
            rules: vec![key(name)],
            already_open: false,
        })
    }

    fn scopes(&self) -> Vec<Scope> {
        let others = self.policies.as_ref().map(|_| OTHER_SUBSCRIPTIONS);
        self.subscriptions
            .iter()
            .map(String::as_str)
            .chain(others)
            .map(|name| Scope {
                cloud: Cloud::Azure,
                name: name.to_owned(),
            })
            .collect()
    }

    fn scope_of(&self, vm: &VmId) -> Option<Scope> {
        let sub = azure(vm).ok()?.subscription();
        let name = match self
            .subscriptions
            .iter()
            .find(|s| s.eq_ignore_ascii_case(sub))
        {
            Some(configured) => configured.clone(),
            None => {
                self.policies.as_ref()?;
                OTHER_SUBSCRIPTIONS.to_owned()
            }
        };
        Some(Scope {
            cloud: Cloud::Azure,
            name,
        })
    }

    async fn rules_in(&self, scope: &Scope) -> Result<Vec<FoundRule>, AdapterError> {
        let (nsgs, keys) = self.sweep_targets(&scope.name).await?;
        let mut found = Vec::new();
        let mut failures = Vec::new();
        let count = nsgs.len();
        for (_, (id, body)) in nsgs {
            let rules = match body {
                Some(body) => rules_of_nsg(&body),
                None => match self.nsg_rules(&id).await {
                    Ok(rules) => rules,
                    Err(AdapterError::NotFound(_)) => {
                        tracing::warn!(nsg = %id, "a policy names an NSG that no longer exists");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(nsg = %id, error = %e, "cannot read this NSG; sweeping the others");
                        failures.push(e);
                        continue;
                    }
                },
            };
            // Whose address each Deny rule closes tells whose grants these are.
            let mut owners: HashMap<String, VmId> = HashMap::new();
            for r in &rules {
                if let Ok(Some(AzureRuleName::Deny { vm_key, .. })) =
                    rule::decode_azure_rule_name(rule_name(r))
                    && let (Some(vm), Some(dest)) = (keys.get(&vm_key), destinations(r).first())
                {
                    owners.insert(normalise_address(dest), vm.clone());
                }
            }
            for mut f in grant_rules(&rules, &id, None, None) {
                f.vm = rule_destination(&rules, &f.key.rule).and_then(|d| owners.get(&d).cloned());
                found.push(f);
            }
            found.extend(misnamed_deny_rules(&rules, &id));
        }
        if count > 0 && failures.len() == count {
            return Err(failures.remove(0));
        }
        Ok(found)
    }

    async fn rules_at(&self, keys: &[RuleKey]) -> Result<Vec<FoundRule>, AdapterError> {
        let mut found = Vec::new();
        for key in keys.iter().filter(|k| k.cloud == Cloud::Azure) {
            let path = rule_path(&key.firewall, &key.rule);
            match self.arm.get(&path, NETWORK_API_VERSION).await {
                Ok(rule) => found.extend(grant_rules(&[rule], &key.firewall, None, None)),
                Err(e) if e.status == 404 => {}
                Err(e) => return Err(e.into_adapter(&format!("reading rule {path}"))),
            }
        }
        Ok(found)
    }

    async fn rules_of(&self, vm: &VmId) -> Result<Vec<FoundRule>, AdapterError> {
        let t = self.target(vm).await?;
        let rules = self.nsg_rules(&t.nsg).await?;
        let ips = addresses_of(&rules, &azure_vm_key(&t.vm), t.ip);
        Ok(grant_rules(&rules, &t.nsg, Some(vm), Some(&ips)))
    }

    async fn revoke(&self, keys: &[RuleKey]) -> Result<usize, AdapterError> {
        let mut by_nsg: BTreeMap<String, (String, BTreeSet<&str>)> = BTreeMap::new();
        for key in keys {
            by_nsg
                .entry(key.firewall.to_ascii_lowercase())
                .or_insert_with(|| (key.firewall.clone(), BTreeSet::new()))
                .1
                .insert(&key.rule);
        }
        // One NSG failing must not keep the others' expired rules open.
        let mut count = 0;
        let groups = by_nsg.len();
        let mut failures = Vec::new();
        for (_, (nsg, names)) in by_nsg {
            let mut removed = Vec::new();
            let mut failed = None;
            for name in names {
                match self.delete_rule(&nsg, name).await {
                    Ok(true) => removed.push(name),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(nsg = %nsg, rule = name, error = %e, "cannot delete this rule; carrying on");
                        failed = Some(e);
                    }
                }
            }
            if !removed.is_empty() {
                tracing::info!(target: "audit", event = "grant_rules_revoked", nsg = %nsg, count = removed.len(), rules = ?removed, "revoked {} rule(s) of {nsg}", removed.len());
            }
            count += removed.len();
            if let Some(e) = failed {
                failures.push(e);
            }
        }
        // An NSG with any rule left counts as failed, so an early revoke
        // (one NSG) never reports a rule closed that is still open; the
        // sweep carries on unless every NSG failed, and the next sweep
        // finds what is left, since it is still expired.
        if groups > 0 && failures.len() == groups {
            return Err(failures.remove(0));
        }
        Ok(count)
    }
}

fn azure(vm: &VmId) -> Result<&AzureVm, AdapterError> {
    match vm {
        VmId::Azure(v) => Ok(v),
        VmId::Aws(_) => Err(AdapterError::permanent(
            "WrongCloud",
            format!("{vm} is not an Azure VM"),
        )),
    }
}

/// Why `vm` cannot be protected by this deployment, when its subscription
/// is not one of `subscriptions` (`JITVM_AZURE_SUBSCRIPTIONS`, in lower
/// case as parsed ids are): the sweep lists only those.
fn unmanaged(subscriptions: &[String], vm: &AzureVm) -> Option<String> {
    if subscriptions.iter().any(|s| s == vm.subscription()) {
        return None;
    }
    let listed = if subscriptions.is_empty() {
        "empty".to_owned()
    } else {
        subscriptions.join(",")
    };
    Some(format!(
        "{}: its subscription {} is not managed by this deployment (JITVM_AZURE_SUBSCRIPTIONS is {listed}); add it so that grants there are swept",
        vm.name(),
        vm.subscription()
    ))
}

fn vm_error(vm: &AzureVm, e: ArmError) -> AdapterError {
    if e.status == 404 {
        return AdapterError::NotFound(format!(
            "Azure VM {} was not found in resource group {} of subscription {}",
            vm.name(),
            vm.resource_group(),
            vm.subscription()
        ));
    }
    e.into_adapter(&format!("reading Azure VM {}", vm.name()))
}

fn no_nsg_text() -> String {
    "neither its network interface nor its subnet has a network security group; attach one (to the NIC or the subnet), then enable JIT".to_owned()
}

fn no_nsg(vm: &AzureVm) -> String {
    format!("{}: {}", vm.name(), no_nsg_text())
}

/// The id of a VM's primary network interface.
fn primary_nic(vm: &Value) -> Result<String, String> {
    let nics: Vec<&Value> = vm
        .pointer("/properties/networkProfile/networkInterfaces")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let primary = nics
        .iter()
        .find(|n| n.pointer("/properties/primary").and_then(Value::as_bool) == Some(true))
        .or(if nics.len() == 1 { nics.first() } else { None });
    primary
        .and_then(|n| n.get("id").and_then(Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| {
            if nics.is_empty() {
                "the VM has no network interface".to_owned()
            } else {
                "the VM has several network interfaces and none is marked primary".to_owned()
            }
        })
}

/// The private address and subnet id of a NIC's primary IP configuration.
fn primary_address(nic: &Value) -> Result<(IpAddr, Option<String>), String> {
    let configs: Vec<&Value> = nic
        .pointer("/properties/ipConfigurations")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let primary = configs
        .iter()
        .find(|c| c.pointer("/properties/primary").and_then(Value::as_bool) == Some(true))
        .or(configs.first())
        .ok_or_else(|| "its network interface has no IP configuration".to_owned())?;
    let ip = primary
        .pointer("/properties/privateIPAddress")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<IpAddr>().ok())
        .ok_or_else(|| "its network interface has no private IP address yet".to_owned())?;
    let subnet = primary
        .pointer("/properties/subnet/id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((ip, subnet))
}

/// The NSG id attached to a NIC or subnet.
fn nsg_of(resource: &Value) -> Option<String> {
    resource
        .pointer("/properties/networkSecurityGroup/id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn rules_of_nsg(nsg: &Value) -> Vec<Value> {
    nsg.pointer("/properties/securityRules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn rule_path(nsg: &str, name: &str) -> String {
    format!("{}/securityRules/{name}", nsg.trim_end_matches('/'))
}

fn rule_name(rule: &Value) -> &str {
    rule.get("name").and_then(Value::as_str).unwrap_or("")
}

fn find_rule<'a>(rules: &'a [Value], name: &str) -> Option<&'a Value> {
    rules
        .iter()
        .find(|r| rule_name(r).eq_ignore_ascii_case(name))
}

fn prop<'a>(rule: &'a Value, key: &str) -> Option<&'a str> {
    rule.get("properties")?.get(key)?.as_str()
}

fn is(rule: &Value, key: &str, value: &str) -> bool {
    prop(rule, key).is_some_and(|v| v.eq_ignore_ascii_case(value))
}

fn priority(rule: &Value) -> Option<u16> {
    rule.pointer("/properties/priority")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
}

fn inbound_priorities(rules: &[Value]) -> BTreeSet<u16> {
    rules
        .iter()
        .filter(|r| is(r, "direction", "Inbound"))
        .filter_map(priority)
        .collect()
}

/// A property given in singular and plural form, as one list.
fn both<'a>(rule: &'a Value, singular: &str, plural: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = prop(rule, singular)
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect();
    if let Some(list) = rule
        .get("properties")
        .and_then(|p| p.get(plural))
        .and_then(Value::as_array)
    {
        out.extend(list.iter().filter_map(Value::as_str));
    }
    out
}

fn destinations(rule: &Value) -> Vec<&str> {
    both(
        rule,
        "destinationAddressPrefix",
        "destinationAddressPrefixes",
    )
}

fn sources(rule: &Value) -> Vec<String> {
    let mut out: Vec<String> = both(rule, "sourceAddressPrefix", "sourceAddressPrefixes")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if has_groups(rule, "sourceApplicationSecurityGroups") {
        out.push("application security group".to_owned());
    }
    out
}

fn has_groups(rule: &Value, key: &str) -> bool {
    rule.get("properties")
        .and_then(|p| p.get(key))
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn azure_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "Tcp",
        Protocol::Udp => "Udp",
        Protocol::Any => "*",
    }
}

/// Whether a port spec (`N`, `N-M` or `*`) includes `port`.
fn port_spec_covers(spec: &str, port: Port) -> bool {
    let spec = spec.trim();
    if spec == "*" {
        return true;
    }
    let n = i64::from(port.get());
    match spec.split_once('-') {
        Some((a, b)) => match (a.trim().parse::<i64>(), b.trim().parse::<i64>()) {
            (Ok(a), Ok(b)) => a <= n && n <= b,
            _ => false,
        },
        None => spec.parse::<i64>() == Ok(n),
    }
}

/// Whether an address prefix of a rule's destination includes `ip`.
/// `*` and `VirtualNetwork` do; other service tags name public ranges; an
/// application security group may hold the VM, so it counts as reaching it.
fn address_covers(prefix: &str, ip: IpAddr) -> bool {
    let prefix = prefix.trim();
    if prefix == "*" || prefix.eq_ignore_ascii_case("VirtualNetwork") {
        return true;
    }
    if let Ok(addr) = prefix.parse::<IpAddr>() {
        return addr == ip;
    }
    prefix.parse::<IpNet>().is_ok_and(|net| net.contains(&ip))
}

/// Whether a customer's rule lets `protocol` traffic reach `port` at `ip`.
fn reaches(rule: &Value, port: Port, protocol: Protocol, ip: IpAddr) -> bool {
    let rule_protocol = prop(rule, "protocol").unwrap_or("*");
    let protocol_ok = rule_protocol == "*"
        || match protocol {
            Protocol::Tcp => rule_protocol.eq_ignore_ascii_case("Tcp"),
            Protocol::Udp => rule_protocol.eq_ignore_ascii_case("Udp"),
            Protocol::Any => {
                rule_protocol.eq_ignore_ascii_case("Tcp")
                    || rule_protocol.eq_ignore_ascii_case("Udp")
            }
        };
    let port_ok = both(rule, "destinationPortRange", "destinationPortRanges")
        .iter()
        .any(|s| port_spec_covers(s, port));
    let address_ok = has_groups(rule, "destinationApplicationSecurityGroups")
        || destinations(rule).iter().any(|d| address_covers(d, ip));
    protocol_ok && port_ok && address_ok
}

/// True when `rule` already says what `wanted` says (ignoring read-only
/// fields and letter case).
fn same_rule(rule: &Value, wanted: &Value) -> bool {
    let Some(map) = wanted.as_object() else {
        return false;
    };
    map.iter().all(
        |(k, v)| match (rule.pointer(&format!("/properties/{k}")), v) {
            (Some(Value::String(a)), Value::String(b)) => a.eq_ignore_ascii_case(b),
            (Some(a), b) => a == b,
            (None, _) => false,
        },
    )
}

/// A rule's properties without the fields ARM sets itself, for putting it
/// back later.
fn writable_properties(rule: &Value) -> Value {
    let mut props = rule.get("properties").cloned().unwrap_or_else(|| json!({}));
    if let Some(map) = props.as_object_mut() {
        map.remove("provisioningState");
        map.retain(|_, v| !v.is_null() && !v.as_array().is_some_and(Vec::is_empty));
    }
    props
}

fn normalise_address(text: &str) -> String {
    let text = text.trim();
    let bare = text
        .strip_suffix("/32")
        .or_else(|| text.strip_suffix("/128"))
        .unwrap_or(text);
    bare.parse::<IpAddr>().map_or_else(
        |_| text.to_ascii_lowercase(),
        |a| a.to_canonical().to_string(),
    )
}

/// The addresses of a VM on an NSG: its current one, and any its own Deny
/// rules still name (its address changed since JIT was enabled), so a grant
/// made before the change is still found and closed.
fn addresses_of(rules: &[Value], vm_key: &str, current: IpAddr) -> Vec<IpAddr> {
    let mut ips = vec![current];
    for r in rules {
        let ours = matches!(rule::decode_azure_rule_name(rule_name(r)),
            Ok(Some(AzureRuleName::Deny { vm_key: k, .. })) if k == vm_key);
        if !ours {
            continue;
        }
        for d in destinations(r) {
            if let Ok(ip) = normalise_address(d).parse::<IpAddr>()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    ips
}

fn rule_destination(rules: &[Value], name: &str) -> Option<String> {
    find_rule(rules, name).and_then(|r| destinations(r).first().map(|d| normalise_address(d)))
}

/// The grant rules (and undecodable `jitvm-` rules) of an NSG; with `ip`,
/// only those whose destination is that address.
fn grant_rules(
    rules: &[Value],
    nsg: &str,
    vm: Option<&VmId>,
    ips: Option<&[IpAddr]>,
) -> Vec<FoundRule> {
    let mut out = Vec::new();
    for r in rules {
        let name = rule_name(r);
        let decoded = match rule::decode_azure_rule_name(name) {
            Ok(None) | Ok(Some(AzureRuleName::Deny { .. })) => continue,
            Ok(Some(AzureRuleName::Grant {
                port,
                expires,
                request_id,
            })) => match grant_shape(r, port) {
                Ok(()) => Ok((
                    Some(port),
                    RuleMeta {
                        request_id,
                        expires,
                        requester: requester_of(r),
                    },
                )),
                Err(why) => Err((Some(port), DecodeError::NotAGrant(why))),
            },
            Err(e) => Err((None, e)),
        };
        if let Some(ips) = ips {
            let ours = destinations(r).iter().any(|d| {
                let d = normalise_address(d);
                ips.iter().any(|ip| d == ip.to_canonical().to_string())
            });
            if !ours {
                continue;
            }
        }
        let (port, decoded) = match decoded {
            Ok((port, meta)) => (port, Ok(meta)),
            Err((port, e)) => (port, Err(e)),
        };
        out.push(FoundRule {
            key: rule_key(nsg, name),
            vm: vm.cloned(),
            port,
            source: sources(r).join(","),
            decoded,
        });
    }
    out
}

/// `jitvm-deny-` rules that do not deny: drift, or an Allow rule hiding
/// behind a Deny rule's name would never be swept.
fn misnamed_deny_rules(rules: &[Value], nsg: &str) -> Vec<FoundRule> {
    rules
        .iter()
        .filter_map(|r| match rule::decode_azure_rule_name(rule_name(r)) {
            Ok(Some(AzureRuleName::Deny { port, .. })) if !is(r, "access", "Deny") => {
                Some(FoundRule {
                    key: rule_key(nsg, rule_name(r)),
                    vm: None,
                    port: Some(port),
                    source: sources(r).join(","),
                    decoded: Err(DecodeError::NotAGrant(
                        "a rule named as a jitvm Deny rule that does not deny".to_owned(),
                    )),
                })
            }
            _ => None,
        })
        .collect()
}

/// Checks a grant-named rule is shaped as jitvm writes grants: inbound,
/// allow, TCP/UDP/any on exactly its port, from one prefix.
fn grant_shape(rule: &Value, port: Port) -> Result<(), String> {
    if !is(rule, "direction", "Inbound") || !is(rule, "access", "Allow") {
        return Err("not an inbound Allow rule".to_owned());
    }
    let protocol = prop(rule, "protocol").unwrap_or("");
    if !["Tcp", "Udp", "*"]
        .iter()
        .any(|p| protocol.eq_ignore_ascii_case(p))
    {
        return Err(format!("protocol {protocol}"));
    }
    let ports = both(rule, "destinationPortRange", "destinationPortRanges");
    if ports != [port.to_string().as_str()] {
        return Err(format!("destination ports {}", ports.join(",")));
    }
    let sources = both(rule, "sourceAddressPrefix", "sourceAddressPrefixes");
    if sources.len() != 1 || has_groups(rule, "sourceApplicationSecurityGroups") {
        return Err(format!("sources {}", sources.join(",")));
    }
    // One VM's address: `*` or a block would open every VM behind the NSG.
    let targets = destinations(rule);
    let one_host =
        matches!(targets.as_slice(), [d] if normalise_address(d).parse::<IpAddr>().is_ok());
    if !one_host || has_groups(rule, "destinationApplicationSecurityGroups") {
        return Err(format!("destinations {}", targets.join(",")));
    }
    Ok(())
}

/// The requester a grant's description names (`... for <who>`).
fn requester_of(rule: &Value) -> Option<String> {
    prop(rule, "description")
        .and_then(|d| d.rsplit_once(" for "))
        .map(|(_, who)| who.to_owned())
}

/// Where a rule of an NSG is, for the sweep and revokes.
fn rule_key(nsg: &str, name: &str) -> RuleKey {
    RuleKey {
        cloud: Cloud::Azure,
        scope: subscription_of(nsg),
        firewall: nsg.to_owned(),
        rule: name.to_owned(),
    }
}

fn subscription_of(id: &str) -> String {
    let mut parts = id.split('/').filter(|s| !s.is_empty());
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("subscriptions") {
            return parts.next().unwrap_or("").to_ascii_lowercase();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(props: Value) -> Value {
        json!({"name": "r", "properties": props})
    }

    fn port(n: i64) -> Port {
        Port::parse(n).unwrap()
    }

    #[test]
    fn port_specs() {
        assert!(port_spec_covers("*", port(22)));
        assert!(port_spec_covers("22", port(22)));
        assert!(port_spec_covers("20-30", port(22)));
        assert!(!port_spec_covers("23-30", port(22)));
        assert!(!port_spec_covers("220", port(22)));
        assert!(!port_spec_covers("x-y", port(22)));
    }

    #[test]
    fn what_reaches_a_vm() {
        let ip: IpAddr = "10.0.0.4".parse().unwrap();
        let ssh = |proto: &str, dest: &str, ports: &str| {
            rule(
                json!({"protocol": proto, "destinationAddressPrefix": dest, "destinationPortRange": ports}),
            )
        };
        assert!(reaches(&ssh("Tcp", "*", "22"), port(22), Protocol::Tcp, ip));
        assert!(reaches(
            &ssh("*", "10.0.0.0/24", "0-1024"),
            port(22),
            Protocol::Tcp,
            ip
        ));
        assert!(reaches(
            &ssh("Tcp", "VirtualNetwork", "*"),
            port(22),
            Protocol::Any,
            ip
        ));
        assert!(reaches(
            &ssh("Tcp", "10.0.0.4", "22"),
            port(22),
            Protocol::Tcp,
            ip
        ));
        assert!(!reaches(
            &ssh("Udp", "*", "22"),
            port(22),
            Protocol::Tcp,
            ip
        ));
        assert!(!reaches(
            &ssh("Tcp", "10.0.1.0/24", "22"),
            port(22),
            Protocol::Tcp,
            ip
        ));
        assert!(!reaches(
            &ssh("Tcp", "Storage", "22"),
            port(22),
            Protocol::Tcp,
            ip
        ));
        assert!(!reaches(
            &ssh("Icmp", "*", "*"),
            port(22),
            Protocol::Tcp,
            ip
        ));
        let plural = rule(
            json!({"protocol": "Tcp", "destinationAddressPrefixes": ["10.0.0.4/32"], "destinationPortRanges": ["80", "20-25"]}),
        );
        assert!(reaches(&plural, port(22), Protocol::Tcp, ip));
        let asg = rule(
            json!({"protocol": "Tcp", "destinationApplicationSecurityGroups": [{"id": "x"}], "destinationPortRange": "22"}),
        );
        assert!(reaches(&asg, port(22), Protocol::Tcp, ip));
    }

    #[test]
    fn grant_shapes() {
        let ok = rule(
            json!({"direction": "Inbound", "access": "Allow", "protocol": "Tcp",
            "destinationPortRange": "22", "sourceAddressPrefix": "198.51.100.7/32", "destinationAddressPrefix": "10.0.0.4"}),
        );
        assert_eq!(grant_shape(&ok, port(22)), Ok(()));
        assert!(grant_shape(&ok, port(23)).is_err());
        let mut everyone = ok.clone();
        everyone["properties"]["destinationAddressPrefix"] = json!("*");
        assert!(
            grant_shape(&everyone, port(22)).is_err(),
            "a grant opens one VM's address"
        );
        let wide = rule(
            json!({"direction": "Inbound", "access": "Allow", "protocol": "Tcp",
            "destinationPortRange": "1-65535", "sourceAddressPrefix": "*"}),
        );
        assert!(grant_shape(&wide, port(22)).is_err());
        let out = rule(
            json!({"direction": "Outbound", "access": "Allow", "protocol": "Tcp",
            "destinationPortRange": "22", "sourceAddressPrefix": "*"}),
        );
        assert!(grant_shape(&out, port(22)).is_err());
    }

    #[test]
    fn resolution_reasons() {
        assert_eq!(
            primary_nic(&json!({})),
            Err("the VM has no network interface".to_owned())
        );
        let two = json!({"properties": {"networkProfile": {"networkInterfaces": [{"id": "a"}, {"id": "b"}]}}});
        assert!(
            primary_nic(&two)
                .unwrap_err()
                .contains("none is marked primary")
        );
        let one = json!({"properties": {"networkProfile": {"networkInterfaces": [{"id": "a"}]}}});
        assert_eq!(primary_nic(&one), Ok("a".to_owned()));
        let nic = json!({"properties": {"ipConfigurations": [{"properties": {"primary": true, "privateIPAddress": "10.0.0.4", "subnet": {"id": "s"}}}]}});
        assert_eq!(
            primary_address(&nic),
            Ok(("10.0.0.4".parse().unwrap(), Some("s".to_owned())))
        );
        assert!(primary_address(&json!({"properties": {"ipConfigurations": [{}]}})).is_err());
    }

    #[test]
    fn only_the_managed_subscriptions_are_supported() {
        let sub = "00000000-0000-0000-0000-00000000abcd";
        let VmId::Azure(vm) = VmId::parse(&format!(
            "/subscriptions/{}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/web-01",
            sub.to_uppercase()
        ))
        .unwrap() else {
            panic!("an Azure VM")
        };
        assert_eq!(unmanaged(&[sub.to_owned()], &vm), None);
        let other = "11111111-0000-0000-0000-000000000000".to_owned();
        let reason = unmanaged(std::slice::from_ref(&other), &vm).unwrap();
        assert!(
            reason.contains(sub)
                && reason.contains(&format!("JITVM_AZURE_SUBSCRIPTIONS is {other}")),
            "{reason}"
        );
        let reason = unmanaged(&[], &vm).unwrap();
        assert!(
            reason.contains("JITVM_AZURE_SUBSCRIPTIONS is empty"),
            "{reason}"
        );
    }

    #[test]
    fn stored_rules_drop_read_only_fields() {
        let r = rule(
            json!({"priority": 300, "provisioningState": "Succeeded", "sourceAddressPrefixes": [], "description": null, "protocol": "Tcp"}),
        );
        assert_eq!(
            writable_properties(&r),
            json!({"priority": 300, "protocol": "Tcp"})
        );
        assert_eq!(
            subscription_of(
                "/subscriptions/ABC/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n"
            ),
            "abc"
        );
        assert_eq!(normalise_address("10.0.0.4/32"), "10.0.0.4");
    }
}

//! One [`Firewall`] over every cloud of the deployment: calls about a VM go
//! to its cloud's adapter; the sweep and the VM list cover all of them.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{Cloud, Grant, Justification, Policy, VmId};
use crate::ports::{
    AdapterError, Enablement, Exposure, Firewall, FoundRule, Opened, RuleKey, VmFacts,
};

/// The firewalls of a deployment; a cloud left `None` is not configured.
#[derive(Clone, Default)]
pub struct Clouds {
    pub aws: Option<Arc<dyn Firewall>>,
    pub azure: Option<Arc<dyn Firewall>>,
}

impl Clouds {
    fn of(&self, cloud: Cloud) -> Result<&dyn Firewall, AdapterError> {
        let (found, name, how) = match cloud {
            Cloud::Aws => (&self.aws, "AWS", "AWS credentials and JITVM_REGIONS"),
            Cloud::Azure => (
                &self.azure,
                "Azure",
                "JITVM_AZURE_TENANT_ID, JITVM_AZURE_CLIENT_ID and a client secret",
            ),
        };
        found.as_deref().ok_or_else(|| {
            AdapterError::permanent(
                "CloudNotConfigured",
                format!("this deployment does not manage {name} VMs; configure {how}"),
            )
        })
    }

    fn all(&self) -> impl Iterator<Item = &dyn Firewall> {
        self.aws.iter().chain(self.azure.iter()).map(|f| f.as_ref())
    }
}

#[async_trait]
impl Firewall for Clouds {
    async fn inspect(&self, vm: &VmId) -> Result<VmFacts, AdapterError> {
        self.of(vm.cloud())?.inspect(vm).await
    }

    async fn list_vms(&self) -> Result<Vec<VmFacts>, AdapterError> {
        let mut out = Vec::new();
        for f in self.all() {
            out.extend(f.list_vms().await?);
        }
        Ok(out)
    }

    async fn enable(
        &self,
        policy: &Policy,
        already_closed: &[Exposure],
    ) -> Result<Enablement, AdapterError> {
        self.of(policy.vm().cloud())?
            .enable(policy, already_closed)
            .await
    }

    async fn disable(
        &self,
        vm: &VmId,
        closed: &[Exposure],
    ) -> Result<Vec<FoundRule>, AdapterError> {
        self.of(vm.cloud())?.disable(vm, closed).await
    }

    async fn restore_standing(&self, vm: &VmId, closed: &[Exposure]) -> Result<(), AdapterError> {
        self.of(vm.cloud())?.restore_standing(vm, closed).await
    }

    async fn open(
        &self,
        grant: &Grant,
        justification: Option<&Justification>,
    ) -> Result<Opened, AdapterError> {
        self.of(grant.vm().cloud())?
            .open(grant, justification)
            .await
    }

    async fn rules(&self) -> Result<Vec<FoundRule>, AdapterError> {
        // One cloud being down must not stop the other's sweep.
        let mut out = Vec::new();
        let mut failures = Vec::new();
        let clouds = self.all().count();
        for f in self.all() {
            match f.rules().await {
                Ok(rules) => out.extend(rules),
                Err(e) => {
                    tracing::error!(error = %e, "cannot list the rules of one cloud; sweeping the others");
                    failures.push(e);
                }
            }
        }
        if clouds > 0 && failures.len() == clouds {
            return Err(failures.remove(0));
        }
        Ok(out)
    }

    async fn rules_of(&self, vm: &VmId) -> Result<Vec<FoundRule>, AdapterError> {
        self.of(vm.cloud())?.rules_of(vm).await
    }

    async fn revoke(&self, rules: &[RuleKey]) -> Result<usize, AdapterError> {
        let (aws, azure): (Vec<RuleKey>, Vec<RuleKey>) =
            rules.iter().cloned().partition(|k| k.cloud == Cloud::Aws);
        let mut n = 0;
        if !aws.is_empty() {
            n += self.of(Cloud::Aws)?.revoke(&aws).await?;
        }
        if !azure.is_empty() {
            n += self.of(Cloud::Azure)?.revoke(&azure).await?;
        }
        Ok(n)
    }
}

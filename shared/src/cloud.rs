//! One [`Firewall`] over every cloud of the deployment: calls about a VM go
//! to its cloud's adapter; the sweep and the VM list cover all of them.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{Cloud, Grant, Justification, Policy, VmId};
use crate::ports::{
    AdapterError, Detached, Enablement, Exposure, Firewall, FoundRule, Opened, RuleKey, Scope,
    VmFacts,
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

    fn scopes(&self) -> Vec<Scope> {
        self.all().flat_map(|f| f.scopes()).collect()
    }

    fn scope_of(&self, vm: &VmId) -> Option<Scope> {
        self.of(vm.cloud()).ok()?.scope_of(vm)
    }

    async fn rules_in(&self, scope: &Scope) -> Result<Vec<FoundRule>, AdapterError> {
        self.of(scope.cloud)?.rules_in(scope).await
    }

    async fn rules_at(&self, keys: &[RuleKey]) -> Result<Vec<FoundRule>, AdapterError> {
        let (aws, azure) = by_cloud(keys);
        let (aws, azure) = futures_util::join!(
            self.each(Cloud::Aws, &aws, |f, keys| f.rules_at(keys)),
            self.each(Cloud::Azure, &azure, |f, keys| f.rules_at(keys)),
        );
        let mut found = aws?.unwrap_or_default();
        found.extend(azure?.unwrap_or_default());
        Ok(found)
    }

    async fn rules_of(&self, vm: &VmId) -> Result<Vec<FoundRule>, AdapterError> {
        self.of(vm.cloud())?.rules_of(vm).await
    }

    async fn revoke(&self, rules: &[RuleKey]) -> Result<usize, AdapterError> {
        // Each cloud at once: one slow cloud does not hold the other's
        // rules open. Both are tried even when one fails.
        let (aws, azure) = by_cloud(rules);
        let (aws, azure) = futures_util::join!(
            self.each(Cloud::Aws, &aws, |f, keys| f.revoke(keys)),
            self.each(Cloud::Azure, &azure, |f, keys| f.revoke(keys)),
        );
        Ok(aws?.unwrap_or(0) + azure?.unwrap_or(0))
    }

    async fn keep_exclusive(&self, scope: &Scope) -> Result<Vec<Detached>, AdapterError> {
        self.of(scope.cloud)?.keep_exclusive(scope).await
    }
}

impl Clouds {
    /// Runs `call` on `cloud`'s firewall with `keys`; `None` when there are
    /// no keys of that cloud.
    async fn each<'a, T, F>(
        &'a self,
        cloud: Cloud,
        keys: &'a [RuleKey],
        call: impl FnOnce(&'a dyn Firewall, &'a [RuleKey]) -> F,
    ) -> Result<Option<T>, AdapterError>
    where
        F: std::future::Future<Output = Result<T, AdapterError>>,
    {
        if keys.is_empty() {
            return Ok(None);
        }
        call(self.of(cloud)?, keys).await.map(Some)
    }
}

/// `keys` split into the AWS ones and the Azure ones.
fn by_cloud(keys: &[RuleKey]) -> (Vec<RuleKey>, Vec<RuleKey>) {
    keys.iter().cloned().partition(|k| k.cloud == Cloud::Aws)
}

//! Naming a VM the short way, by the rules of the Slack command
//! (`jitvm_core::slack::resolve_vm`): a full id as it is, otherwise the one
//! VM whose instance id, Azure name or `resourceGroup/name` it is,
//! case-insensitive. Slack matches among the VMs with a policy; here the
//! candidates are every VM `GET /v1/vms` lists, so that `jitvm policy put`
//! can name a VM that has none yet.

use jitvm_core::VmId;

/// At most this many candidates are listed when a short name is ambiguous.
const MAX_LISTED: usize = 10;

/// Whether `reference` is a full id, needing no list of VMs to resolve.
pub fn is_full_id(reference: &str) -> bool {
    let r = reference.trim();
    r.starts_with("arn:") || r.starts_with('/')
}

/// The VM `reference` names among `vms`; the error says how to name it, and
/// lists the candidates only when the name is ambiguous.
pub fn resolve(reference: &str, vms: &[VmId]) -> Result<VmId, String> {
    let reference = reference.trim();
    if is_full_id(reference) {
        return VmId::parse(reference).map_err(|e| e.to_string());
    }
    let wanted = reference.to_ascii_lowercase();
    let mut found: Vec<&VmId> = Vec::new();
    for vm in vms {
        if matches(vm, &wanted) && !found.contains(&vm) {
            found.push(vm);
        }
    }
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "no VM is called `{}`; name it by its EC2 instance id (such as \
             i-0abc123def4567890), its Azure VM name or resourceGroup/name, or its full \
             instance ARN or Azure resource id (`jitvm vms` lists them)",
            shorten(reference)
        )),
        several => {
            let mut listed: Vec<String> = several
                .iter()
                .take(MAX_LISTED)
                .map(ToString::to_string)
                .collect();
            if several.len() > MAX_LISTED {
                listed.push(format!("and {} more", several.len() - MAX_LISTED));
            }
            Err(format!(
                "`{}` names {} VMs: {}; name one of them by its full id, or an Azure VM as resourceGroup/name",
                shorten(reference),
                several.len(),
                listed.join(", ")
            ))
        }
    }
}

fn matches(vm: &VmId, wanted: &str) -> bool {
    match vm {
        VmId::Aws(i) => wanted == i.instance_id(),
        // A parsed Azure id keeps these lower case.
        VmId::Azure(v) => match wanted.split_once('/') {
            Some((group, name)) => group == v.resource_group() && name == v.name(),
            None => wanted == v.name(),
        },
    }
}

fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(80).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC2_A: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc1234";
    const EC2_B: &str = "arn:aws:ec2:eu-west-1:210987654321:instance/i-0abc1234";
    const AZ_1: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Prod/providers/Microsoft.Compute/virtualMachines/Web-1";
    const AZ_2: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Test/providers/Microsoft.Compute/virtualMachines/web-1";

    fn vms(ids: &[&str]) -> Vec<VmId> {
        ids.iter().map(|i| VmId::parse(i).unwrap()).collect()
    }

    #[test]
    fn short_names_resolve_like_slack() {
        let all = vms(&[EC2_A, AZ_1, AZ_2]);
        assert_eq!(resolve("I-0ABC1234", &all), Ok(all[0].clone()));
        assert_eq!(resolve("prod/WEB-1", &all), Ok(all[1].clone()));
        assert_eq!(
            resolve(EC2_B, &all).map(|v| v.to_string()),
            Ok(EC2_B.into())
        );
    }

    #[test]
    fn ambiguous_and_unknown_names_are_refused() {
        let all = vms(&[EC2_A, EC2_B, AZ_1, AZ_2]);
        let err = resolve("web-1", &all).unwrap_err();
        assert!(err.contains("names 2 VMs"), "{err}");
        let err = resolve("i-0abc1234", &all).unwrap_err();
        assert!(err.contains(EC2_A) && err.contains(EC2_B), "{err}");
        let err = resolve("db", &all).unwrap_err();
        assert!(
            err.contains("no VM is called `db`") && !err.contains(EC2_A),
            "{err}"
        );
        assert!(resolve("arn:aws:ec2:x", &all).is_err());
    }
}

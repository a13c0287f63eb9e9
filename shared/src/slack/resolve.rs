//! Naming a VM the short way in chat: the full ids are long, so a person may
//! give the EC2 instance id or the Azure VM name instead, and jitvm finds
//! the VM among those that have a JIT policy.

use crate::domain::{Policy, VmId};

/// At most this many candidates are listed when a short name is ambiguous.
const MAX_LISTED: usize = 10;

/// The VM `reference` names: a full instance ARN or Azure resource id as
/// it is, otherwise the one VM among `policies` whose instance id (`i-...`),
/// Azure name or `resourceGroup/name` it is (case-insensitive, as Azure and
/// EC2 ids are). The error says how to name the VM; it lists VMs only when
/// the name is ambiguous, and then only those the name matched.
pub fn resolve_vm(reference: &str, policies: &[Policy]) -> Result<VmId, String> {
    resolve_among(
        reference,
        policies.iter().map(Policy::vm),
        "no VM with JIT access enabled",
    )
}

/// [`resolve_vm`] among any `candidates` (the CLI's: the VMs it may
/// request, or every VM listed); `none` begins the message for a name that
/// matches none of them ("no VM with JIT access enabled").
pub fn resolve_among<'a>(
    reference: &str,
    candidates: impl IntoIterator<Item = &'a VmId>,
    none: &str,
) -> Result<VmId, String> {
    let reference = reference.trim();
    if is_full_id(reference) {
        return VmId::parse(reference).map_err(|e| e.to_string());
    }
    let wanted = reference.to_ascii_lowercase();
    let mut found: Vec<&VmId> = Vec::new();
    for vm in candidates {
        if matches(vm, &wanted) && !found.contains(&vm) {
            found.push(vm);
        }
    }
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "{none} is called `{}`; name it by its EC2 instance id \
             (such as i-0abc123def4567890), its Azure VM name or resourceGroup/name, \
             or its full instance ARN or Azure resource id",
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

/// Whether `reference` is a full id (an instance ARN or an Azure resource
/// id), which needs no list of VMs to resolve.
pub fn is_full_id(reference: &str) -> bool {
    let r = reference.trim();
    r.starts_with("arn:") || r.starts_with('/')
}

fn matches(vm: &VmId, wanted: &str) -> bool {
    match vm {
        // Instance ids are lower-case hex after `i-`, unique per region
        // and account, but not across them: hence the ambiguity check.
        VmId::Aws(i) => wanted == i.instance_id(),
        // Azure keeps these lower case in a parsed id, and compares them
        // without regard to case.
        VmId::Azure(v) => match wanted.split_once('/') {
            Some((group, name)) => group == v.resource_group() && name == v.name(),
            None => wanted == v.name(),
        },
    }
}

fn shorten(text: &str) -> String {
    super::shorten(text, 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PolicyDocument;
    use serde_json::json;

    const EC2_A: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc1234";
    const EC2_B: &str = "arn:aws:ec2:eu-west-1:210987654321:instance/i-0abc1234";
    const EC2_C: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0def5678";
    const AZ_1: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Prod/providers/Microsoft.Compute/virtualMachines/Web-1";
    const AZ_2: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Test/providers/Microsoft.Compute/virtualMachines/web-1";
    const AZ_3: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/Test/providers/Microsoft.Compute/virtualMachines/db";

    fn policies(ids: &[&str]) -> Vec<Policy> {
        ids.iter()
            .map(|id| {
                Policy::parse(
                    VmId::parse(id).unwrap(),
                    &PolicyDocument::from_value(json!({"ports": [22]})).unwrap(),
                )
                .unwrap()
            })
            .collect()
    }

    fn vm(id: &str) -> VmId {
        VmId::parse(id).unwrap()
    }

    #[test]
    fn full_ids_parse_without_a_policy() {
        assert_eq!(resolve_vm(EC2_A, &[]), Ok(vm(EC2_A)));
        assert_eq!(resolve_vm(&format!(" {AZ_1} "), &[]), Ok(vm(AZ_1)));
        let err = resolve_vm("arn:aws:ec2:us-east-1:1:instance/i-1", &[]).unwrap_err();
        assert!(err.contains("12 digits"), "{err}");
    }

    #[test]
    fn short_names_match_vms_with_policies() {
        let all = policies(&[EC2_A, EC2_C, AZ_1, AZ_2, AZ_3]);
        assert_eq!(resolve_vm("i-0def5678", &all), Ok(vm(EC2_C)));
        assert_eq!(resolve_vm("I-0DEF5678", &all), Ok(vm(EC2_C)));
        assert_eq!(resolve_vm("DB", &all), Ok(vm(AZ_3)));
        assert_eq!(resolve_vm("prod/WEB-1", &all), Ok(vm(AZ_1)));
        assert_eq!(resolve_vm("Test/web-1", &all), Ok(vm(AZ_2)));
    }

    #[test]
    fn ambiguity_lists_the_candidates_only() {
        let all = policies(&[EC2_A, EC2_B, EC2_C, AZ_1, AZ_2, AZ_3]);
        let err = resolve_vm("web-1", &all).unwrap_err();
        assert!(err.contains("names 2 VMs"), "{err}");
        assert!(err.contains(&vm(AZ_1).to_string()) && err.contains(&vm(AZ_2).to_string()));
        assert!(!err.contains("/db"), "{err}");
        let err = resolve_vm("i-0abc1234", &all).unwrap_err();
        assert!(err.contains(EC2_A) && err.contains(EC2_B), "{err}");
        assert!(!err.contains("i-0def5678"), "{err}");
    }

    #[test]
    fn no_match_says_how_to_name_it_and_lists_nothing() {
        let all = policies(&[EC2_A, AZ_1]);
        for reference in ["web-2", "i-0ffff", "", "prod/", "/", "a/b/c", "web-1;--"] {
            let err = resolve_vm(reference, &all).unwrap_err();
            assert!(
                !err.contains("i-0abc1234") && !err.contains("web-1/"),
                "{err}"
            );
        }
        let err = resolve_vm("web-2", &all).unwrap_err();
        assert!(
            err.contains("instance id") && err.contains("resourceGroup/name"),
            "{err}"
        );
        let err = resolve_vm(&"x".repeat(5000), &all).unwrap_err();
        assert!(err.len() < 500, "{err}");
    }
}

//! Virtual machine identifiers: an EC2 instance ARN or an Azure VM resource id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a VM id, said so that the caller can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmIdError {
    #[error(
        "{0:?} is not a VM id; use an EC2 instance ARN (arn:aws:ec2:<region>:<account>:instance/<id>) \
         or an Azure VM resource id (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>)"
    )]
    Unrecognised(String),
    #[error("invalid EC2 instance ARN {arn:?}: {reason}")]
    Aws { arn: String, reason: &'static str },
    #[error("invalid Azure VM resource id {id:?}: {reason}")]
    Azure { id: String, reason: &'static str },
    #[error(
        "a VM id is at most {max} bytes; this one has {len} (it starts {start:?}); send the id alone, as its cloud writes it"
    )]
    TooLong {
        len: usize,
        max: usize,
        start: String,
    },
    #[error(
        "{id:?} begins or ends with U+{code:04X}, whitespace or a control character; send the id without it"
    )]
    Edge { id: String, code: u32 },
}

/// The cloud a VM lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Cloud {
    Aws,
    Azure,
}

/// One VM, in the form its cloud names it. Parsing normalises the id, so two
/// spellings of the same VM compare equal and key the same stored policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum VmId {
    Aws(AwsInstance),
    Azure(AzureVm),
}

/// An EC2 instance, from `arn:<partition>:ec2:<region>:<account>:instance/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsInstance {
    partition: String,
    region: String,
    account: String,
    instance_id: String,
}

/// An Azure VM, from its ARM resource id. ARM ids are case-insensitive, so
/// the subscription, resource group and name are kept in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AzureVm {
    subscription: String,
    resource_group: String,
    name: String,
}

impl VmId {
    /// The longest id accepted, in bytes. Real ids are far shorter; the bound
    /// keeps storage keys and log lines small whatever is sent.
    pub const MAX_LEN: usize = 512;

    /// Parses and normalises a VM id. Spaces around it are ignored (a
    /// slip of copy and paste); any other whitespace or control character
    /// at either end is refused rather than trimmed, so that an id padded
    /// with a line break or a no-break space is never taken for the id
    /// without it.
    pub fn parse(text: &str) -> Result<Self, VmIdError> {
        let text = text.trim_matches(' ');
        let stray = |c: &char| c.is_whitespace() || c.is_control();
        if let Some(c) = text
            .chars()
            .next()
            .filter(stray)
            .or_else(|| text.chars().next_back().filter(stray))
        {
            return Err(VmIdError::Edge {
                id: start_of(text),
                code: u32::from(c),
            });
        }
        if text.len() > Self::MAX_LEN {
            return Err(VmIdError::TooLong {
                len: text.len(),
                max: Self::MAX_LEN,
                start: start_of(text),
            });
        }
        if text.starts_with("arn:") {
            return AwsInstance::parse(text).map(VmId::Aws);
        }
        if text.starts_with('/') {
            return AzureVm::parse(text).map(VmId::Azure);
        }
        Err(VmIdError::Unrecognised(text.to_owned()))
    }

    pub fn cloud(&self) -> Cloud {
        match self {
            VmId::Aws(_) => Cloud::Aws,
            VmId::Azure(_) => Cloud::Azure,
        }
    }

    /// A short name for people: the instance id or the Azure VM name.
    pub fn short_name(&self) -> &str {
        match self {
            VmId::Aws(i) => i.instance_id(),
            VmId::Azure(v) => v.name(),
        }
    }
}

/// The first characters of `text`, enough for a person to recognise what
/// they sent without echoing all of a long input.
fn start_of(text: &str) -> String {
    const SHOWN: usize = 80;
    if text.chars().count() <= SHOWN {
        return text.to_owned();
    }
    format!("{}...", text.chars().take(SHOWN).collect::<String>())
}

impl AwsInstance {
    pub fn parse(arn: &str) -> Result<Self, VmIdError> {
        let bad = |reason| VmIdError::Aws {
            arn: arn.to_owned(),
            reason,
        };
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [arn_lit, partition, service, region, account, resource] = parts[..] else {
            return Err(bad(
                "expected arn:<partition>:ec2:<region>:<account>:instance/<id>",
            ));
        };
        if arn_lit != "arn" || !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
            return Err(bad("the partition must be aws, aws-cn or aws-us-gov"));
        }
        if service != "ec2" {
            return Err(bad("the service must be ec2"));
        }
        if !is_region(region) {
            return Err(bad("the region must look like us-east-1"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the account must be 12 digits"));
        }
        let Some(instance_id) = resource.strip_prefix("instance/") else {
            return Err(bad("the resource must be instance/<id>"));
        };
        if !is_instance_id(instance_id) {
            return Err(bad(
                "the instance id must be i- followed by 8 or 17 lower-case hex digits",
            ));
        }
        Ok(Self {
            partition: partition.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            instance_id: instance_id.to_owned(),
        })
    }

    pub fn partition(&self) -> &str {
        &self.partition
    }
    pub fn region(&self) -> &str {
        &self.region
    }
    pub fn account(&self) -> &str {
        &self.account
    }
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The name of the security group jitvm dedicates to this instance.
    pub fn jit_group_name(&self) -> String {
        format!("jitvm-{}", self.instance_id)
    }
}

fn is_region(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(first), Some(_), Some(last)) = (parts.next(), parts.next(), s.rsplit('-').next())
    else {
        return false;
    };
    s.len() <= 32
        && first.len() == 2
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
}

fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl AzureVm {
    pub fn parse(id: &str) -> Result<Self, VmIdError> {
        let bad = |reason| VmIdError::Azure {
            id: id.to_owned(),
            reason,
        };
        // A trailing `/` is an empty last segment, not the VM's name; it
        // is refused rather than trimmed, so that a `/..` or `/.` whose dots
        // something dropped (Slack drops a word's final `.`) is never read
        // as the VM before it.
        if id.ends_with('/') {
            return Err(bad(
                "it ends with '/'; an Azure VM id ends with the VM's name",
            ));
        }
        let segments: Vec<&str> = id.split('/').collect();
        let [
            "",
            subs,
            subscription,
            rgs,
            resource_group,
            providers,
            namespace,
            kind,
            name,
        ] = segments[..]
        else {
            return Err(bad(
                "expected /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>",
            ));
        };
        let keyword = |actual: &str, expected: &str| actual.eq_ignore_ascii_case(expected);
        if !keyword(subs, "subscriptions")
            || !keyword(rgs, "resourceGroups")
            || !keyword(providers, "providers")
        {
            return Err(bad(
                "expected /subscriptions/<sub>/resourceGroups/<rg>/providers/...",
            ));
        }
        if !keyword(namespace, "Microsoft.Compute") || !keyword(kind, "virtualMachines") {
            return Err(bad(
                "the resource type must be Microsoft.Compute/virtualMachines",
            ));
        }
        if !is_guid(subscription) {
            return Err(bad("the subscription must be a GUID"));
        }
        if !is_resource_group(resource_group) {
            return Err(bad(
                "the resource group must be 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'",
            ));
        }
        if !is_vm_name(name) {
            return Err(bad(
                "the VM name must be 1-64 letters, digits, '-', '_' or '.', not starting with '_' nor ending with '.' or '-'",
            ));
        }
        Ok(Self {
            subscription: subscription.to_ascii_lowercase(),
            resource_group: resource_group.to_ascii_lowercase(),
            name: name.to_ascii_lowercase(),
        })
    }

    pub fn subscription(&self) -> &str {
        &self.subscription
    }
    pub fn resource_group(&self) -> &str {
        &self.resource_group
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn is_guid(s: &str) -> bool {
    let lens: Vec<usize> = s.split('-').map(str::len).collect();
    lens == [8, 4, 4, 4, 12] && s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

fn is_resource_group(s: &str) -> bool {
    (1..=90).contains(&s.len())
        && !s.ends_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.()".contains(&b))
}

/// Azure's rule for VM names: 1-64 letters, digits, `-`, `_` or `.`, not
/// starting with `_` nor ending with `.` or `-` (so never `.` or `..`, which
/// would change the meaning of a URL path).
fn is_vm_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !s.starts_with('_')
        && !s.ends_with(['.', '-'])
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmId::Aws(i) => i.fmt(f),
            VmId::Azure(v) => v.fmt(f),
        }
    }
}

impl fmt::Display for AwsInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:ec2:{}:{}:instance/{}",
            self.partition, self.region, self.account, self.instance_id
        )
    }
}

impl fmt::Display for AzureVm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

impl FromStr for VmId {
    type Err = VmIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for VmId {
    type Error = VmIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<VmId> for String {
    fn from(value: VmId) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc123def4567890";
    const AZ: &str = "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourceGroups/myRg1/providers/Microsoft.Compute/virtualMachines/vm1";

    #[test]
    fn parses_and_prints_an_instance_arn() {
        let vm = VmId::parse(ARN).unwrap();
        let VmId::Aws(i) = &vm else { panic!() };
        assert_eq!(i.region(), "eu-west-1");
        assert_eq!(i.account(), "123456789012");
        assert_eq!(i.instance_id(), "i-0abc123def4567890");
        assert_eq!(i.jit_group_name(), "jitvm-i-0abc123def4567890");
        assert_eq!(vm.to_string(), ARN);
        assert_eq!(vm.cloud(), Cloud::Aws);
        assert!(
            VmId::parse("arn:aws-us-gov:ec2:us-gov-west-1:123456789012:instance/i-0123abcd")
                .is_ok()
        );
    }

    #[test]
    fn refuses_malformed_arns_with_the_reason() {
        for (arn, reason) in [
            (
                "arn:aws:ec2:eu-west-1:123456789012:volume/vol-1",
                "instance/<id>",
            ),
            (
                "arn:aws:s3:eu-west-1:123456789012:instance/i-0abc1234",
                "ec2",
            ),
            (
                "arn:aws:ec2:eu-west-1:1234:instance/i-0abc1234",
                "12 digits",
            ),
            ("arn:aws:ec2:EU:123456789012:instance/i-0abc1234", "region"),
            ("arn:aws:ec2:eu-west-1:123456789012:instance/i-XYZ", "hex"),
            (
                "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc1234/x",
                "hex",
            ),
            (
                "arn:evil:ec2:eu-west-1:123456789012:instance/i-0abc1234",
                "partition",
            ),
            ("arn:aws:ec2", "expected"),
        ] {
            let err = VmId::parse(arn).unwrap_err().to_string();
            assert!(err.contains(reason), "{arn}: {err}");
        }
    }

    #[test]
    fn azure_ids_are_case_insensitive() {
        let a = VmId::parse(AZ).unwrap();
        let b = VmId::parse(
            &AZ.to_uppercase()
                .replace("/SUBSCRIPTIONS", "/subscriptions"),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.to_string(),
            "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourceGroups/myrg1/providers/Microsoft.Compute/virtualMachines/vm1"
        );
        assert_eq!(a.short_name(), "vm1");
        assert_eq!(a.cloud(), Cloud::Azure);
    }

    #[test]
    fn refuses_vm_names_azure_refuses() {
        let id = |name: &str| {
            format!(
                "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
            )
        };
        assert!(VmId::parse(&id("web-1.prod")).is_ok());
        for bad in ["..", ".", "_web", "web-", "web."] {
            assert!(VmId::parse(&id(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_other_azure_resources() {
        for (id, reason) in [
            (
                "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic",
                "Microsoft.Compute",
            ),
            (
                "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
                "GUID",
            ),
            (
                "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourceGroups/r g/providers/Microsoft.Compute/virtualMachines/vm",
                "resource group",
            ),
            (
                "/subscriptions/20ff7fc3-e762-44dd-bd96-b71116dcdc23/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/extensions/x",
                "expected",
            ),
        ] {
            let err = VmId::parse(id).unwrap_err().to_string();
            assert!(err.contains(reason), "{id}: {err}");
        }
        assert!(matches!(
            VmId::parse("i-0abc1234"),
            Err(VmIdError::Unrecognised(_))
        ));
        assert!(matches!(
            VmId::parse(&"/".repeat(10_000)),
            Err(VmIdError::TooLong { len: 10_000, .. })
        ));
    }

    fn azure(rg: &str, name: &str) -> String {
        format!(
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
        )
    }

    #[test]
    fn names_are_bounded_by_azure_and_ids_by_512_bytes() {
        assert!(VmId::parse(&azure(&"g".repeat(90), &"w".repeat(64))).is_ok());
        let err = VmId::parse(&azure(&"g".repeat(91), "vm")).unwrap_err();
        assert!(err.to_string().contains("1-90"), "{err}");
        let err = VmId::parse(&azure("rg", &"w".repeat(65))).unwrap_err();
        assert!(err.to_string().contains("1-64"), "{err}");
        let long = format!("{}{}", azure("rg", "vm"), "/..".repeat(200));
        let err = VmId::parse(&long).unwrap_err();
        assert!(
            matches!(err, VmIdError::TooLong { len, max: 512, .. } if len == long.len()),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(
            shown.contains("at most 512") && shown.len() < 400,
            "{shown}"
        );
    }

    #[test]
    fn a_trailing_slash_is_not_the_vm() {
        for tail in ["/", "//", "/./", "/../"] {
            let id = format!("{}{tail}", azure("rg", "vm"));
            let err = VmId::parse(&id).unwrap_err().to_string();
            assert!(err.contains("ends with '/'"), "{id}: {err}");
        }
    }

    #[test]
    fn spaces_around_an_id_are_ignored_other_whitespace_and_controls_refused() {
        let id = azure("rg", "vm");
        assert_eq!(
            VmId::parse(&format!("  {id} ")).unwrap(),
            VmId::parse(&id).unwrap()
        );
        for (padded, code) in [
            (format!("{id}\n"), "U+000A"),
            (format!("\t{id}"), "U+0009"),
            (format!("\0{id}"), "U+0000"),
            (format!("{id}\u{a0}"), "U+00A0"),
            (format!("\u{3000}{id}"), "U+3000"),
            (format!(" {id}\u{85} "), "U+0085"),
            (format!("{ARN}\r\n"), "U+000A"),
        ] {
            let err = VmId::parse(&padded).unwrap_err();
            assert!(matches!(err, VmIdError::Edge { .. }), "{padded:?}: {err:?}");
            assert!(err.to_string().contains(code), "{padded:?}: {err}");
        }
        // Inside an id the part at fault is named.
        let err = VmId::parse(&azure("rg", "web\n01"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the VM name must be"), "{err}");
    }

    #[test]
    fn look_alikes_are_not_the_vm() {
        for id in [
            azure("rg", "w\u{0435}b-01"),
            azure("rg", "web-0\u{212A}"),
            azure("rg", "web\u{2010}01"),
            azure("rg", "web-\u{200B}01"),
            azure("rg", "web-\u{202E}10"),
            azure("rg", "web-01%2F.."),
            azure("rg%2F..%2Fother", "vm"),
            azure("rg", "vm").replace("Compute", "C\u{043E}mpute"),
            azure("rg", "vm").replace("virtualMachines/", "virtualMachines\u{FF0F}"),
            azure("rg", "vm").replace("00000000-", "\u{FF10}0000000-"),
        ] {
            assert!(VmId::parse(&id).is_err(), "{id:?}");
        }
    }

    #[test]
    fn serde_is_a_string() {
        let vm: VmId = serde_json::from_str(&format!("{ARN:?}")).unwrap();
        assert_eq!(serde_json::to_string(&vm).unwrap(), format!("{ARN:?}"));
        assert!(serde_json::from_str::<VmId>("\"vm1\"").is_err());
    }
}

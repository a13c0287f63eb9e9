//! The whole local stack in one test: moto (one region per test, so tests
//! cannot see each other's rules), the local host's handlers behind a real
//! HTTP listener on loopback, and clients to look at EC2 directly.

use std::net::SocketAddr;
use std::sync::Arc;

use jitvm_core::aws::{AwsStack, CallCounter};
use jitvm_core::config::Settings;
use jitvm_local::{Host, Tokens};

use crate::Moto;

/// Tokens every stack accepts: `admin` may write policies.
pub const ADMIN: &str = "admin-token-0001";
pub const ALICE: &str = "alice-token-0001";
pub const BOB: &str = "bob-token-00001";

pub struct Stack {
    pub host: Arc<Host>,
    pub base: String,
    pub http: reqwest::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub region: String,
    pub counter: CallCounter,
}

impl Stack {
    /// Starts a stack in `region` (give each test its own).
    pub async fn start(region: &str) -> Stack {
        let moto = Moto::shared();
        let config = moto.config_in(region).await;
        let settings = Settings::from_lookup(|name| match name {
            "JITVM_ADMINS" => Some("local:admin".into()),
            "JITVM_POLICIES_TABLE" => Some(crate::unique("policies")),
            "JITVM_REQUESTS_TABLE" => Some(crate::unique("requests")),
            "JITVM_REQUEST_QUEUE" => Some(format!("{}.fifo", crate::unique("requests"))),
            "JITVM_REGIONS" => Some(region.to_owned()),
            _ => None,
        })
        .expect("test settings are valid");
        let counter = CallCounter::default();
        let aws = AwsStack::with_config(config.clone(), &settings, Some(counter.clone()));
        let tokens = Tokens::parse(&format!("admin={ADMIN},alice={ALICE},bob={BOB}"))
            .expect("test tokens are valid");
        let host = Arc::new(
            Host::start(settings, aws, tokens, Arc::new(jiff::Timestamp::now))
                .await
                .expect("the host starts against moto"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let router = host.clone().router();
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Stack {
            host,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            ec2: aws_sdk_ec2::Client::new(&config),
            sqs: aws_sdk_sqs::Client::new(&config),
            region: region.to_owned(),
            counter,
        }
    }

    /// Sends a request with `token` (none when `None`) and returns the
    /// status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("the host answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a body");
        let value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, value)
    }

    /// The path of a VM's policy.
    pub fn policy_path(vm: &str) -> String {
        format!("/v1/policies/{}", encode(vm))
    }

    /// Every ingress rule of every security group named `name` in this region.
    pub async fn ingress_rules_of_group(
        &self,
        group_id: &str,
    ) -> Vec<aws_sdk_ec2::types::SecurityGroupRule> {
        self.ec2
            .describe_security_group_rules()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("group-id")
                    .values(group_id)
                    .build(),
            )
            .send()
            .await
            .expect("describe rules")
            .security_group_rules
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.is_egress == Some(false))
            .collect()
    }

    /// The id of the security group named `name`, if any.
    pub async fn group_id(&self, name: &str) -> Option<String> {
        self.ec2
            .describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("group-name")
                    .values(name)
                    .build(),
            )
            .send()
            .await
            .expect("describe groups")
            .security_groups
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|g| g.group_id)
    }

    /// Launches an instance in a fresh VPC of this region with `groups`
    /// (given as group names to create with `rules`, see [`Stack::group`]).
    pub async fn instance(&self, group_ids: &[String]) -> Instance {
        let world = crate::ec2_world(&self.ec2, group_ids).await;
        self.adopt(world)
    }

    /// The ARN of a launched instance in this stack's region.
    pub fn adopt(&self, world: crate::Ec2World) -> Instance {
        Instance {
            arn: format!(
                "arn:aws:ec2:{}:123456789012:instance/{}",
                self.region, world.instance_id
            ),
            world,
        }
    }
}

pub struct Instance {
    pub arn: String,
    pub world: crate::Ec2World,
}

/// Percent-encodes a VM id as one path segment.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

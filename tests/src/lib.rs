//! Shared helpers for the integration tests: a real moto server for each
//! test binary, and AWS clients pointed at it.
//!
//! moto runs from the project's virtual environment (`.venv`, made by
//! `bash infra/setup.sh`). When it is missing the tests fail with that
//! command in the message: they never skip.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The command that installs what these tests need.
pub const SETUP_COMMAND: &str = "bash infra/setup.sh";

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A moto server on a free loopback port. It reads its standard input and
/// exits when that closes, so it never outlives the test process, however
/// that process ends.
pub struct Moto {
    endpoint: String,
    _child: Child,
}

impl Moto {
    /// The one moto server of this test binary, started on first use.
    pub fn shared() -> &'static Moto {
        static MOTO: OnceLock<Moto> = OnceLock::new();
        MOTO.get_or_init(Moto::start)
    }

    pub fn start() -> Moto {
        let python = root().join(".venv/bin/python");
        assert!(
            python.exists(),
            "moto is not installed: {} is missing. Run `{SETUP_COMMAND}` from the project root first.",
            python.display()
        );
        let port = free_port();
        let script = format!(
            "import os, sys, threading\n\
             threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n\
             from moto.server import main\n\
             main(['-H', '127.0.0.1', '-p', '{port}'])\n"
        );
        let mut child = Command::new(&python)
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto with {}: {e}. Run `{SETUP_COMMAND}`.",
                    python.display()
                )
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(stderr) = child.stderr.take() {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        err.push_str(&line);
                        err.push('\n');
                    }
                }
                panic!(
                    "moto exited ({status}) before serving: {err}\nIs it installed? Run `{SETUP_COMMAND}`."
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto did not start within 60 s on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Keep moto's log out of the test output, without blocking it on a full pipe.
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
        }
        Moto {
            endpoint,
            _child: child,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An SDK config for region `us-east-1` pointed at this server, with
    /// dummy credentials.
    pub async fn config(&self) -> SdkConfig {
        self.config_in("us-east-1").await
    }

    pub async fn config_in(&self, region: &str) -> SdkConfig {
        config_at(&self.endpoint, region).await
    }
}

/// An SDK config for `region` sending every call to `endpoint` (moto, or a
/// [`fault_proxy::FaultProxy`] in front of it), with moto's dummy
/// credentials.
pub async fn config_at(endpoint: &str, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A name no other test in this run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A VPC with one subnet and one instance in it, whose primary interface
/// carries `groups` (created as open security groups when given as names).
pub struct Ec2World {
    pub vpc_id: String,
    pub subnet_id: String,
    pub instance_id: String,
    pub instance_arn: String,
    pub eni_id: String,
}

/// Creates a VPC (10.0.0.0/16); returns its id.
pub async fn create_vpc(ec2: &aws_sdk_ec2::Client) -> String {
    ec2.create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("create vpc")
        .vpc
        .and_then(|v| v.vpc_id)
        .expect("vpc id")
}

/// Creates a VPC, a subnet and one instance with the given security group
/// ids on its primary interface (a fresh empty group when `groups` is empty).
pub async fn ec2_world(ec2: &aws_sdk_ec2::Client, groups: &[String]) -> Ec2World {
    let vpc_id = create_vpc(ec2).await;
    let subnet_id = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.0.1.0/24")
        .send()
        .await
        .expect("create subnet")
        .subnet
        .and_then(|s| s.subnet_id)
        .expect("subnet id");
    let mut groups = groups.to_vec();
    if groups.is_empty() {
        groups.push(create_group(ec2, &vpc_id, &unique("app")).await);
    }
    launch(ec2, &vpc_id, &subnet_id, &groups).await
}

/// Creates a security group in `vpc_id` and returns its id.
pub async fn create_group(ec2: &aws_sdk_ec2::Client, vpc_id: &str, name: &str) -> String {
    ec2.create_security_group()
        .group_name(name)
        .description("test group")
        .vpc_id(vpc_id)
        .send()
        .await
        .expect("create security group")
        .group_id
        .expect("group id")
}

/// Launches one instance in `subnet_id` with `groups`.
pub async fn launch(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    subnet_id: &str,
    groups: &[String],
) -> Ec2World {
    let image = ec2
        .describe_images()
        .send()
        .await
        .expect("describe images")
        .images
        .and_then(|i| i.into_iter().next())
        .and_then(|i| i.image_id)
        .expect("moto ships images");
    let mut run = ec2
        .run_instances()
        .image_id(image)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet_id);
    for g in groups {
        run = run.security_group_ids(g);
    }
    let instance = run
        .send()
        .await
        .expect("run instances")
        .instances
        .and_then(|i| i.into_iter().next())
        .expect("one instance");
    let instance_id = instance.instance_id.clone().expect("instance id");
    let eni_id = instance
        .network_interfaces
        .unwrap_or_default()
        .into_iter()
        .find(|n| n.attachment.as_ref().and_then(|a| a.device_index) == Some(0))
        .and_then(|n| n.network_interface_id)
        .expect("primary interface");
    Ec2World {
        vpc_id: vpc_id.to_owned(),
        subnet_id: subnet_id.to_owned(),
        instance_arn: format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"),
        instance_id,
        eni_id,
    }
}
pub mod api_gateway;
pub mod arm_fake;
pub mod browser;
pub mod chat_fake;
pub mod fault_proxy;
pub mod lambda;
pub mod stack;
pub mod template;

/// A grant of port 22 for an hour from `source` under `policy`, to
/// `local:alice`, as `evaluate` makes it.
pub fn grant_of(policy: &jitvm_core::Policy, id: &str, source: &str) -> jitvm_core::Grant {
    let body: jitvm_core::InitiateBody =
        serde_json::from_value(serde_json::json!({"virtualMachines": [{
        "id": policy.vm().to_string(),
        "ports": [{"number": 22, "duration": "PT1H", "allowedSourceAddressPrefix": source}]}]}))
        .unwrap();
    let request =
        jitvm_core::AccessRequest::parse(jitvm_core::RequestId::parse(id).unwrap(), &body).unwrap();
    match jitvm_core::evaluate(
        Some(policy),
        &request,
        &jitvm_core::Principal::parse("local:alice").unwrap(),
        None,
        jiff::Timestamp::now(),
    ) {
        jitvm_core::Decision::Approved { mut grants } => grants.remove(0),
        other => panic!("{other:?}"),
    }
}

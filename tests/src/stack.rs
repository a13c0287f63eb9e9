//! The whole local stack in one test: moto (one region per test, so tests
//! cannot see each other's rules), an ARM fake of its own for Azure, the
//! local host's handlers behind a real HTTP listener on loopback, and
//! clients to look at EC2 and the fake directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jitvm_core::aws::CallCounter;
use jitvm_core::azure::RetryPolicy;
use jitvm_core::config::Settings;
use jitvm_local::{Host, Tokens};
use serde_json::{Value, json};

use crate::Moto;
use crate::arm_fake::ArmFake;
use crate::fault_proxy::FaultProxy;

/// Tokens every stack accepts: `admin` may write policies.
pub const ADMIN: &str = "admin-token-0001";
pub const ALICE: &str = "alice-token-0001";
pub const BOB: &str = "bob-token-00001";
/// `local:carol`, a second approver in approval tests.
pub const CAROL: &str = "carol-token-0001";
/// `local:auditor`, in `JITVM_AUDITORS`: reads everything, changes nothing.
pub const AUDITOR: &str = "auditor-token-01";
/// The signing secret of the stack's Slack app.
pub const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

pub struct Stack {
    pub host: Arc<Host>,
    pub base: String,
    pub http: reqwest::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub region: String,
    pub counter: CallCounter,
    /// The Azure side: an ARM fake that only this stack uses.
    pub arm: ArmFake,
    /// Seconds the host's clock runs ahead of the real one ([`Stack::advance`]).
    skew: Arc<AtomicI64>,
}

/// How long the sweep of one scope may take in tests: a hung cloud is
/// given up on sooner than in a deployment.
pub const SCOPE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until `check` holds, looking every 100 ms, for at most `limit`;
/// panics saying `what` did not happen.
pub async fn eventually<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within {} s",
            limit.as_secs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The timer the grant function sets for request `id`'s rules on `vm`, due
/// at `close_at`: its rules read back from `firewall`.
pub async fn timer_of(
    firewall: &dyn jitvm_core::ports::Firewall,
    vm: &str,
    id: &str,
    close_at: jiff::Timestamp,
) -> jitvm_core::expiry::Timer {
    let vm = jitvm_core::VmId::parse(vm).expect("a VM id");
    let rules: Vec<jitvm_core::ports::RuleKey> = firewall
        .rules_of(&vm)
        .await
        .expect("the VM's rules are read")
        .into_iter()
        .filter(|r| {
            r.decoded
                .as_ref()
                .is_ok_and(|m| m.request_id.as_str() == id)
        })
        .map(|r| r.key)
        .collect();
    assert!(!rules.is_empty(), "{id} has rules on {vm}");
    let id = jitvm_core::RequestId::parse(id).expect("a request id");
    jitvm_core::expiry::Timer::expiry(id, vm, rules, close_at)
}

/// The resource group every stack's ARM fake has.
pub const RG_STACK: &str = "rg-stack";

/// The Azure subscription of every stack's ARM fake.
pub const SUBSCRIPTION: &str = "00000000-0000-0000-0000-00000000c0de";

/// The Azure client's patience in tests: the fake's waits are real, but
/// short.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 6,
        max_wait: std::time::Duration::from_secs(2),
        backoff: std::time::Duration::from_millis(20),
        poll: std::time::Duration::from_millis(10),
        operation_timeout: std::time::Duration::from_secs(10),
        request_timeout: std::time::Duration::from_secs(3),
    }
}

/// Settings for the Azure side pointed at `arm`.
pub fn azure_env(arm: &ArmFake, name: &str) -> Option<String> {
    use crate::arm_fake::{CLIENT_ID, CLIENT_SECRET, TENANT};
    match name {
        "JITVM_AZURE_TENANT_ID" => Some(TENANT.into()),
        "JITVM_AZURE_CLIENT_ID" => Some(CLIENT_ID.into()),
        "JITVM_AZURE_CLIENT_SECRET" => Some(CLIENT_SECRET.into()),
        "JITVM_AZURE_AUTHORITY_URL" | "JITVM_AZURE_ARM_URL" => Some(arm.base_url()),
        "JITVM_AZURE_SUBSCRIPTIONS" => Some(SUBSCRIPTION.into()),
        _ => None,
    }
}

impl Stack {
    /// Starts a stack in `region` (give each test its own) of the shared
    /// moto server.
    pub async fn start(region: &str) -> Stack {
        Self::start_on(Moto::shared(), region).await
    }

    /// Starts a stack in `region` of `moto` (a test that stops moto gives
    /// its own).
    pub async fn start_on(moto: &Moto, region: &str) -> Stack {
        Self::start_at(moto.endpoint(), moto.endpoint(), region, &[]).await
    }

    /// Starts a stack in `region` of the shared moto server whose host also
    /// reads the `JITVM_*` settings in `extra`.
    pub async fn start_with(region: &str, extra: &[(&str, &str)]) -> Stack {
        let moto = Moto::shared();
        Self::start_at(moto.endpoint(), moto.endpoint(), region, extra).await
    }

    /// Starts a stack in `region` whose host makes every AWS call (EC2,
    /// DynamoDB, SQS) through `proxy`, so the faults injected there hit
    /// it. The test's own clients ([`Stack::ec2`], [`Stack::sqs`]) go
    /// straight to the proxy's upstream: faults never hit what a test
    /// looks at.
    pub async fn start_behind(proxy: &FaultProxy, region: &str) -> Stack {
        Self::start_at(proxy.endpoint(), proxy.upstream(), region, &[]).await
    }

    /// Starts a stack in `region` whose host calls AWS at `host_endpoint`
    /// and whose test clients call it at `test_endpoint`.
    async fn start_at(
        host_endpoint: &str,
        test_endpoint: &str,
        region: &str,
        extra: &[(&str, &str)],
    ) -> Stack {
        let config = crate::config_at(host_endpoint, region).await;
        let direct = crate::config_at(test_endpoint, region).await;
        let arm = ArmFake::start().await;
        arm.add_resource_group(SUBSCRIPTION, RG_STACK);
        let settings = Settings::from_lookup(|name| match name {
            "JITVM_ADMINS" => Some("local:admin".into()),
            "JITVM_AUDITORS" => Some("local:auditor".into()),
            "JITVM_SLACK_SIGNING_SECRET" => Some(SLACK_SECRET.into()),
            "JITVM_SLACK_WORKSPACES" => Some(format!("{SLACK_TEAM},{SLACK_ENTERPRISE}")),
            "JITVM_POLICIES_TABLE" => Some(crate::unique("policies")),
            "JITVM_REQUESTS_TABLE" => Some(crate::unique("requests")),
            "JITVM_REQUEST_QUEUE" => Some(format!("{}.fifo", crate::unique("requests"))),
            "JITVM_EXPIRY_QUEUE" => Some(crate::unique("expiry")),
            "JITVM_REGIONS" => Some(region.to_owned()),
            other => extra
                .iter()
                .find(|(name, _)| *name == other)
                .map(|(_, value)| (*value).to_owned())
                .or_else(|| azure_env(&arm, other)),
        })
        .expect("test settings are valid");
        let counter = CallCounter::default();
        let aws = jitvm_core::stack::Stack::with_azure_retry(
            config,
            &settings,
            Some(counter.clone()),
            fast_retry(),
        );
        let tokens = Tokens::parse(&format!(
            "admin={ADMIN},alice={ALICE},bob={BOB},carol={CAROL},auditor={AUDITOR}"
        ))
        .expect("test tokens are valid");
        let skew = Arc::new(AtomicI64::new(0));
        let clock_skew = skew.clone();
        let clock = Arc::new(move || {
            let ahead = jiff::SignedDuration::from_secs(clock_skew.load(Ordering::SeqCst));
            jiff::Timestamp::now()
                .checked_add(ahead)
                .expect("the test clock stays in range")
        });
        let mut host = Host::start(settings, aws, tokens, clock)
            .await
            .expect("the host starts against moto");
        host.scope_deadline = SCOPE_DEADLINE;
        let host = Arc::new(host);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let router = host.clone().router();
        // Served as the local host binary serves it, with its default
        // limits (the developer's own JITVM_* variables are not read).
        let limits = jitvm_local::serve::Limits::from_lookup(
            |_| None,
            jitvm_local::serve::open_file_limit(),
        )
        .expect("the default limits fit under the open-file limit");
        tokio::spawn(jitvm_local::serve::serve(
            listener,
            router,
            limits,
            std::future::pending(),
        ));
        Stack {
            host,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            ec2: aws_sdk_ec2::Client::new(&direct),
            sqs: aws_sdk_sqs::Client::new(&direct),
            region: region.to_owned(),
            counter,
            arm,
            skew,
        }
    }

    /// Moves the host's clock `seconds` ahead (the HTTP handlers, the grant
    /// poller and [`Stack::now`] all read it).
    pub fn advance(&self, seconds: i64) {
        self.skew.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Runs the expiry queue's poller in the background, as the local host
    /// binary does, until the handle is aborted.
    pub fn run_timers(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Arc::clone(&self.host).run_timer_poller())
    }

    /// Runs the notify function as the local host binary does, until the
    /// handles are aborted: the requests table's stream and the notify
    /// queue.
    pub fn run_notifier(&self) -> [tokio::task::JoinHandle<()>; 2] {
        [
            tokio::spawn(Arc::clone(&self.host).run_notifier()),
            tokio::spawn(Arc::clone(&self.host).run_notify_poller()),
        ]
    }

    /// The expire function as the host runs it, to hand timers to directly.
    pub fn expire_app(&self) -> jitvm_expire::ExpireApp<'_> {
        self.host.expire_app()
    }

    /// The grant function as the host runs it, to hand messages to directly.
    pub fn grant_app(&self) -> jitvm_grant::GrantApp<'_> {
        self.host.grant_app()
    }

    /// The host's current time.
    pub fn now(&self) -> jiff::Timestamp {
        self.host.now()
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

    /// Every ingress rule of the security group `group_id`.
    pub async fn ingress_rules_of_group(
        &self,
        group_id: &str,
    ) -> Vec<aws_sdk_ec2::types::SecurityGroupRule> {
        ingress_rules(&self.ec2, group_id).await
    }

    /// The id of the security group named `name`, if any.
    pub async fn group_id(&self, name: &str) -> Option<String> {
        group_named(&self.ec2, name).await
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

/// Every ingress rule of the security group `group_id`.
pub async fn ingress_rules(
    ec2: &aws_sdk_ec2::Client,
    group_id: &str,
) -> Vec<aws_sdk_ec2::types::SecurityGroupRule> {
    ec2.describe_security_group_rules()
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

/// The requests (`jitvm:request` tags) of the ingress rules of `group_id`.
pub async fn granted_requests(ec2: &aws_sdk_ec2::Client, group_id: &str) -> Vec<String> {
    ingress_rules(ec2, group_id)
        .await
        .into_iter()
        .flat_map(|r| r.tags.unwrap_or_default())
        .filter(|t| t.key.as_deref() == Some("jitvm:request"))
        .filter_map(|t| t.value)
        .collect()
}

/// The names of the grant rules (`jitvm-` but not Deny rules) of an NSG on
/// `arm`.
pub fn grant_rule_names(arm: &ArmFake, nsg: &str) -> Vec<String> {
    arm.rules(nsg)
        .iter()
        .filter_map(|r| r["name"].as_str())
        .filter(|n| n.starts_with("jitvm-") && !n.starts_with("jitvm-deny-"))
        .map(str::to_owned)
        .collect()
}

/// The id of the security group named `name`, if any.
pub async fn group_named(ec2: &aws_sdk_ec2::Client, name: &str) -> Option<String> {
    ec2.describe_security_groups()
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

// Calls every end-to-end test makes, cloud or not.

/// Puts `policy` on `vm` as the admin; returns the status and the answer.
pub async fn put_policy(stack: &Stack, vm: &str, policy: Value) -> (u16, Value) {
    stack
        .call(
            reqwest::Method::PUT,
            &Stack::policy_path(vm),
            Some(ADMIN),
            Some(policy.to_string()),
        )
        .await
}

/// Enables JIT on `vm` as the admin with `policy`; returns the stored policy.
pub async fn enable(stack: &Stack, vm: &str, policy: Value) -> Value {
    let (status, body) = put_policy(stack, vm, policy).await;
    assert!(status == 201 || status == 200, "enable: {status} {body}");
    body
}

/// The body of a request for one port of `vm`.
pub fn ask(vm: &str, port: Value) -> String {
    json!({"virtualMachines": [{"id": vm, "ports": [port]}], "justification": "deploy fix"})
        .to_string()
}

/// Submits a request as `token`.
pub async fn request(stack: &Stack, token: &str, body: String) -> (u16, Value) {
    stack
        .call(
            reqwest::Method::POST,
            "/v1/requests",
            Some(token),
            Some(body),
        )
        .await
}

/// `POST /v1/requests/{id}/{verb}` (`approve`, `deny`, `revoke`) as `token`,
/// with no body.
pub async fn act(stack: &Stack, token: &str, id: &str, verb: &str) -> (u16, Value) {
    stack
        .call(
            reqwest::Method::POST,
            &format!("/v1/requests/{id}/{verb}"),
            Some(token),
            None,
        )
        .await
}

/// A request record, read as the admin.
pub async fn record(stack: &Stack, id: &str) -> Value {
    let (status, body) = stack
        .call(
            reqwest::Method::GET,
            &format!("/v1/requests/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The request records of `vm`, newest first, read as the admin.
pub async fn records_of(stack: &Stack, vm: &str) -> Vec<Value> {
    let (status, body) = stack
        .call(
            reqwest::Method::GET,
            &format!("/v1/requests?vm={}", encode(vm)),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["value"].as_array().cloned().unwrap_or_default()
}

/// The first port of a record's only VM.
pub fn port0(record: &Value) -> &Value {
    &record["virtualMachines"][0]["ports"][0]
}

/// Hands `message` (a queue message body) to the grant function `app` at
/// `now`, as one SQS message; the ids of the messages it hands back to be
/// retried.
pub async fn deliver(
    app: &jitvm_grant::GrantApp<'_>,
    message: &Value,
    now: jiff::Timestamp,
) -> Vec<String> {
    let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
    m.message_id = Some("m-1".into());
    m.body = Some(message.to_string());
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    event.records.push(m);
    jitvm_grant::handle_batch(app, event, now)
        .await
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

/// Polls the queue until it is empty.
pub async fn drain(stack: &Stack) {
    for _ in 0..10 {
        let report = stack.host.poll_once(1).await.expect("poll");
        if report.received == 0 {
            return;
        }
    }
    panic!("the queue did not drain");
}

/// Seeds, on this stack's ARM fake, a VM `name` at `ip` in resource group
/// `rg` whose NIC carries an NSG of its own; returns (VM id, NSG id).
pub fn azure_vm(arm: &ArmFake, rg: &str, name: &str, ip: &str) -> (String, String) {
    let nsg = arm.add_nsg(SUBSCRIPTION, rg, &format!("{name}-nsg"));
    let subnet = arm.add_subnet(
        SUBSCRIPTION,
        rg,
        &format!("{name}-vnet"),
        "default",
        "10.0.0.0/24",
        None,
    );
    (
        arm.add_vm(SUBSCRIPTION, rg, name, &subnet, ip, Some(&nsg)),
        nsg,
    )
}

// Slack, as Slack itself calls: form bodies signed with the app's secret.

/// Slack's v0 signature of `body` sent at `timestamp`, with `secret`.
pub fn slack_signature(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// The form body of a slash command `text` typed by `user` of `team`.
pub fn slash_body(team: &str, user: &str, text: &str, response_url: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("token", "legacy-verification-token")
        .append_pair("team_id", team)
        .append_pair("team_domain", "example")
        .append_pair("channel_id", "C0123ABCD")
        .append_pair("channel_name", "ops")
        .append_pair("user_id", user)
        .append_pair("user_name", "someone")
        .append_pair("command", "/jit")
        .append_pair("text", text)
        .append_pair("response_url", response_url)
        .append_pair("trigger_id", "123.456.abc")
        .finish()
}

/// The form body of a click on a jitvm button (`approve`, `deny`) for
/// request `id`, by `user` of `team`.
pub fn click_body(team: &str, user: &str, action: &str, id: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "team": {"id": team, "domain": "example"},
        "user": {"id": user, "team_id": team, "username": "someone"},
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action, "value": id,
                     "block_id": "b1", "action_ts": "1700000000.000100"}],
    });
    interaction_body(&payload)
}

/// The form body Slack posts for an interaction `payload`.
pub fn interaction_body(payload: &Value) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

impl Stack {
    /// Posts `body` to `path` as Slack would, signed at `timestamp` (Unix
    /// seconds) with `signature` (`None`: the right one for
    /// [`SLACK_SECRET`]). Returns the status and the JSON answer.
    pub async fn slack_at(
        &self,
        path: &str,
        body: &str,
        timestamp: i64,
        signature: Option<String>,
    ) -> (u16, Value) {
        let signature = signature.unwrap_or_else(|| slack_signature(SLACK_SECRET, timestamp, body));
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("the host answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Types `/jit <text>` as `user` of team `T0TEAM`, signed now.
    pub async fn slash(&self, user: &str, text: &str) -> (u16, Value) {
        let body = slash_body(
            SLACK_TEAM,
            user,
            text,
            "https://hooks.slack.com/commands/T0TEAM/1/x",
        );
        self.slack_at("/v1/chatops/slack", &body, self.now().as_second(), None)
            .await
    }
}

/// The Slack team of [`Stack::slash`], which the stack lets in.
pub const SLACK_TEAM: &str = "T0TEAM";
/// An Enterprise Grid organisation the stack lets in, whole.
pub const SLACK_ENTERPRISE: &str = "E0GRID";

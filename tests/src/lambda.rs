//! The real Lambda binaries, run the way Lambda runs them: a process started
//! with exactly the environment `template.yaml` gives its function (plus
//! what Lambda itself sets, and the endpoints of the emulators that stand in
//! for AWS and Azure), asking a Runtime API on loopback for its events.
//!
//! - [`Deployed`] is what `sam deploy` would have made: the tables, the
//!   queues and the secrets in moto, and the Azure side on the ARM fake;
//!   its [`Deployment`] resolves each function's environment.
//! - [`Function`] is one function's process and the Runtime API stand-in it
//!   talks to (`/2018-06-01/runtime/invocation/next`, `.../response`,
//!   `.../error`, `/runtime/init/error`), which hands it one event at a time
//!   and returns what it answered.
//!
//! This is what the handler-level tests cannot see: the wiring in each
//! `main.rs`, the variable names in the template, and how the runtime
//! parses the events.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use jitvm_core::Principal;
use jitvm_core::api::Caller;
use jitvm_core::aws::dynamo::{DynamoStore, TableNames};
use jitvm_core::aws::resolve_secrets;
use jitvm_core::aws::sqs::SqsQueue;
use jitvm_core::config::Settings;
use jitvm_core::stack::Stack;
use jitvm_policy::PolicyApi;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::api_gateway::{Call, HttpApi, Refused, Response};
use crate::arm_fake::{ArmFake, CLIENT_ID, CLIENT_SECRET, TENANT};
use crate::chat_fake::ChatFake;
use crate::stack::{Instance, SUBSCRIPTION, fast_retry};
use crate::template::Deployment;
use crate::{Moto, unique};

/// The account every stand-in ARN names.
pub const ACCOUNT: &str = "123456789012";
/// An IAM user the deployment names in `Admins`.
pub const ADMIN_ARN: &str = "arn:aws:iam::123456789012:user/jitvm-admin";
/// A signed caller who is nobody in particular.
pub const ALICE_ARN: &str = "arn:aws:sts::123456789012:assumed-role/Developers/alice";
/// Alice's principal: her role's, since the deployment does not trust the
/// session names of `Developers`.
pub const ALICE_PRINCIPAL: &str = "arn:aws:sts::123456789012:assumed-role/Developers/*";
/// A single-sign-on subject the deployment names in `Admins`
/// (`jwt:<issuer>#<sub>`).
pub const ADMIN_SUB: &str = "00u1admin0000000001";
/// The issuer of the single-sign-on API's tokens.
pub const JWT_ISSUER: &str = "https://login.example.com/";
/// The web console's public OpenID Connect client.
pub const CONSOLE_CLIENT_ID: &str = "jitvm-console";
/// The Slack workspace the deployment lets in.
pub const SLACK_WORKSPACE: &str = "T0LAMBDA";
/// The Slack bot token in the deployment's secret.
pub const SLACK_BOT_TOKEN: &str = "xoxb-0000-1111-lambdabot";
/// The deployment's Slack channel and Teams webhook for notices.
pub const SLACK_CHANNEL: &str = "C0LAMBDA";
pub const TEAMS_WEBHOOK: &str = "ops";
/// The IAM roles whose session names the deployment trusts.
pub const TRUSTED_ROLES: &str = "AWSReservedSSO_*";

/// What the single-sign-on API's JWT authorizer reports for a token of
/// `sub` from [`JWT_ISSUER`].
pub fn sso(sub: &str) -> crate::api_gateway::Auth {
    crate::api_gateway::Auth::Jwt(json!({"sub": sub, "iss": JWT_ISSUER, "aud": "jitvm"}))
}

/// The principal of `sub` signed in through the single-sign-on API.
pub fn jwt_principal(sub: &str) -> String {
    format!("jwt:{JWT_ISSUER}#{sub}")
}
/// The Slack app's signing secret, kept in Secrets Manager: the local
/// stack's.
pub use crate::stack::SLACK_SECRET;

/// What a deployment of the template made, stood in for on loopback.
pub struct Deployed {
    pub deployment: Deployment,
    pub config: aws_config::SdkConfig,
    pub arm: ArmFake,
    pub moto_endpoint: String,
    pub queue_url: String,
    pub queue_arn: String,
    /// The expiry queue, where each grant's timer waits, and its ARN.
    pub timers: SqsQueue,
    pub timers_arn: String,
    /// The notify function's queue (retries, reminders) and its ARN.
    pub notify_jobs: SqsQueue,
    pub notify_jobs_arn: String,
    /// Slack and Teams, which the bot token and webhooks in Secrets
    /// Manager point at.
    pub chat: ChatFake,
    /// The deployment's own code in this process, wired from the same
    /// environment the functions get: for setting a test up (and reading
    /// records back), never for what it checks.
    pub stack: Stack,
}

impl Deployed {
    /// Makes what CloudFormation would (the two tables, the FIFO queue
    /// with its dead-letter queue, the Azure client secret and the Slack
    /// signing secret in Secrets Manager) in `region` of the shared moto,
    /// an ARM fake with one resource group, and the parameters that turn
    /// Azure and Slack on. Give each test its own region: the sweep reads a
    /// whole region.
    pub async fn new(region: &str) -> Deployed {
        let moto = Moto::shared();
        let config = moto.config_in(region).await;
        let tables = TableNames {
            policies: unique("policies"),
            requests: unique("requests"),
        };
        DynamoStore::new(&config, tables.clone())
            .ensure_tables()
            .await
            .expect("the tables are made");
        let queue_name = format!("{}.fifo", unique("requests"));
        let queue = SqsQueue::ensure(&config, &queue_name)
            .await
            .expect("the queue is made");
        let queue_url = queue.url().to_owned();
        let expiry_name = unique("expiry");
        let timers = SqsQueue::ensure_standard(&config, &expiry_name)
            .await
            .expect("the expiry queue is made");
        let timers_arn = format!("arn:aws:sqs:{region}:{ACCOUNT}:{expiry_name}");
        let notify_name = unique("notify");
        let notify_jobs = SqsQueue::ensure_standard(&config, &notify_name)
            .await
            .expect("the notify queue is made");
        let notify_jobs_arn = format!("arn:aws:sqs:{region}:{ACCOUNT}:{notify_name}");
        let chat = ChatFake::start().await;
        let secrets = aws_sdk_secretsmanager::Client::new(&config);
        let bot_token = create_secret(&secrets, "jitvm/slack-bot-token", SLACK_BOT_TOKEN).await;
        let webhooks = json!({ TEAMS_WEBHOOK: chat.teams_url(TEAMS_WEBHOOK) }).to_string();
        let webhooks = create_secret(&secrets, "jitvm/teams-webhooks", &webhooks).await;
        let azure_secret =
            create_secret(&secrets, "jitvm/azure-client-secret", CLIENT_SECRET).await;
        let slack_secret =
            create_secret(&secrets, "jitvm/slack-signing-secret", SLACK_SECRET).await;
        let arm = ArmFake::start().await;
        arm.add_resource_group(SUBSCRIPTION, "rg-lambda");
        let parameters = [
            (
                "Admins",
                format!("{ADMIN_ARN},{}", jwt_principal(ADMIN_SUB)),
            ),
            ("TrustedSessionRoles", TRUSTED_ROLES.to_owned()),
            ("SlackWorkspaces", SLACK_WORKSPACE.to_owned()),
            ("Regions", region.to_owned()),
            ("AzureTenantId", TENANT.to_owned()),
            ("AzureClientId", CLIENT_ID.to_owned()),
            ("AzureClientSecretArn", azure_secret),
            ("AzureSubscriptions", SUBSCRIPTION.to_owned()),
            ("SlackSigningSecretArn", slack_secret),
            ("JwtIssuer", JWT_ISSUER.to_owned()),
            ("JwtAudience", format!("jitvm,{CONSOLE_CLIENT_ID}")),
            ("ConsoleClientId", CONSOLE_CLIENT_ID.to_owned()),
            ("SlackBotTokenSecretArn", bot_token),
            ("TeamsWebhooksSecretArn", webhooks),
            ("NotifySlackChannel", SLACK_CHANNEL.to_owned()),
            ("NotifyTeams", TEAMS_WEBHOOK.to_owned()),
        ];
        let queue_arn = format!("arn:aws:sqs:{region}:{ACCOUNT}:{queue_name}");
        let resources = [
            ("PoliciesTable", tables.policies.clone()),
            ("RequestsTable", tables.requests.clone()),
            ("RequestQueue", queue_url.clone()),
            ("RequestQueue.QueueName", queue_name.clone()),
            ("RequestQueue.Arn", queue_arn.clone()),
            ("ExpiryQueue", timers.url().to_owned()),
            ("ExpiryQueue.QueueName", expiry_name.clone()),
            ("ExpiryQueue.Arn", timers_arn.clone()),
            ("NotifyQueue", notify_jobs.url().to_owned()),
            ("NotifyQueue.QueueName", notify_name.clone()),
            ("NotifyQueue.Arn", notify_jobs_arn.clone()),
            ("SsoApi", "sso0api0id".to_owned()),
        ];
        let deployment = Deployment {
            region: region.to_owned(),
            account: ACCOUNT.to_owned(),
            parameters: to_map(parameters),
            resources: to_map(resources),
        };
        let stack = in_process(&deployment, &config, &arm).await;
        Deployed {
            deployment,
            config,
            arm,
            moto_endpoint: moto.endpoint().to_owned(),
            queue_url,
            queue_arn,
            timers,
            timers_arn,
            notify_jobs,
            notify_jobs_arn,
            chat,
            stack,
        }
    }

    /// Starts the function with logical id `function` from `binary`, with
    /// the template's environment for it.
    pub async fn start(&self, function: &str, binary: &Path) -> Function {
        let template_env = self.deployment.environment(function);
        let properties = self.deployment.function_properties(function);
        let mut env = template_env.clone();
        // Only these are added to what the template gives, and none of them
        // may be one the template sets: they point the function at the
        // emulators instead of AWS and Azure.
        let emulators = [
            ("AWS_ENDPOINT_URL", self.moto_endpoint.clone()),
            ("JITVM_AZURE_AUTHORITY_URL", self.arm.base_url()),
            ("JITVM_AZURE_ARM_URL", self.arm.base_url()),
            ("JITVM_SLACK_API_URL", self.chat.slack_base()),
        ];
        for (name, value) in emulators {
            assert!(
                !template_env.contains_key(name),
                "template.yaml sets {name}, which the test would override"
            );
            env.insert(name.to_owned(), value);
        }
        let timeout = properties["Timeout"].as_u64().unwrap_or(3);
        let memory = properties["MemorySize"].as_u64().unwrap_or(128);
        Function::start(
            function,
            binary,
            env,
            &self.deployment.region,
            memory,
            Duration::from_secs(timeout),
        )
        .await
    }

    /// Enables JIT on `vm` with `policy`, as an admin would through the
    /// policy function.
    pub async fn enable(&self, vm: &str, policy: Value) {
        let stack = &self.stack;
        let api = PolicyApi {
            firewall: &stack.firewall,
            policies: &stack.store,
            requests: &stack.store,
            admins: &stack.settings.admins,
            trust: &stack.settings.trusted_session_roles,
            channels: &jitvm_core::notify::ChannelNames::from_settings(&stack.settings.notify)
                .expect("the template's notify settings are valid"),
        };
        let request = http::Request::builder()
            .method("PUT")
            .uri(format!("/v1/policies/{vm}"))
            .body(bytes::Bytes::from(policy.to_string()))
            .expect("a request");
        let caller = Caller {
            principal: Principal::parse(ADMIN_ARN).expect("a principal"),
            address: None,
            reported: None,
        };
        let answer =
            jitvm_policy::handle(&api, Some(caller), request, jiff::Timestamp::now()).await;
        assert_eq!(answer.status(), 201, "enable {vm}: {}", answer.body());
    }

    /// Hands `message` (a queue message body) to the grant handler in this
    /// process, as if it ran at `now`: with a past `now`, the grant it
    /// opens has already ended.
    pub async fn grant_at(&self, message: &Value, now: jiff::Timestamp) {
        let app = jitvm_grant::GrantApp {
            policies: &self.stack.store,
            requests: &self.stack.store,
            firewall: &self.stack.firewall,
            timers: &self.timers,
            approval_timeout: self.stack.settings.approval_timeout,
        };
        let retried = crate::stack::deliver(&app, message, now).await;
        assert!(retried.is_empty(), "the grant failed");
    }

    /// An EC2 instance in a fresh VPC of this deployment's region.
    pub async fn instance(&self) -> Instance {
        let world = crate::ec2_world(&self.ec2(), &[]).await;
        Instance {
            arn: format!(
                "arn:aws:ec2:{}:{ACCOUNT}:instance/{}",
                self.deployment.region, world.instance_id
            ),
            world,
        }
    }

    /// An Azure VM `name` at `ip` on the ARM fake, with an NSG on its NIC:
    /// (VM id, NSG id).
    pub fn azure_vm(&self, name: &str, ip: &str) -> (String, String) {
        crate::stack::azure_vm(&self.arm, "rg-lambda", name, ip)
    }

    /// Enables JIT with [`ssh_for_anyone`] on each of `vms`.
    pub async fn enable_ssh(&self, vms: &[&str]) {
        for vm in vms {
            self.enable(vm, ssh_for_anyone()).await;
        }
    }

    /// The requests (`jitvm:request` tags) of the ingress rules on the
    /// jitvm group of `instance_id`, sorted.
    pub async fn granted(&self, instance_id: &str) -> Vec<String> {
        let ec2 = self.ec2();
        let name = format!("jitvm-{instance_id}");
        let group = crate::stack::group_named(&ec2, &name)
            .await
            .unwrap_or_else(|| panic!("no group {name}"));
        let mut requests = crate::stack::granted_requests(&ec2, &group).await;
        requests.sort();
        requests
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.config)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.config)
    }
}

async fn create_secret(client: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    client
        .create_secret()
        .name(unique(name))
        .secret_string(value)
        .send()
        .await
        .expect("the secret is made")
        .arn
        .expect("a secret ARN")
}

/// The deployment's code in this process, wired from the environment the
/// template gives the policy function (its secrets read from moto).
async fn in_process(
    deployment: &Deployment,
    config: &aws_config::SdkConfig,
    arm: &ArmFake,
) -> Stack {
    let mut env = deployment.environment("PolicyFunction");
    env.insert("JITVM_AZURE_AUTHORITY_URL".into(), arm.base_url());
    env.insert("JITVM_AZURE_ARM_URL".into(), arm.base_url());
    let settings =
        Settings::from_lookup(|name| env.get(name).cloned()).expect("the settings are valid");
    let settings = resolve_secrets(config, &settings)
        .await
        .expect("the secrets are in moto");
    Stack::with_azure_retry(config.clone(), &settings, None, fast_retry())
}

fn to_map<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// How an invocation ended, as the Runtime API heard it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The function posted a response.
    Response(Value),
    /// The function posted an error (`errorType`, `errorMessage`).
    Error(Value),
}

/// One function's process and its Runtime API.
pub struct Function {
    name: String,
    runtime: Arc<RuntimeState>,
    child: Mutex<Child>,
    log: Arc<Mutex<String>>,
    timeout: Duration,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Function {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.server.abort();
    }
}

struct RuntimeState {
    function_arn: String,
    deadline: Duration,
    next: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    send: mpsc::UnboundedSender<(String, Value)>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<Value>>,
}

impl Function {
    /// Starts `binary` with `env` and nothing else of this process's
    /// environment, plus what Lambda sets for a function of `memory` MB.
    pub async fn start(
        name: &str,
        binary: &Path,
        env: BTreeMap<String, String>,
        region: &str,
        memory: u64,
        timeout: Duration,
    ) -> Function {
        assert!(
            binary.exists(),
            "{} is missing: cargo builds it with this test",
            binary.display()
        );
        let (send, receive) = mpsc::unbounded_channel();
        let function_arn = format!("arn:aws:lambda:{region}:{ACCOUNT}:function:jitvm-{name}");
        let runtime = Arc::new(RuntimeState {
            function_arn: function_arn.clone(),
            deadline: timeout,
            next: tokio::sync::Mutex::new(receive),
            send,
            waiting: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let api = listener.local_addr().expect("bound address").to_string();
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(runtime.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let lambda_env = [
            ("AWS_LAMBDA_RUNTIME_API", api),
            ("AWS_LAMBDA_FUNCTION_NAME", format!("jitvm-{name}")),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/jitvm-{name}"),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/12/01/[$LATEST]0123456789abcdef".into(),
            ),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
            ("AWS_REGION", region.to_owned()),
            ("AWS_DEFAULT_REGION", region.to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_SESSION_TOKEN", "testing".into()),
            ("_HANDLER", "bootstrap".into()),
            ("LAMBDA_TASK_ROOT", "/var/task".into()),
            ("TZ", ":UTC".into()),
        ];
        let mut command = Command::new(binary);
        command.env_clear().envs(&env);
        for (k, v) in &lambda_env {
            assert!(
                !env.contains_key(*k),
                "template.yaml sets {k}, which Lambda reserves"
            );
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let log = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take(), log.clone());
        collect(child.stderr.take(), log.clone());
        Function {
            name: name.to_owned(),
            runtime,
            child: Mutex::new(child),
            log,
            timeout,
            server,
        }
    }

    /// Hands the function `event` and waits for its answer (up to the
    /// template's timeout). Panics, with the function's log, when the
    /// process exits or does not answer.
    pub async fn invoke(&self, event: Value) -> Outcome {
        let id = uuid::Uuid::now_v7().to_string();
        let (tell, answer) = oneshot::channel();
        self.runtime
            .waiting
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), tell);
        self.runtime
            .send
            .send((id, event))
            .expect("the runtime API is up");
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut answer = std::pin::pin!(answer);
        let mut check = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                outcome = &mut answer => return outcome.expect("the runtime API answers"),
                _ = check.tick() => {
                    if let Some(status) = self.exited() {
                        panic!("{} exited ({status}) instead of answering; init error {:?}\n{}",
                            self.name, self.init_error(), self.log());
                    }
                    assert!(tokio::time::Instant::now() < deadline,
                        "{} did not answer within its timeout of {:?}\n{}", self.name, self.timeout, self.log());
                }
            }
        }
    }

    /// Invokes with `event` and returns the response, failing on an error.
    pub async fn respond(&self, event: Value) -> Value {
        match self.invoke(event).await {
            Outcome::Response(v) => v,
            Outcome::Error(e) => panic!("{} failed: {e}\n{}", self.name, self.log()),
        }
    }

    /// Sends `call` through API Gateway's routing to this function and
    /// reads the answer; API Gateway's own refusal when the call never
    /// reaches a function.
    pub async fn http(&self, api: &HttpApi, call: &Call) -> Result<Response, Refused> {
        let (route, event) = api.event(call)?;
        assert!(
            self.name == route.function,
            "{} {} reaches {}, not {}",
            call.method,
            call.target,
            route.function,
            self.name
        );
        Ok(Response::from_result(&self.respond(event).await))
    }

    /// As [`Function::http`], failing the test when API Gateway refuses
    /// the call.
    pub async fn call(&self, api: &HttpApi, call: Call) -> Response {
        match self.http(api, &call).await {
            Ok(response) => response,
            Err(refused) => panic!("API Gateway refused {}: {refused:?}", call.target),
        }
    }

    /// How the process ended, once it has.
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().ok()?.try_wait().ok().flatten()
    }

    /// Waits (up to `limit`) for the process to end; its status.
    pub async fn wait_exit(&self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut check = tokio::time::interval(Duration::from_millis(20));
        while tokio::time::Instant::now() < deadline {
            check.tick().await;
            if let Some(status) = self.exited() {
                return Some(status);
            }
        }
        None
    }

    /// What the function posted to `/runtime/init/error`, if anything.
    pub fn init_error(&self) -> Option<Value> {
        self.runtime.init_error.lock().ok()?.clone()
    }

    /// Everything the process wrote so far, stdout and stderr.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The JSON log lines with `"target": "audit"`.
    pub fn audit_events(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "audit")
            .collect()
    }

    /// The first audit line of `event`, waiting a little for it: the log
    /// reaches this process through a pipe, after the function answered.
    pub async fn audit_event(&self, event: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut check = tokio::time::interval(Duration::from_millis(20));
        loop {
            check.tick().await;
            let found = self
                .audit_events()
                .into_iter()
                .find(|a| a["fields"]["event"] == event);
            if let Some(found) = found {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {event} audit line in {}'s JSON log:\n{}",
                self.name,
                self.log()
            );
        }
    }
}

fn collect(stream: Option<impl Read + Send + 'static>, log: Arc<Mutex<String>>) {
    let Some(stream) = stream else {
        return;
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut log) = log.lock() {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
}

async fn next(State(state): State<Arc<RuntimeState>>) -> impl IntoResponse {
    let Some((id, event)) = state.next.lock().await.recv().await else {
        return (StatusCode::GONE, HeaderMap::new(), String::new());
    };
    let deadline = jiff::Timestamp::now().as_millisecond()
        + i64::try_from(state.deadline.as_millis()).unwrap_or(i64::MAX);
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("lambda-runtime-aws-request-id", id.clone()),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            state.function_arn.clone(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-674c2f00-0123456789abcdef01234567;Sampled=0".into(),
        ),
        ("content-type", "application/json".into()),
    ] {
        if let Ok(v) = value.parse() {
            headers.insert(name, v);
        }
    }
    (StatusCode::OK, headers, event.to_string())
}

fn settle(state: &RuntimeState, id: &str, outcome: Outcome) -> StatusCode {
    let waiting = state.waiting.lock().ok().and_then(|mut w| w.remove(id));
    match waiting {
        Some(tell) => {
            let _ = tell.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn body_json(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| json!({"unparsed": String::from_utf8_lossy(body)}))
}

async fn respond(
    State(state): State<Arc<RuntimeState>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    settle(&state, &id, Outcome::Response(body_json(&body)))
}

async fn fail(
    State(state): State<Arc<RuntimeState>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    settle(&state, &id, Outcome::Error(body_json(&body)))
}

async fn init_error(State(state): State<Arc<RuntimeState>>, body: Bytes) -> StatusCode {
    if let Ok(mut slot) = state.init_error.lock() {
        *slot = Some(body_json(&body));
    }
    StatusCode::ACCEPTED
}

/// A queued message as the event source mapping hands it over.
#[derive(Debug, Clone)]
pub struct Queued {
    pub message_id: String,
    pub group: String,
    pub body: String,
}

impl Queued {
    pub fn new(message_id: &str, group: &str, body: impl Into<String>) -> Self {
        Self {
            message_id: message_id.to_owned(),
            group: group.to_owned(),
            body: body.into(),
        }
    }
}

/// The policy most of these tests enable: SSH over TCP, from any source,
/// for anyone authenticated.
pub fn ssh_for_anyone() -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*"}]})
}

/// A message in the shape other systems put on the request queue (README,
/// "The queue"): port 22 of `vm` from `source` for `duration`.
pub fn queue_message(id: &str, vm: &str, source: &str, duration: &str) -> Value {
    json!({"id": id, "requestor": "arn:aws:iam::123456789012:role/deployer",
           "virtualMachines": [{"id": vm, "ports": [{"number": 22, "duration": duration,
                                                     "allowedSourceAddressPrefix": source}]}],
           "justification": "release 42"})
}

/// A sample event of `infra/events`.
fn sample(name: &str) -> Value {
    let path = crate::root().join("infra/events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An SQS event as Lambda's event source mapping delivers a batch from the
/// FIFO queue `queue_arn`: the sample `sqs-request.json`'s record, once per
/// message.
pub fn sqs_event(queue_arn: &str, messages: &[Queued]) -> Value {
    let sample = sample("sqs-request.json");
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut record = sample["Records"][0].clone();
            record["messageId"] = json!(m.message_id);
            record["receiptHandle"] = json!(format!("AQEB{}", uuid::Uuid::now_v7().simple()));
            record["body"] = json!(m.body);
            record["attributes"]["MessageGroupId"] = json!(m.group);
            record["attributes"]["MessageDeduplicationId"] = json!(m.message_id);
            record["eventSourceARN"] = json!(queue_arn);
            record["awsRegion"] = json!(queue_arn.split(':').nth(3).unwrap_or("us-east-1"));
            record
        })
        .collect();
    json!({"Records": records})
}

/// A batch of timers as Lambda's event source mapping delivers it from the
/// expiry queue `queue_arn`: the sample `sqs-timer.json`'s record, once per
/// timer. The sample's own body must be a timer too.
pub fn timer_event(queue_arn: &str, timers: &[&jitvm_core::expiry::Timer]) -> Value {
    let sample = sample("sqs-timer.json");
    let record = &sample["Records"][0];
    let body = record["body"].as_str().unwrap_or_default();
    if let Err(e) = serde_json::from_str::<jitvm_core::expiry::Timer>(body) {
        panic!("infra/events/sqs-timer.json does not hold a timer: {e}");
    }
    let records: Vec<Value> = timers
        .iter()
        .map(|t| {
            let mut record = record.clone();
            record["messageId"] = json!(uuid::Uuid::now_v7().to_string());
            record["receiptHandle"] = json!(format!("AQEB{}", uuid::Uuid::now_v7().simple()));
            record["body"] = json!(serde_json::to_string(t).expect("a timer is JSON"));
            record["eventSourceARN"] = json!(queue_arn);
            record["awsRegion"] = json!(queue_arn.split(':').nth(3).unwrap_or("us-east-1"));
            record
        })
        .collect();
    json!({"Records": records})
}

/// The event the expire function's EventBridge schedule sends: the sample
/// `schedule.json`.
pub fn scheduled_event() -> Value {
    sample("schedule.json")
}

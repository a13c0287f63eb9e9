//! The `jitvm` binary as a person runs it, against the local stack on moto:
//! each test starts its own stack (its own region), runs the real binary as
//! a process with a bearer token, and reads its exit code and output.

use std::sync::Arc;
use std::time::Duration;

use jitvm_tests::stack::{ADMIN, ALICE, BOB, CAROL, Stack, azure_vm, enable, eventually};
use serde_json::{Value, json};

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `jitvm args...` against `endpoint` with `token`, with nothing from
/// the developer's environment or config file.
async fn jitvm_at(endpoint: &str, token: &str, args: &[&str]) -> Run {
    let endpoint = endpoint.to_owned();
    let token = token.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    // The stack serves on this process's runtime, so the child is waited
    // for on a blocking thread.
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitvm"))
            .args(&args)
            .env_clear()
            .env("JITVM_ENDPOINT", endpoint)
            .env("JITVM_TOKEN", token)
            .env("XDG_CONFIG_HOME", "/nonexistent/jitvm-cli-test")
            .output()
            .expect("the binary runs");
        Run {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("the runner thread")
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

async fn jitvm(stack: &Stack, token: &str, args: &[&str]) -> Run {
    jitvm_at(&stack.base, token, args).await
}

/// A policy for port 22 from anywhere, for `requesters`, with `approvers`.
fn policy(requesters: &[&str], approvers: &[&str]) -> Value {
    json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*",
                      "maxRequestAccessDuration": "PT3H"}],
           "requesters": requesters, "approvers": approvers})
}

/// A JIT-enabled instance with `policy`; its instance id.
async fn enabled_instance(stack: &Stack, policy: Value) -> String {
    let vm = stack.instance(&[]).await;
    enable(stack, &vm.arn, policy).await;
    vm.world.instance_id.clone()
}

/// The request id in a `--output json` record.
fn id_of(run: &Run) -> String {
    run.json()["id"].as_str().expect("a request id").to_owned()
}

/// Alice asks for port 22 of `instance` from 198.51.100.7: the request id.
async fn asked(stack: &Stack, instance: &str) -> String {
    let args = [
        "request",
        instance,
        "22",
        "--from",
        "198.51.100.7",
        "-o",
        "json",
    ];
    id_of(&jitvm(stack, ALICE, &args).await.ok())
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir()
        .join(jitvm_tests::unique("jitvm-cli"))
        .join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("temp dir");
    std::fs::write(&path, text).expect("temp file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_and_vms_show_the_caller_and_the_vms() {
    let stack = Stack::start("us-east-2").await;
    let instance = enabled_instance(&stack, policy(&["local:alice"], &[])).await;
    let other = stack.instance(&[]).await;

    let run = jitvm(&stack, ALICE, &["whoami"]).await.ok();
    assert!(
        run.stdout.contains("principal: local:alice"),
        "{}",
        run.stdout
    );
    let me = jitvm(&stack, ALICE, &["whoami", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(me["principal"], "local:alice");
    assert_eq!(me["admin"], false);

    let run = jitvm(&stack, ALICE, &["vms"]).await.ok();
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains(&instance))
        .expect("the VM's row");
    assert!(
        line.contains("Configured") && line.contains("22/tcp"),
        "{line}"
    );
    let vms = jitvm(&stack, ALICE, &["--output", "json", "vms"])
        .await
        .ok()
        .json();
    let status_of = |id: &str| {
        vms["value"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|v| v["id"].as_str().is_some_and(|i| i.ends_with(id)))
            .map(|v| v["status"].clone())
    };
    assert_eq!(status_of(&instance), Some(json!("Configured")));
    assert_eq!(
        status_of(&other.world.instance_id),
        Some(json!("NotConfigured"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_wait_opens_then_status_list_and_revoke() {
    let stack = Stack::start("us-west-1").await;
    let instance = enabled_instance(&stack, policy(&["local:alice"], &[])).await;
    let _poller = tokio::spawn(Arc::clone(&stack.host).run_poller());

    // No --from: the API uses the caller's own address (loopback here).
    let run = jitvm(
        &stack,
        ALICE,
        &[
            "request",
            &instance,
            "22",
            "--for",
            "30m",
            "-m",
            "deploy fix",
            "--wait",
        ],
    )
    .await
    .ok();
    assert!(run.stdout.contains("open (request"), "{}", run.stdout);
    assert!(run.stdout.contains("127.0.0.1"), "{}", run.stdout);
    assert!(run.stderr.contains("port 22 Initiated"), "{}", run.stderr);
    let id = run
        .stdout
        .split("open (request ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the request id")
        .to_owned();

    let record = jitvm(&stack, ALICE, &["status", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        record["virtualMachines"][0]["ports"][0]["status"],
        "Initiated"
    );
    assert_eq!(record["justification"], "deploy fix");
    let run = jitvm(&stack, ALICE, &["status"]).await.ok();
    assert!(run.stdout.contains(&id), "{}", run.stdout);
    let mine = jitvm(&stack, ALICE, &["list", "--mine", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(mine["value"][0]["id"], id.as_str());
    let by_vm = jitvm(&stack, ADMIN, &["list", "--vm", &instance, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(by_vm["value"].as_array().map(Vec::len), Some(1));

    let revoked = jitvm(&stack, ALICE, &["revoke", &id, "-o", "json"])
        .await
        .ok()
        .json();
    let port = &revoked["virtualMachines"][0]["ports"][0];
    assert_eq!(
        (&port["status"], &port["statusReason"]),
        (&json!("Revoked"), &json!("UserRequested"))
    );

    // Pages: the newest first, then the next page by its token.
    let newer = asked(&stack, &instance).await;
    let page = jitvm(
        &stack,
        ALICE,
        &["list", "--mine", "--limit", "1", "-o", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(page["value"][0]["id"], newer.as_str());
    let token = page["nextToken"].as_str().expect("a next page");
    let next = jitvm(
        &stack,
        ALICE,
        &[
            "list",
            "--mine",
            "--limit",
            "1",
            "--next-token",
            token,
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(next["value"][0]["id"], id.as_str());
    let run = jitvm(&stack, ALICE, &["list", "--mine", "--limit", "1"])
        .await
        .ok();
    assert!(run.stderr.contains("--next-token"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_approve_and_deny_with_wait() {
    let stack = Stack::start("eu-west-2").await;
    let instance = enabled_instance(&stack, policy(&["local:alice"], &["local:bob"])).await;
    let _poller = tokio::spawn(Arc::clone(&stack.host).run_poller());
    let args: Vec<String> = [
        "request",
        instance.as_str(),
        "22",
        "--from",
        "198.51.100.7",
        "--for",
        "1h",
        "--wait",
        "--wait-timeout",
        "2m",
    ]
    .map(str::to_owned)
    .to_vec();

    // Approved while alice waits: she gets what to connect to.
    let waiting = tokio::spawn({
        let base = stack.base.clone();
        let args = args.clone();
        async move { jitvm_at(&base, ALICE, &strs(&args)).await }
    });
    let id = pending_for_bob(&stack).await;
    let own = jitvm(&stack, ALICE, &["list", "--pending", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(own["value"], json!([]), "alice approves nothing");
    jitvm(&stack, BOB, &["approve", &id, "-m", "change CHG-42"])
        .await
        .ok();
    let run = waiting.await.expect("the waiting run");
    let run = run.ok();
    assert!(run.stdout.contains("198.51.100.7"), "{}", run.stdout);
    // The approver's reason is in the request's history.
    let record = jitvm(&stack, ALICE, &["status", &id, "-o", "json"])
        .await
        .ok()
        .json();
    let said = record["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["message"].as_str())
        .collect::<Vec<_>>();
    assert!(
        said.contains(&"approved by local:bob: change CHG-42"),
        "{said:?}"
    );

    // Denied while she waits: exit 3 with the approver's reason.
    let waiting = tokio::spawn({
        let base = stack.base.clone();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("198.51.100.7", "198.51.100.8"))
            .collect();
        async move { jitvm_at(&base, ALICE, &strs(&args)).await }
    });
    let id = pending_for_bob(&stack).await;
    jitvm(&stack, BOB, &["deny", &id, "-m", "not during the freeze"])
        .await
        .ok();
    let run = waiting.await.expect("the waiting run");
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("denied by local:bob: not during the freeze"),
        "{}",
        run.stderr
    );
}

/// Waits until bob has exactly one request pending (in `list --pending`);
/// its id.
async fn pending_for_bob(stack: &Stack) -> String {
    let found = std::sync::Mutex::new(None);
    eventually(
        "a request pending for bob",
        Duration::from_secs(30),
        || async {
            let list = jitvm(stack, BOB, &["list", "--pending", "-o", "json"])
                .await
                .ok()
                .json();
            let ids: Vec<String> = list["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect();
            let one = ids.len() == 1;
            *found.lock().expect("lock") = ids.into_iter().next();
            one
        },
    )
    .await;
    found.into_inner().expect("lock").expect("an id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_3_when_a_port_fails() {
    let stack = Stack::start("ca-central-1").await;
    let instance = enabled_instance(&stack, policy(&["local:alice", "local:bob"], &[])).await;
    let _poller = tokio::spawn(Arc::clone(&stack.host).run_poller());
    let args = [
        "request",
        instance.as_str(),
        "22",
        "--from",
        "203.0.113.9",
        "--wait",
    ];
    jitvm(&stack, ALICE, &args).await.ok();
    // EC2 holds one rule per source: bob's port fails, naming alice's grant.
    let run = jitvm(&stack, BOB, &args).await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("port 22 failed"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_with_the_api_s_code_and_message() {
    let stack = Stack::start("eu-west-3").await;
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, policy(&["local:alice"], &[])).await;

    // A token the API does not know is a configuration problem: exit 5.
    let run = jitvm(&stack, "wrong-token", &["whoami"]).await;
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("jitvm: ") && run.stderr.contains("(401)"),
        "{}",
        run.stderr
    );

    // The VM named by its ARN; a port the policy does not have.
    let run = jitvm(
        &stack,
        ALICE,
        &["request", &vm.arn, "3389", "--from", "198.51.100.7"],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("(403)") && run.stderr.contains("3389"),
        "{}",
        run.stderr
    );
    // Bob is no requester.
    let run = jitvm(
        &stack,
        BOB,
        &["request", &vm.arn, "22", "--from", "198.51.100.7"],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("(403)"), "{}", run.stderr);

    for bad in [
        vec!["request", "i-0000000000000dead", "22"],
        vec!["request", &vm.world.instance_id, "22", "--for", "soon"],
        vec!["request", &vm.world.instance_id],
        vec!["frobnicate"],
    ] {
        let run = jitvm(&stack, ALICE, &bad).await;
        assert_eq!(run.code, 2, "{bad:?}: {}", run.stderr);
    }
    for (run, code) in [
        (
            jitvm(&stack, ALICE, &["status", "no-such-request"]).await,
            1,
        ),
        (jitvm(&stack, "wrong-token", &["vms"]).await, 5),
        (jitvm(&stack, ALICE, &["list", "--limit", "500"]).await, 2),
        (
            jitvm(
                &stack,
                ALICE,
                &[
                    "request",
                    &vm.arn,
                    "22",
                    "--wait",
                    "--wait-timeout",
                    "2562047788015215h",
                ],
            )
            .await,
            2,
        ),
    ] {
        assert_eq!(run.code, code, "{}", run.stderr);
        assert!(
            !run.stderr.contains("panicked") && !run.stderr.contains(" { "),
            "{}",
            run.stderr
        );
    }

    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let run = jitvm_at(&format!("http://{addr}"), ALICE, &["whoami"]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_put_get_delete_from_yaml_and_json() {
    let stack = Stack::start("ap-northeast-3").await;
    let vm = stack.instance(&[]).await;
    let instance = vm.world.instance_id.as_str();
    let yaml = temp_file(
        "policy.yaml",
        "ports:\n  - number: 22\n    protocol: tcp\n    allowedSourceAddressPrefixes: [\"198.51.100.0/24\"]\n    maxRequestAccessDuration: PT1H\nrequesters: [\"local:alice\"]\n",
    );
    let json_file = temp_file(
        "policy.json",
        &json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*",
                           "maxRequestAccessDuration": "PT2H"}, {"number": 3389}],
                "requesters": ["local:alice", "local:bob"]})
        .to_string(),
    );
    let yaml = yaml.to_str().expect("a UTF-8 path");
    let json_file = json_file.to_str().expect("a UTF-8 path");

    let run = jitvm(&stack, ALICE, &["policy", "put", instance, "-f", yaml]).await;
    assert_eq!(run.code, 1, "only admins write: {}", run.stderr);

    // By instance id (not configured yet: found among all the VMs).
    let put = jitvm(
        &stack,
        ADMIN,
        &["policy", "put", instance, "-f", yaml, "-o", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(put["ports"][0]["maxRequestAccessDuration"], "PT1H");
    let got = jitvm(&stack, ALICE, &["policy", "get", &vm.arn, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(got["requesters"], json!(["local:alice"]));
    assert_eq!(
        got["ports"][0]["allowedSourceAddressPrefixes"],
        json!(["198.51.100.0/24"])
    );

    jitvm(&stack, ADMIN, &["policy", "put", &vm.arn, "-f", json_file])
        .await
        .ok();
    let run = jitvm(&stack, ALICE, &["policy", "get", instance])
        .await
        .ok();
    assert!(
        run.stdout.contains("3389") && run.stdout.contains("local:bob"),
        "{}",
        run.stdout
    );

    jitvm(&stack, ADMIN, &["policy", "delete", instance])
        .await
        .ok();
    let run = jitvm(&stack, ALICE, &["policy", "get", &vm.arn]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("(404)"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_writes_the_csv_for_admins_only() {
    let stack = Stack::start("sa-east-1").await;
    let instance = enabled_instance(&stack, policy(&["local:alice"], &[])).await;
    let id = asked(&stack, &instance).await;
    let file = temp_file("audit.csv", "");
    let file = file.to_str().expect("a UTF-8 path");
    jitvm(&stack, ADMIN, &["audit", "--vm", &instance, "--csv", file])
        .await
        .ok();
    let csv = std::fs::read_to_string(file).expect("the CSV was written");
    assert!(csv.contains("\"requestId\"") && csv.contains(&id), "{csv}");
    let run = jitvm(
        &stack,
        ADMIN,
        &[
            "audit",
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2001-01-01T00:00:00Z",
        ],
    )
    .await
    .ok();
    assert!(!run.stdout.contains(&id), "{}", run.stdout);
    let run = jitvm(&stack, ALICE, &["audit"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
}

#[tokio::test]
async fn completions_for_bash() {
    let run = jitvm_at("http://127.0.0.1:9", "unused", &["completions", "bash"])
        .await
        .ok();
    assert!(run.stdout.contains("complete -F _jitvm"), "{}", run.stdout);
    assert!(
        run.stdout.contains("request") && run.stdout.contains("--wait"),
        "{}",
        run.stdout
    );
    let run = jitvm_at("http://127.0.0.1:9", "unused", &["--help"])
        .await
        .ok();
    assert!(run.stdout.contains("Exit codes:"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_vms_are_named_by_name_or_group_and_name() {
    let stack = Stack::start("us-west-2").await;
    let (vm, _nsg) = azure_vm(&stack.arm, "rg-cli", "web-1", "10.0.0.4");
    let (twin, _) = azure_vm(&stack.arm, "rg-twin", "web-1", "10.0.0.5");
    let _poller = tokio::spawn(Arc::clone(&stack.host).run_poller());
    let file = temp_file("policy.json", &policy(&["local:alice"], &[]).to_string());
    let file = file.to_str().expect("a UTF-8 path");

    // Two VMs are called web-1: refused with both ids, nothing written.
    let run = jitvm(&stack, ADMIN, &["policy", "put", "web-1", "-f", file]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("names 2 VMs"), "{}", run.stderr);
    assert!(
        run.stderr.contains("rg-cli") && run.stderr.contains("rg-twin"),
        "{}",
        run.stderr
    );

    jitvm(
        &stack,
        ADMIN,
        &["policy", "put", "RG-CLI/web-1", "-f", file],
    )
    .await
    .ok();
    // Among the VMs alice may ask for, web-1 is one: named as Slack names it.
    let run = jitvm(
        &stack,
        ALICE,
        &["request", "web-1", "22", "--from", "198.51.100.7", "--wait"],
    )
    .await
    .ok();
    assert!(
        run.stdout.contains("virtualMachines/web-1"),
        "{}",
        run.stdout
    );
    let vms = jitvm(&stack, ALICE, &["vms", "-o", "json"])
        .await
        .ok()
        .json();
    let status_of = |id: &str| {
        vms["value"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
            .map(|v| v["status"].clone())
    };
    assert_eq!(status_of(&vm), Some(json!("Configured")));
    assert_eq!(status_of(&twin), Some(json!("NotConfigured")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_is_read_and_a_wait_runs_out() {
    let stack = Stack::start("ap-east-1").await;
    let instance = enabled_instance(&stack, policy(&["local:alice"], &[])).await;
    let config = temp_file(
        "config.toml",
        &format!(
            "endpoint = \"{}\"\nauth = \"bearer\"\ntoken = \"{ALICE}\"\n",
            stack.base
        ),
    );
    let config = config.to_str().expect("a UTF-8 path");
    let run = tokio::task::spawn_blocking({
        let config = config.to_owned();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_jitvm"))
                .args(["--config", &config, "whoami", "-o", "json"])
                .env_clear()
                .output()
                .expect("the binary runs")
        }
    })
    .await
    .expect("runner");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let me: Value = serde_json::from_slice(&run.stdout).expect("JSON");
    assert_eq!(me["principal"], "local:alice");

    // Nothing polls the queue here, so the port never opens.
    let run = jitvm(
        &stack,
        ALICE,
        &[
            "request",
            &instance,
            "22",
            "--from",
            "198.51.100.7",
            "--wait",
            "--wait-timeout",
            "1s",
        ],
    )
    .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("gave up waiting") && run.stderr.contains("Initiating"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_needs_a_message_and_opens_without_an_approver() {
    let stack = Stack::start("eu-central-1").await;
    let mut with_break_glass = policy(&["local:alice"], &["local:bob"]);
    with_break_glass["breakGlass"] =
        json!({"principals": ["local:carol"], "maxRequestAccessDuration": "PT30M"});
    let vm = stack.instance(&[]).await;
    enable(&stack, &vm.arn, with_break_glass).await;
    let instance = vm.world.instance_id.clone();
    let _poller = tokio::spawn(Arc::clone(&stack.host).run_poller());

    // Without -m (or with a blank one) the CLI refuses before sending.
    for extra in [&[][..], &["-m", "  "][..]] {
        let mut args = vec![
            "request",
            &instance,
            "22",
            "--break-glass",
            "--for",
            "20m",
            "--from",
            "198.51.100.7",
        ];
        args.extend_from_slice(extra);
        let run = jitvm(&stack, CAROL, &args).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains("--break-glass needs a justification") && run.stderr.contains("-m"),
            "{}",
            run.stderr
        );
    }
    let (_, listed) = stack
        .call(
            reqwest::Method::GET,
            &format!("/v1/requests?vm={}", jitvm_tests::stack::encode(&vm.arn)),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(listed["value"], json!([]), "nothing was sent: {listed}");

    // Carol is no requester: whoami shows where she may break glass, and the
    // short name is found there.
    let run = jitvm(&stack, CAROL, &["whoami"]).await.ok();
    assert!(
        run.stdout.contains(&format!("break glass on: {}", vm.arn)),
        "{}",
        run.stdout
    );
    let run = jitvm(
        &stack,
        CAROL,
        &[
            "request",
            &instance,
            "22",
            "--break-glass",
            "--for",
            "20m",
            "--from",
            "198.51.100.7",
            "-m",
            "the site is down",
            "--wait",
            "--wait-timeout",
            "1m",
        ],
    )
    .await
    .ok();
    assert!(run.stdout.contains("open (request"), "{}", run.stdout);
    let id = run
        .stdout
        .split("open (request ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the request id")
        .to_owned();
    let record = jitvm(&stack, CAROL, &["status", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(record["breakGlass"], true, "{record}");
    assert_eq!(record["status"], "Approved");
    let shown = jitvm(&stack, CAROL, &["status", &id]).await.ok();
    assert!(
        shown.stdout.contains("break glass: true"),
        "{}",
        shown.stdout
    );

    // Alice may request but not break glass: the API says so (exit 1).
    let run = jitvm(
        &stack,
        ALICE,
        &[
            "request",
            &vm.arn,
            "22",
            "--break-glass",
            "--from",
            "198.51.100.7",
            "-m",
            "urgent",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("NotBreakGlassPrincipal (403)"),
        "{}",
        run.stderr
    );
}

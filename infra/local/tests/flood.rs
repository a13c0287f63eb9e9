//! The local host's real binary on a shared network: 500 connections that
//! send part of a request with no token and then stop, held open by an
//! attacker who opens another at once (after a short pause) whenever the
//! host closes one. The binary runs under a low open-file limit (256), as
//! a small machine's defaults would have it, with the environment
//! `infra/run.sh` gives it, against moto.
//!
//! While the flood is held, a fresh `GET /healthz` answers within 1 s, a
//! grant asked for over HTTP is opened by the request poller, and its EC2
//! rule is removed within a few seconds of its end time, with the timer
//! poller and the sweep both seen working.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jitvm_tests::Moto;
use jitvm_tests::stack::{encode, granted_requests};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BINARY: &str = env!("CARGO_BIN_EXE_jitvm-local");
const ADMIN: &str = "admin-token-0001";
const ALICE: &str = "alice-token-0001";
/// The open-file limit the host runs under: below the flood's 500.
const OPEN_FILES: u32 = 256;
/// How many half-sent requests the attacker holds open.
const FLOOD: usize = 500;
/// How long a fresh health check may take under the flood.
const HEALTHZ_WITHIN: Duration = Duration::from_secs(1);
/// How long after its end time the grant's rule may still be there.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// How often the host sweeps (short, so a sweep is seen during the flood).
const SWEEP_SECS: u64 = 3;
/// The grant's duration: long enough to be opened under the flood first.
const GRANT: &str = "PT15S";
/// Bound on waits for things that should take a second or two (start-up
/// creates the tables and queues).
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn health_and_expiry_hold_up_under_a_flood_of_half_sent_requests() {
    let region = "eu-west-3";
    let moto = Moto::shared();
    let host = LocalHost::start(moto.endpoint(), region);
    let http = reqwest::Client::builder()
        // A fresh connection for every call: the host may close idle ones.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");
    wait_for(
        "the host answering /healthz",
        || async { healthz(host.addr).await.is_ok() },
        &host,
    )
    .await;

    let ec2 = aws_sdk_ec2::Client::new(&moto.config_in(region).await);
    let world = jitvm_tests::ec2_world(&ec2, &[]).await;
    let arn = format!(
        "arn:aws:ec2:{region}:123456789012:instance/{}",
        world.instance_id
    );
    let policy = json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*",
        "maxRequestAccessDuration": "PT3H"}], "requesters": ["local:alice"]});
    let path = format!("/v1/policies/{}", encode(&arn));
    let (status, enabled) = call(&http, &host, "PUT", &path, ADMIN, Some(policy)).await;
    assert!(status == 200 || status == 201, "enable: {status} {enabled}");
    let group = enabled["firewall"].as_str().expect("a group").to_owned();

    let flood = Flood::start(host.addr, FLOOD);
    let flooded_from = host.log_len();
    let opening = Instant::now() + PATIENCE;
    while flood.opened() < FLOOD {
        assert!(
            Instant::now() < opening,
            "only {} of the flood's {FLOOD} connections opened within {PATIENCE:?}",
            flood.opened()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut slowest = host.healthz_in_time(&flood).await;

    let ask = json!({"virtualMachines": [{"id": arn, "ports": [{"number": 22, "duration": GRANT,
        "allowedSourceAddressPrefix": "198.51.100.7"}]}], "justification": "flood test"});
    let (status, accepted) = call(&http, &host, "POST", "/v1/requests", ALICE, Some(ask)).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("an id").to_owned();
    let record_path = format!("/v1/requests/{id}");
    let port = |record: &Value| record["virtualMachines"][0]["ports"][0].clone();
    wait_for(
        "the request poller opening the grant",
        || async {
            let record = call(&http, &host, "GET", &record_path, ADMIN, None).await.1;
            port(&record)["status"] == "Initiated"
        },
        &host,
    )
    .await;
    let opened = port(&call(&http, &host, "GET", &record_path, ADMIN, None).await.1);
    slowest = slowest.max(host.healthz_in_time(&flood).await);
    let end: jiff::Timestamp = opened["endTimeUtc"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("an end time");
    assert_eq!(
        granted_requests(&ec2, &group).await,
        std::slice::from_ref(&id)
    );

    let overshoot = rule_gone_after(&ec2, &group, &id, end, &host).await;
    slowest = slowest.max(host.healthz_in_time(&flood).await);
    assert!(
        host.logged_since(flooded_from, is_clean_sweep),
        "no sweep finished cleanly during the flood"
    );
    assert!(
        host.logged_since(flooded_from, |line| is_timer_back(line, &id)),
        "the timer poller never received the grant's timer during the flood"
    );
    assert!(flood.open() > 0, "the flood was no longer held at the end");
    eprintln!(
        "under a flood of {FLOOD} ({} closed by the host and opened again): \
         slowest /healthz {} ms, rule gone {} ms after its end",
        flood.reopened(),
        slowest.as_millis(),
        overshoot.as_millis()
    );
}

/// The local host binary, run as `infra/run.sh` runs it, under a low
/// open-file limit; killed when dropped. Its log lines are kept.
struct LocalHost {
    addr: SocketAddr,
    child: Mutex<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl LocalHost {
    fn start(moto: &str, region: &str) -> LocalHost {
        let addr = free_addr();
        let unique = jitvm_tests::unique;
        let mut command = Command::new("bash");
        command
            .args([
                "-c",
                &format!("ulimit -n {OPEN_FILES} && exec \"$0\""),
                BINARY,
            ])
            // Nothing of the developer's own shell (a JITVM_* variable, AWS
            // credentials) reaches the host: only what run.sh would set.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("JITVM_LISTEN", addr.to_string())
            .env("JITVM_LOCAL_TOKENS", format!("admin={ADMIN},alice={ALICE}"))
            .env("JITVM_ADMINS", "local:admin")
            .env("JITVM_SWEEP_INTERVAL_SECS", SWEEP_SECS.to_string())
            .env("JITVM_POLICIES_TABLE", unique("policies"))
            .env("JITVM_REQUESTS_TABLE", unique("requests"))
            .env(
                "JITVM_REQUEST_QUEUE",
                format!("{}.fifo", unique("requests")),
            )
            .env("JITVM_EXPIRY_QUEUE", unique("expiry"))
            .env("JITVM_REGIONS", region)
            .env("AWS_ENDPOINT_URL", moto)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", region)
            .env("AWS_DEFAULT_REGION", region)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // The timer's "timer back" line is at debug: it shows the
            // timer poller at work.
            .env("RUST_LOG", "info,jitvm_expire::timer=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the local host starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            keep_lines(out, &log);
        }
        if let Some(err) = child.stderr.take() {
            keep_lines(err, &log);
        }
        LocalHost {
            addr,
            child: Mutex::new(child),
            log,
        }
    }

    fn log_len(&self) -> usize {
        self.log.lock().expect("the log").len()
    }

    fn logged_since(&self, from: usize, matches: impl Fn(&Value) -> bool) -> bool {
        self.log.lock().expect("the log")[from..]
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|line| matches(&line))
    }

    /// How the host ended, if it did.
    fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().ok()?.try_wait().ok().flatten()
    }

    /// A fresh `GET /healthz` answers within [`HEALTHZ_WITHIN`]; returns
    /// how long it took.
    async fn healthz_in_time(&self, flood: &Flood) -> Duration {
        match healthz(self.addr).await {
            Ok(took) => took,
            Err(e) => panic!(
                "GET /healthz under the flood ({} of {FLOOD} open): {e}",
                flood.open()
            ),
        }
    }
}

impl Drop for LocalHost {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking()
            && let Ok(log) = self.log.lock()
        {
            let tail = log.len().saturating_sub(40);
            eprintln!(
                "the local host's last log lines:\n{}",
                log[tail..].join("\n")
            );
        }
    }
}

fn keep_lines(from: impl Read + Send + 'static, log: &Arc<Mutex<Vec<String>>>) {
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if let Ok(mut log) = log.lock() {
                log.push(line);
            }
        }
    });
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn is_clean_sweep(line: &Value) -> bool {
    line["fields"]["message"] == "sweep done" && line["fields"]["failed_scopes"] == 0
}

fn is_timer_back(line: &Value, id: &str) -> bool {
    line["fields"]["message"] == "timer back" && line["fields"]["request_id"] == id
}

/// Waits until `check` holds, looking every 100 ms, for at most
/// [`PATIENCE`], while the host runs.
async fn wait_for<F, Fut>(what: &str, mut check: F, host: &LocalHost)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        if let Some(status) = host.exited() {
            panic!("the local host exited ({status}) before {what}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `id`'s rule to leave `group`, allowing [`CLOSE_WITHIN`] after
/// `end`; returns how long after `end` it was seen gone.
async fn rule_gone_after(
    ec2: &aws_sdk_ec2::Client,
    group: &str,
    id: &str,
    end: jiff::Timestamp,
    host: &LocalHost,
) -> Duration {
    loop {
        let present = granted_requests(ec2, group).await.iter().any(|r| r == id);
        let late = jiff::Timestamp::now().duration_since(end);
        if !present {
            return late.try_into().unwrap_or(Duration::ZERO);
        }
        assert!(
            late < jiff::SignedDuration::try_from(CLOSE_WITHIN).expect("small"),
            "the rule of {id} was still there {late:#} after its end time"
        );
        if let Some(status) = host.exited() {
            panic!("the local host exited ({status})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh connection's `GET /healthz`: how long the answer took, or why
/// there was none within [`HEALTHZ_WITHIN`].
async fn healthz(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(HEALTHZ_WITHIN, exchange).await {
        Err(_) => Err(format!("no answer within {HEALTHZ_WITHIN:?}")),
        Ok(Err(e)) => Err(format!("the exchange failed: {e}")),
        Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 200") => Ok(started.elapsed()),
        Ok(Ok(answer)) => Err(format!(
            "answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        )),
    }
}

/// One HTTP call as `token`: the status and the JSON answer.
async fn call(
    http: &reqwest::Client,
    host: &LocalHost,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = http
        .request(method, format!("http://{}{path}", host.addr))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the host answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The attacker: `n` connections, each sending part of a request with no
/// token and then nothing more. Half stop inside the headers; half send
/// whole headers announcing a 4 KiB body and stop after 10 bytes of it.
/// When the host closes one, it is opened again after a short pause (an
/// attacker reconnecting in a tight loop would mostly measure the CPU).
/// Stopped when dropped.
struct Flood {
    tasks: tokio::task::JoinSet<()>,
    opened: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    reopened: Arc<AtomicUsize>,
}

const PARTIAL_HEADERS: &[u8] = b"POST /v1/requests HTTP/1.1\r\nHost: localhost\r\nContent-Ty";
const PARTIAL_BODY: &[u8] = b"POST /v1/requests HTTP/1.1\r\nHost: localhost\r\n\
    Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"virtual";

impl Flood {
    fn start(addr: SocketAddr, n: usize) -> Flood {
        let mut flood = Flood {
            tasks: tokio::task::JoinSet::new(),
            opened: Arc::default(),
            open: Arc::default(),
            reopened: Arc::default(),
        };
        for i in 0..n {
            let part = if i % 2 == 0 {
                PARTIAL_HEADERS
            } else {
                PARTIAL_BODY
            };
            let (opened, open, reopened) = (
                flood.opened.clone(),
                flood.open.clone(),
                flood.reopened.clone(),
            );
            flood.tasks.spawn(async move {
                let mut first = true;
                loop {
                    if let Ok(mut stream) = TcpStream::connect(addr).await
                        && stream.write_all(part).await.is_ok()
                    {
                        if first {
                            opened.fetch_add(1, Ordering::SeqCst);
                            first = false;
                        }
                        open.fetch_add(1, Ordering::SeqCst);
                        // Held until the host closes it (or answers it).
                        let mut sink = [0u8; 1024];
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                        open.fetch_sub(1, Ordering::SeqCst);
                        reopened.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        flood
    }

    /// How many of the connections were opened at least once.
    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// How many are open now, as the attacker sees them.
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// How many times the host closed one and it was opened again.
    fn reopened(&self) -> usize {
        self.reopened.load(Ordering::SeqCst)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

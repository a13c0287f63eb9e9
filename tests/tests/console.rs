//! The web console as a person uses it: Debian's Chromium, headless, on the
//! page the local host serves, against moto and the ARM fake. The test
//! fails on any error the page logs (script errors, failed loads, Content
//! Security Policy violations), and writes a screenshot of each screen to
//! `JITVM_SCREENSHOTS` (default `<target>/console-screenshots`), which the
//! README shows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jitvm_tests::browser::Browser;
use jitvm_tests::stack::{
    ADMIN, ALICE, BOB, Stack, azure_vm, eventually, grant_rule_names, granted_requests, put_policy,
    record,
};
use serde_json::{Value, json};

/// A justification that would run script if the page ever wrote user text
/// as markup.
const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\"> patching sshd";

fn screenshots() -> PathBuf {
    std::env::var_os("JITVM_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("console-screenshots")
        })
}

/// Signs in with `token` on a fresh load of the page, as nobody.
async fn sign_in(browser: &Browser, base: &str, token: &str, who: &str) {
    browser.goto(&format!("{base}/")).await;
    browser.run("sessionStorage.clear(); return null").await;
    browser.goto(&format!("{base}/")).await;
    browser.wait_shown("#token").await;
    browser.fill("#token", token).await;
    browser.click("#signin-button").await;
    browser.wait_text("#me", who).await;
}

/// The CSS selector of the one row of `table` whose text has `needle`.
async fn row_with(browser: &Browser, table: &str, needle: &str) -> String {
    row_with_all(browser, table, &[needle]).await
}

/// The CSS selector of the one row of `table` whose text has every one of
/// `needles`.
async fn row_with_all(browser: &Browser, table: &str, needles: &[&str]) -> String {
    // Rows are picked once the page has finished redrawing them.
    browser.find("body:not([data-loading])").await;
    let texts: Value = browser
        .run(&format!(
            "return Array.from(document.querySelectorAll('{table} tbody tr')).map(r => r.textContent)"
        ))
        .await;
    let rows: Vec<&str> = texts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let at: Vec<usize> = (0..rows.len())
        .filter(|i| needles.iter().all(|n| rows[*i].contains(n)))
        .collect();
    assert_eq!(at.len(), 1, "{needles:?} in {table}: {rows:#?}");
    format!("{table} tbody tr:nth-child({})", at[0] + 1)
}

/// The row of `vm` in the VM table's current tab.
fn row(vm: &str) -> String {
    format!("#vm-table tr[data-vm=\"{vm}\"]")
}

/// How many buttons matching `css` the element `within` holds.
async fn count(browser: &Browser, within: &str, css: &str) -> u64 {
    browser
        .run(&format!(
            "return document.querySelector('{within}').querySelectorAll('{css}').length"
        ))
        .await
        .as_u64()
        .unwrap_or_default()
}

/// What the page's script fetched since [`spy_on_fetch`]: each URL.
async fn fetched(browser: &Browser) -> Vec<String> {
    let urls = browser.run("return window.__fetched || []").await;
    urls.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// Records every URL the page fetches from now on (until it reloads).
async fn spy_on_fetch(browser: &Browser) {
    browser
        .run(
            "window.__fetched = []; const real = window.fetch; \
             window.fetch = (url, ...rest) => { window.__fetched.push(String(url)); return real(url, ...rest); }; \
             return null",
        )
        .await;
}

async fn assert_no_page_errors(browser: &Browser, step: &str) {
    let errors = browser.errors().await;
    assert!(
        errors.is_empty(),
        "the page logged errors {step}: {errors:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_enables_requests_approves_revokes_and_sees_the_activity() {
    let stack = Stack::start("eu-north-1").await;
    let instance = stack.instance(&[]).await;
    let (azure, nsg) = azure_vm(&stack.arm, "rg-console", "db-01", "10.0.0.4");
    // An interface with five groups already cannot take jitvm's.
    let mut five = Vec::new();
    for i in 0..5 {
        five.push(
            jitvm_tests::create_group(&stack.ec2, &instance.world.vpc_id, &format!("c{i}")).await,
        );
    }
    let full = stack.adopt(
        jitvm_tests::launch(
            &stack.ec2,
            &instance.world.vpc_id,
            &instance.world.subnet_id,
            &five,
        )
        .await,
    );
    let _poller = tokio::spawn(Arc::clone(&stack.host).run_poller());
    let browser = Browser::start(screenshots()).await;
    let base = stack.base.clone();

    // 1. An admin signs in and enables JIT on the EC2 instance (Defender's
    //    defaults: 22, 3389, 5985, 5986 from anywhere, 3 hours).
    browser.goto(&format!("{base}/")).await;
    browser.wait_shown("#token").await;
    browser.screenshot("sign-in").await;
    sign_in(&browser, &base, ADMIN, "local:admin").await;
    browser.click("#tab-Unsupported").await;
    browser
        .wait_text(&row(&full.arn), "5 security groups")
        .await;
    browser.screenshot("vms-unsupported").await;
    browser.click("#tab-NotConfigured").await;
    browser.screenshot("vms-not-configured").await;
    browser
        .click(&format!("{} .enable-jit", row(&instance.arn)))
        .await;
    browser.find("#policy-ports .port-number").await;
    browser.screenshot("policy-editor").await;
    browser.click("#policy-save").await;
    browser.wait_text("#policy-result", "Saved: version").await;
    browser.click("#policy-dialog .close").await;

    // Another admin changes the policy while this one has it open: the
    // stale copy is not saved over theirs (If-Match), and the page says so.
    browser.click("#tab-Configured").await;
    browser
        .click(&format!("{} .edit-policy", row(&instance.arn)))
        .await;
    browser.wait_text("#policy-title", "Edit JIT policy").await;
    let (status, theirs) = stack
        .call(
            reqwest::Method::GET,
            &Stack::policy_path(&instance.arn),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{theirs}");
    let (status, theirs) = put_policy(
        &stack,
        &instance.arn,
        json!({"ports": theirs["ports"], "requesters": theirs["requesters"], "approvers": theirs["approvers"]}),
    )
    .await;
    assert_eq!(status, 200, "{theirs}");
    let version = theirs["version"].as_u64().expect("a version");
    browser.click("#policy-save").await;
    browser
        .wait_text("#policy-result", "changed by someone else")
        .await;
    browser
        .wait_text("#policy-dialog .dialog-notice", "reload it")
        .await;
    let errors = browser.errors().await;
    assert!(
        errors.len() == 1 && errors[0].contains("412"),
        "only the refused save: {errors:#?}"
    );
    browser.click("#policy-result .reload-policy").await;
    browser
        .wait_text("#policy-result", &format!("Reloaded version {version}"))
        .await;
    browser.click("#policy-save").await;
    browser
        .wait_text(
            "#policy-result",
            &format!("Saved: version {}.", version + 1),
        )
        .await;
    browser.click("#policy-dialog .close").await;

    // ... and on the Azure VM, where local:bob approves each request.
    browser.click("#tab-NotConfigured").await;
    browser.click(&format!("{} .enable-jit", row(&azure))).await;
    browser.fill("#policy-approvers", "local:bob").await;
    browser.click("#policy-save").await;
    browser.wait_text("#policy-result", "Saved: version").await;
    browser.click("#policy-dialog .close").await;
    browser.click("#tab-Configured").await;
    browser.find(&row(&azure)).await;
    browser.find(&row(&instance.arn)).await;
    assert_no_page_errors(&browser, "while the admin enabled JIT").await;

    // 2. A requester asks for port 22 from their own address, with a
    //    justification that is markup.
    sign_in(&browser, &base, ALICE, "local:alice").await;
    browser
        .click(&format!("{} .request-access", row(&instance.arn)))
        .await;
    browser
        .find("#request-ports input[value=\"22\"]:checked")
        .await;
    browser.fill("#justification", HOSTILE).await;
    browser.screenshot("request-access").await;
    browser.click("#request-submit").await;

    // 3. The rule opens, and the page shows it Initiated.
    let status = browser
        .wait_text("#request-status li[data-port=\"22\"]", "Initiated")
        .await;
    assert!(
        status.starts_with("Port 22/* from 127.0.0.1/32: Initiated until"),
        "{status}"
    );
    browser
        .wait_text("#request-status .headline", "Open: connect to")
        .await;
    browser.screenshot("request-initiated").await;
    let instance_id = instance.arn.rsplit('/').next().expect("an instance id");
    let group = stack
        .group_id(&format!("jitvm-{instance_id}"))
        .await
        .expect("the dedicated group");
    let rules = stack.ingress_rules_of_group(&group).await;
    // Defender's default protocol is Any: TCP and UDP, each from this
    // address to port 22 only.
    let mut opened: Vec<_> = rules
        .iter()
        .map(|r| {
            (
                r.ip_protocol.clone(),
                r.cidr_ipv4.clone(),
                r.from_port,
                r.to_port,
            )
        })
        .collect();
    opened.sort();
    let only = |protocol: &str| {
        (
            Some(protocol.to_owned()),
            Some("127.0.0.1/32".to_owned()),
            Some(22),
            Some(22),
        )
    };
    assert_eq!(opened, [only("tcp"), only("udp")]);
    browser.click("#request-dialog .close").await;

    // 4. On the VM with approvers a request waits; the approver sees it,
    //    with the justification as text. Alice asks three times; once the
    //    dialog closes, its live status stops asking. Bob denies one
    //    (a reason is required) and approves another with a reason.
    for justification in [HOSTILE, "second look", "third time"] {
        browser
            .click(&format!("{} .request-access", row(&azure)))
            .await;
        browser.fill("#justification", justification).await;
        browser.click("#request-submit").await;
        browser
            .wait_text("#request-status", "Waiting for an approver")
            .await;
        let id = browser.text("#request-status .headline code").await;
        assert_eq!(id.len(), 32, "{id}");
        browser.click("#request-dialog .close").await;
        spy_on_fetch(&browser).await;
        // The poll of a pending request asks every 3 s.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let after = fetched(&browser).await;
        assert!(
            !after.iter().any(|u| u.contains(&id)),
            "the closed dialog still polls: {after:?}"
        );
    }
    sign_in(&browser, &base, BOB, "local:bob").await;
    browser.wait_text("#pending-count", "3").await;
    browser.click("#nav-pending").await;
    browser.wait_text("#pending-table", "patching sshd").await;
    browser.screenshot("pending-approvals").await;
    let second = row_with(&browser, "#pending-table", "second look").await;
    browser.click(&format!("{second} .deny")).await;
    browser.wait_shown("#decision-reason").await;
    browser.click("#decision-submit").await;
    browser
        .wait_text("#decision-dialog .dialog-notice", "Say why you deny it")
        .await;
    assert!(
        browser.shown("#decision-dialog").await,
        "no deny without a reason"
    );
    browser.fill("#decision-reason", "one is enough").await;
    browser.click("#decision-submit").await;
    browser.wait_text("#notice", "denied").await;
    browser.wait_text("#pending-count", "2").await;
    let first = row_with(&browser, "#pending-table", "patching sshd").await;
    let justification = browser.text(&format!("{first} td.justification")).await;
    assert_eq!(justification, HOSTILE);
    let approved_id = browser
        .run(&format!(
            "return document.querySelector('{first}').dataset.request"
        ))
        .await;
    let approved_id = approved_id.as_str().expect("a request id").to_owned();
    browser.click(&format!("{first} .approve")).await;
    browser.wait_shown("#decision-reason").await;
    browser.fill("#decision-reason", "for the migration").await;
    browser.click("#decision-submit").await;
    browser.wait_text("#notice", "approved").await;
    browser.wait_text("#pending-count", "1").await;
    eventually("the Azure rule opens", Duration::from_secs(30), || async {
        grant_rule_names(&stack.arm, &nsg).len() == 1
    })
    .await;
    let approved = record(&stack, &approved_id).await;
    assert_eq!(approved["decidedBy"], "local:bob", "{approved}");
    assert!(
        approved["history"]
            .to_string()
            .contains("approved by local:bob: for the migration"),
        "{approved}"
    );

    // 5. The requester sees each request as it stands: open ones with the
    //    time left (revoke or extend), the denied one with its reason, the
    //    pending one without a time (withdraw). She withdraws that one and
    //    revokes the EC2 grant.
    sign_in(&browser, &base, ALICE, "local:alice").await;
    browser.click("#nav-mine").await;
    browser.wait_text("#mine-table", "Initiated").await;
    browser.wait_text("#mine-table", "one is enough").await;
    let ec2_row = row_with(&browser, "#mine-table", instance_id).await;
    let azure_open =
        row_with_all(&browser, "#mine-table", &[azure.as_str(), "patching sshd"]).await;
    let denied = row_with(&browser, "#mine-table", "second look").await;
    let pending = row_with(&browser, "#mine-table", "third time").await;
    for open in [&ec2_row, &azure_open] {
        let status = browser.text(&format!("{open} td.status")).await;
        assert!(status.contains("Open: 22"), "{status}");
        let remaining = browser.text(&format!("{open} td.remaining")).await;
        // The hour asked for, less the minute or two the test took.
        let minutes = remaining
            .strip_suffix('s')
            .and_then(|r| r.split_once("m "))
            .and_then(|(m, _)| m.parse::<u32>().ok());
        assert!(
            minutes.is_some_and(|m| (50..60).contains(&m)),
            "{remaining}"
        );
        assert_eq!(count(&browser, open, ".revoke").await, 1);
        assert_eq!(count(&browser, open, ".extend").await, 1);
        assert_eq!(count(&browser, open, ".withdraw").await, 0);
    }
    let status = browser.text(&format!("{denied} td.status")).await;
    assert!(status.contains("Denied"), "{status}");
    assert!(browser.text(&denied).await.contains("one is enough"));
    assert_eq!(browser.text(&format!("{denied} td.remaining")).await, "—");
    assert_eq!(count(&browser, &denied, "button").await, 0);
    let status = browser.text(&format!("{pending} td.status")).await;
    assert!(status.contains("Waiting for approval"), "{status}");
    assert_eq!(browser.text(&format!("{pending} td.remaining")).await, "—");
    assert_eq!(count(&browser, &pending, ".withdraw").await, 1);
    assert_eq!(count(&browser, &pending, ".revoke, .extend").await, 0);
    browser.screenshot("my-requests").await;
    browser.click(&format!("{pending} .withdraw")).await;
    browser.wait_text("#notice", "withdrawn").await;
    let pending = row_with(&browser, "#mine-table", "third time").await;
    browser
        .wait_text(&format!("{pending} td.status"), "Denied")
        .await;
    let ec2_row = row_with(&browser, "#mine-table", instance_id).await;
    browser.click(&format!("{ec2_row} .revoke")).await;
    browser.wait_text("#notice", "revoked").await;
    eventually("the EC2 rule closes", Duration::from_secs(30), || async {
        granted_requests(&stack.ec2, &group).await.is_empty()
    })
    .await;
    let ec2_row = row_with(&browser, "#mine-table", instance_id).await;
    browser.wait_text(&ec2_row, "UserRequested").await;
    assert!(
        browser
            .text(&format!("{ec2_row} td.status"))
            .await
            .contains("Closed")
    );
    assert_eq!(browser.text(&format!("{ec2_row} td.remaining")).await, "—");

    // 6. The admin sees it in the activity, and the VM tab shows the week.
    sign_in(&browser, &base, ADMIN, "local:admin").await;
    let connections = browser.wait_text(&row(&azure), "local:alice").await;
    assert!(
        connections.contains("22 ← 127.0.0.1/32 · local:alice · until"),
        "{connections}"
    );
    browser.wait_text(&row(&instance.arn), "local:alice").await;
    browser.screenshot("vms-configured").await;
    browser.click("#nav-activity").await;
    browser.wait_text("#activity-table", "UserRequested").await;
    let ec2 = row_with(&browser, "#activity-table", instance_id).await;
    let cells: Vec<String> = {
        let mut cells = Vec::new();
        for n in 3..=7 {
            cells.push(browser.text(&format!("{ec2} td:nth-child({n})")).await);
        }
        cells
    };
    assert_eq!(cells[0], "local:alice");
    assert!(
        cells[1].starts_with("22/* from 127.0.0.1/32 Revoked UserRequested"),
        "{cells:?}"
    );
    assert_eq!(cells[2], "Approved");
    assert_eq!(cells[4], HOSTILE);
    let azure_approved = row_with_all(
        &browser,
        "#activity-table",
        &[azure.as_str(), "patching sshd"],
    )
    .await;
    assert_eq!(
        browser
            .text(&format!("{azure_approved} td:nth-child(6)"))
            .await,
        "local:bob"
    );
    assert!(browser.shown("#activity-csv").await);
    browser.screenshot("activity").await;

    // The CSV comes from the API as it is, BOM and all, under its name.
    // (The page's policy lets nothing fetch the blob: URL back, so the
    // test keeps the Blob the page makes, and the name it clicks.)
    browser
        .run(
            "window.__saved = {}; const real = URL.createObjectURL; \
             URL.createObjectURL = (blob) => { \
               blob.arrayBuffer().then((b) => { window.__saved.bytes = Array.from(new Uint8Array(b)); }); \
               return real(blob); }; \
             HTMLAnchorElement.prototype.click = function () { window.__saved.name = this.download; }; \
             return null",
        )
        .await;
    browser.click("#activity-csv").await;
    browser
        .wait_text("#notice", "Downloaded jitvm-audit-")
        .await;
    let mut saved = Value::Null;
    for _ in 0..50 {
        saved = browser.run("return window.__saved").await;
        if saved["bytes"].is_array() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = saved["name"].as_str().expect("a file name").to_owned();
    assert!(
        name.starts_with("jitvm-audit-") && name.ends_with(".csv"),
        "{name}"
    );
    let bytes: Vec<u8> = saved["bytes"]
        .as_array()
        .expect("the bytes")
        .iter()
        .filter_map(Value::as_u64)
        .filter_map(|b| u8::try_from(b).ok())
        .collect();
    assert_eq!(bytes[..3], [0xef, 0xbb, 0xbf], "a UTF-8 byte order mark");
    let csv = String::from_utf8(bytes[3..].to_vec()).expect("UTF-8");
    assert!(csv.starts_with("\"time\",\"requestId\""), "{csv}");
    assert!(csv.contains(&approved_id), "{csv}");
    assert!(csv.contains("UserRequested"), "{csv}");

    // Nothing the users wrote ran as markup, and the page logged nothing.
    let title = browser.run("return document.title").await;
    assert_eq!(title, "jitvm · Just-in-time VM access");
    let images = browser
        .run("return document.querySelectorAll('main img, dialog img').length")
        .await;
    assert_eq!(images, 0);
    assert_no_page_errors(&browser, "in the whole session").await;
}

/// An OpenID Connect provider on loopback that does what a real one does
/// for a public client: discovery, an authorization endpoint that sends
/// the browser back with a code, and a token endpoint that hands out an ID
/// token only for the verifier whose SHA-256 is the challenge it was shown.
/// The ID token is a JWT with the issuer, the audience and the nonce it was
/// asked for (or a wrong one, when the test says so); each one it issues
/// becomes a bearer token of `local:<name>` on the local host, so the page
/// alone stands between a wrong token and a sign-in.
mod provider {
    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{SystemTime, UNIX_EPOCH};

    use axum::extract::{Form, Query, State};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use base64::Engine;
    use jitvm_local::Tokens;
    use serde_json::json;
    use sha2::Digest;

    pub const CLIENT_ID: &str = "jitvm-console";
    pub const CODE: &str = "code-0b7f3a";

    /// What is wrong with the next ID token the token endpoint issues.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Tamper {
        Issuer,
        Audience,
        Nonce,
        Expired,
    }

    #[derive(Default)]
    pub struct Seen {
        /// What /authorize was asked (its query), last time.
        pub authorize: Option<HashMap<String, String>>,
        /// What /token answered: 200, or 400 with why.
        pub exchanges: Vec<Result<(), String>>,
        /// The ID tokens it issued, in order.
        pub issued: Vec<String>,
        /// What the next ID tokens get wrong, first first.
        pub tamper: VecDeque<Tamper>,
    }

    pub struct Provider {
        pub base: String,
        pub seen: Arc<Mutex<Seen>>,
        /// The local host's tokens, once the stack runs.
        pub host: Arc<OnceLock<Tokens>>,
    }

    #[derive(Clone)]
    struct Shared {
        base: String,
        name: String,
        seen: Arc<Mutex<Seen>>,
        host: Arc<OnceLock<Tokens>>,
    }

    /// A provider whose ID tokens stand for `local:<name>`.
    pub async fn start(name: &str) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let host = Arc::new(OnceLock::new());
        let shared = Shared {
            base: base.clone(),
            name: name.to_owned(),
            seen: seen.clone(),
            host: host.clone(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/token", post(token_endpoint))
            .with_state(shared);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider { base, seen, host }
    }

    fn cors(status: StatusCode, body: serde_json::Value) -> Response {
        (
            status,
            [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
            Json(body),
        )
            .into_response()
    }

    async fn discovery(State(s): State<Shared>) -> Response {
        cors(
            StatusCode::OK,
            json!({
                "issuer": s.base,
                "authorization_endpoint": format!("{}/authorize", s.base),
                "token_endpoint": format!("{}/token", s.base),
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            }),
        )
    }

    async fn authorize(
        State(s): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        let back = format!(
            "{}?code={CODE}&state={}",
            query.get("redirect_uri").cloned().unwrap_or_default(),
            query.get("state").cloned().unwrap_or_default()
        );
        s.seen.lock().expect("not poisoned").authorize = Some(query);
        Redirect::to(&back).into_response()
    }

    /// An unsigned-looking JWT: the page reads its claims, the signature
    /// is the API's to check.
    fn jwt(claims: &serde_json::Value) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT","kid":"test"}"#),
            b64(claims.to_string().as_bytes()),
            b64(b"not-a-real-signature")
        )
    }

    async fn token_endpoint(
        State(s): State<Shared>,
        Form(form): Form<HashMap<String, String>>,
    ) -> Response {
        let mut seen = s.seen.lock().expect("not poisoned");
        let asked = seen.authorize.clone().unwrap_or_default();
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let checks = [
            (
                form.get("grant_type").map(String::as_str) == Some("authorization_code"),
                "grant_type",
            ),
            (form.get("code").map(String::as_str) == Some(CODE), "code"),
            (
                form.get("client_id").map(String::as_str) == Some(CLIENT_ID),
                "client_id",
            ),
            (
                form.get("redirect_uri") == asked.get("redirect_uri"),
                "redirect_uri",
            ),
            (
                asked.get("code_challenge_method").map(String::as_str) == Some("S256"),
                "method",
            ),
            (
                Some(&challenge) == asked.get("code_challenge") && verifier.len() >= 43,
                "verifier",
            ),
        ];
        if let Some((_, failed)) = checks.iter().find(|(ok, _)| !ok) {
            seen.exchanges.push(Err((*failed).to_owned()));
            return cors(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
        }
        seen.exchanges.push(Ok(()));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let tamper = seen.tamper.pop_front();
        let nonce = asked.get("nonce").cloned().unwrap_or_default();
        let claims = json!({
            "iss": if tamper == Some(Tamper::Issuer) { "http://127.0.0.1:1/elsewhere".to_owned() } else { s.base.clone() },
            "aud": if tamper == Some(Tamper::Audience) { "another-client" } else { CLIENT_ID },
            "nonce": if tamper == Some(Tamper::Nonce) { "replayed-nonce".to_owned() } else { nonce },
            "sub": s.name,
            "iat": now,
            "exp": if tamper == Some(Tamper::Expired) { now - 3600 } else { now + 3600 },
            "jti": seen.issued.len(),
        });
        let token = jwt(&claims);
        // Even a wrong token is one the host takes: only the page refuses it.
        if let Some(tokens) = s.host.get() {
            tokens.add(&s.name, &token).expect("a new token");
        }
        seen.issued.push(token.clone());
        cors(
            StatusCode::OK,
            json!({"id_token": token, "access_token": "opaque", "token_type": "Bearer", "expires_in": 3600}),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_uses_the_authorization_code_with_pkce_and_holds_no_secret() {
    let idp = provider::start("alice").await;
    let stack = Stack::start_with(
        "sa-east-1",
        &[
            ("JITVM_CONSOLE_OIDC_ISSUER", idp.base.as_str()),
            ("JITVM_CONSOLE_OIDC_CLIENT_ID", provider::CLIENT_ID),
        ],
    )
    .await;
    assert!(idp.host.set(stack.host.tokens.clone()).is_ok());
    let browser = Browser::start(screenshots()).await;
    let base = stack.base.clone();

    // An answer that did not start here is refused, and nothing is traded.
    browser
        .goto(&format!("{base}/?code={}&state=forged", provider::CODE))
        .await;
    browser
        .wait_text("#notice", "does not belong to this sign-in")
        .await;
    assert!(idp.seen.lock().expect("not poisoned").exchanges.is_empty());
    let url = browser.run("return location.href").await;
    assert_eq!(url, format!("{base}/"), "the forged code is gone too");

    // An ID token from another issuer, for another client, with another
    // nonce or expired is refused, though the API would take it.
    for (tamper, why) in [
        (
            provider::Tamper::Issuer,
            "was issued by http://127.0.0.1:1/elsewhere",
        ),
        (provider::Tamper::Audience, "is not for this console"),
        (
            provider::Tamper::Nonce,
            "does not carry the nonce of this sign-in",
        ),
        (provider::Tamper::Expired, "has expired"),
    ] {
        idp.seen
            .lock()
            .expect("not poisoned")
            .tamper
            .push_back(tamper);
        browser.wait_shown("#oidc-button").await;
        browser.click("#oidc-button").await;
        browser.wait_text("#notice", why).await;
        assert!(
            browser.shown("#oidc-button").await,
            "{tamper:?}: not signed in"
        );
        assert!(!browser.shown("#app").await, "{tamper:?}: not signed in");
        let kept = browser
            .run("return sessionStorage.getItem('jitvm.token')")
            .await;
        assert_eq!(kept, Value::Null, "{tamper:?}: the token is not kept");
    }

    browser.wait_shown("#oidc-button").await;
    assert!(
        !browser.shown("#token").await,
        "no token field with single sign-on"
    );
    browser.click("#oidc-button").await;
    browser.wait_text("#me", "local:alice").await;
    let url = browser.run("return location.href").await;
    assert_eq!(url, format!("{base}/"), "the code is gone from the address");

    let good = {
        let seen = idp.seen.lock().expect("not poisoned");
        let asked = seen.authorize.clone().expect("the provider was asked");
        assert_eq!(asked["response_type"], "code");
        assert_eq!(asked["client_id"], provider::CLIENT_ID);
        assert_eq!(asked["redirect_uri"], format!("{base}/"));
        assert_eq!(asked["scope"], "openid");
        assert!(asked["nonce"].len() >= 16, "{asked:?}");
        assert_ne!(asked["nonce"], asked["state"]);
        assert!(!asked.contains_key("client_secret"));
        assert_eq!(
            seen.exchanges,
            vec![Ok(()); 5],
            "five exchanges, each with the right verifier"
        );
        seen.issued.last().cloned().expect("an ID token")
    };
    // The ID token is kept in this tab only.
    let stored = browser
        .run("return [sessionStorage.getItem('jitvm.token'), localStorage.length]")
        .await;
    assert_eq!(stored, serde_json::json!([good, 0]));
    assert_no_page_errors(&browser, "while signing in").await;

    // A token in the address's fragment (the implicit flow, which this
    // page never asks for) is neither used nor left in the address.
    browser.click("#signout").await;
    browser.wait_shown("#oidc-button").await;
    browser.goto("about:blank").await;
    browser
        .goto(&format!("{base}/#id_token={good}&state=x"))
        .await;
    browser.wait_text("#notice", "was ignored").await;
    assert!(browser.shown("#oidc-button").await);
    assert!(!browser.shown("#app").await);
    let url = browser.run("return location.href").await;
    assert_eq!(url, format!("{base}/"));
    assert_no_page_errors(&browser, "after a token in the fragment").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_runs_no_inline_script_and_a_violation_is_reported() {
    let stack = Stack::start("ca-west-1").await;
    let browser = Browser::start(screenshots()).await;
    browser.goto(&format!("{}/", stack.base)).await;
    browser.wait_shown("#token").await;
    assert_no_page_errors(&browser, "on load").await;

    // Whatever got into the page as markup could not run: the policy
    // blocks inline script, and the browser says so.
    browser
        .run("const s = document.createElement('script'); s.textContent = \"document.title = 'inline ran'\"; document.body.append(s); return null")
        .await;
    let title = browser.run("return document.title").await;
    assert_eq!(title, "jitvm · Just-in-time VM access");
    let errors = browser.errors().await;
    assert!(
        errors.iter().any(|e| e.contains("Content Security Policy")),
        "{errors:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_glass_principal_opens_at_once_with_a_justification_and_the_page_marks_it() {
    let stack = Stack::start("eu-west-2").await;
    let instance = stack.instance(&[]).await;
    let (status, body) = put_policy(
        &stack,
        &instance.arn,
        json!({"ports": [{"number": 22, "protocol": "tcp", "allowedSourceAddressPrefix": "*",
            "maxRequestAccessDuration": "PT3H"}],
            "approvers": ["local:bob"],
            "breakGlass": {"principals": ["local:alice"], "maxRequestAccessDuration": "PT1H"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let _poller = tokio::spawn(Arc::clone(&stack.host).run_poller());
    let browser = Browser::start(screenshots()).await;
    let base = stack.base.clone();

    // Bob is no break-glass principal: the choice is not offered to him.
    sign_in(&browser, &base, BOB, "local:bob").await;
    browser
        .click(&format!("{} .request-access", row(&instance.arn)))
        .await;
    browser.find("#break-glass-row[hidden]").await;
    browser.click("#request-dialog .close").await;

    // Alice is. Without a justification the page refuses before asking.
    sign_in(&browser, &base, ALICE, "local:alice").await;
    browser
        .click(&format!("{} .request-access", row(&instance.arn)))
        .await;
    browser.find("#break-glass-row:not([hidden])").await;
    browser.click("#break-glass").await;
    browser.click("#request-submit").await;
    browser
        .wait_text("#request-dialog .dialog-notice", "needs a justification")
        .await;
    browser
        .fill("#justification", "prod is down, INC-4711")
        .await;
    browser.click("#request-submit").await;
    // Opened at once, no approver asked.
    browser
        .wait_text("#request-status li[data-port=\"22\"]", "Initiated")
        .await;
    let id = browser.text("#request-status .headline code").await;
    let stored = record(&stack, &id).await;
    assert_eq!(stored["breakGlass"], true, "{stored}");
    assert_eq!(stored["status"], "Approved");
    browser.click("#request-dialog .close").await;

    browser.click("#nav-mine").await;
    let mine = row_with(&browser, "#mine-table", "prod is down").await;
    browser
        .wait_text(&format!("{mine} .pill.break-glass"), "break-glass")
        .await;
    browser.screenshot("break-glass").await;
    assert_no_page_errors(&browser, "after a break-glass request").await;
}

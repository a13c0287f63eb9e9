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
    ADMIN, ALICE, BOB, Stack, azure_vm, eventually, grant_rule_names, granted_requests,
};
use serde_json::Value;

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
        .filter(|i| rows[*i].contains(needle))
        .collect();
    assert_eq!(at.len(), 1, "{needle:?} in {table}: {rows:#?}");
    format!("{table} tbody tr:nth-child({})", at[0] + 1)
}

/// The row of `vm` in the VM table's current tab.
fn row(vm: &str) -> String {
    format!("#vm-table tr[data-vm=\"{vm}\"]")
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
    assert!(status.contains("127.0.0.1/32"), "{status}");
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
    //    with the justification as text. Alice asks twice; Bob denies one
    //    with a reason and approves the other.
    for justification in [HOSTILE, "second look"] {
        browser
            .click(&format!("{} .request-access", row(&azure)))
            .await;
        browser.fill("#justification", justification).await;
        browser.click("#request-submit").await;
        browser
            .wait_text("#request-status", "Waiting for an approver")
            .await;
        browser.click("#request-dialog .close").await;
    }
    sign_in(&browser, &base, BOB, "local:bob").await;
    browser.wait_text("#pending-count", "2").await;
    browser.click("#nav-pending").await;
    browser.wait_text("#pending-table", "patching sshd").await;
    browser.screenshot("pending-approvals").await;
    let second = row_with(&browser, "#pending-table", "second look").await;
    browser.click(&format!("{second} .deny")).await;
    browser.wait_shown("#deny-reason").await;
    browser.fill("#deny-reason", "one is enough").await;
    browser.click("#deny-submit").await;
    browser.wait_text("#notice", "denied").await;
    browser.wait_text("#pending-count", "1").await;
    let justification = browser.text("#pending-table td.justification").await;
    assert_eq!(justification, HOSTILE);
    browser.click("#pending-table .approve").await;
    browser.wait_text("#notice", "approved").await;
    eventually("the Azure rule opens", Duration::from_secs(30), || async {
        grant_rule_names(&stack.arm, &nsg).len() == 1
    })
    .await;

    // 5. The requester sees what is open, with the time left, and what was
    //    denied and why; she revokes the EC2 grant.
    sign_in(&browser, &base, ALICE, "local:alice").await;
    browser.click("#nav-mine").await;
    browser.wait_text("#mine-table", "Initiated").await;
    browser.wait_text("#mine-table", "one is enough").await;
    let ec2_row = row_with(&browser, "#mine-table", instance_id).await;
    let remaining = browser.text(&format!("{ec2_row} td.remaining")).await;
    assert!(
        remaining.contains('h') || remaining.contains('m'),
        "{remaining}"
    );
    browser.screenshot("my-requests").await;
    browser.click(&format!("{ec2_row} .revoke")).await;
    browser.wait_text("#notice", "revoked").await;
    eventually("the EC2 rule closes", Duration::from_secs(30), || async {
        granted_requests(&stack.ec2, &group).await.is_empty()
    })
    .await;
    browser.wait_text("#mine-table", "UserRequested").await;

    // 6. The admin sees it in the activity, and the VM tab shows the week.
    sign_in(&browser, &base, ADMIN, "local:admin").await;
    browser.wait_text(&row(&instance.arn), "local:alice").await;
    browser.screenshot("vms-configured").await;
    browser.click("#nav-activity").await;
    browser.wait_text("#activity-table", "UserRequested").await;
    let activity = browser.text("#activity-table").await;
    assert!(activity.contains("local:bob"), "{activity}");
    assert!(browser.shown("#activity-csv").await);
    browser.screenshot("activity").await;
    browser.click("#activity-csv").await;

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
/// the browser back with a code, and a token endpoint that hands out a
/// token only for the verifier whose SHA-256 is the challenge it was shown.
/// The token it gives is a local bearer token, which the local host takes.
mod provider {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Form, Query, State};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use base64::Engine;
    use serde_json::json;
    use sha2::Digest;
    use std::collections::HashMap;

    pub const CLIENT_ID: &str = "jitvm-console";
    pub const CODE: &str = "code-0b7f3a";

    #[derive(Default)]
    pub struct Seen {
        /// What /authorize was asked (its query).
        pub authorize: Option<HashMap<String, String>>,
        /// What /token answered: 200, or 400 with why.
        pub exchanges: Vec<Result<(), String>>,
    }

    pub struct Provider {
        pub base: String,
        pub seen: Arc<Mutex<Seen>>,
    }

    #[derive(Clone)]
    struct Shared {
        base: String,
        token: String,
        seen: Arc<Mutex<Seen>>,
    }

    pub async fn start(token: &str) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Shared {
            base: base.clone(),
            token: token.to_owned(),
            seen: seen.clone(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/token", post(token_endpoint))
            .with_state(shared);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider { base, seen }
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
        cors(
            StatusCode::OK,
            json!({"id_token": s.token, "access_token": "opaque", "token_type": "Bearer", "expires_in": 3600}),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_uses_the_authorization_code_with_pkce_and_holds_no_secret() {
    let idp = provider::start(ALICE).await;
    let stack = Stack::start_with(
        "sa-east-1",
        &[
            ("JITVM_CONSOLE_OIDC_ISSUER", idp.base.as_str()),
            ("JITVM_CONSOLE_OIDC_CLIENT_ID", provider::CLIENT_ID),
        ],
    )
    .await;
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

    browser.wait_shown("#oidc-button").await;
    assert!(
        !browser.shown("#token").await,
        "no token field with single sign-on"
    );
    browser.click("#oidc-button").await;
    browser.wait_text("#me", "local:alice").await;
    let url = browser.run("return location.href").await;
    assert_eq!(url, format!("{base}/"), "the code is gone from the address");

    {
        let seen = idp.seen.lock().expect("not poisoned");
        let asked = seen.authorize.clone().expect("the provider was asked");
        assert_eq!(asked["response_type"], "code");
        assert_eq!(asked["client_id"], provider::CLIENT_ID);
        assert_eq!(asked["redirect_uri"], format!("{base}/"));
        assert_eq!(asked["scope"], "openid");
        assert!(!asked.contains_key("client_secret"));
        assert_eq!(
            seen.exchanges,
            [Ok(())],
            "one exchange, with the right verifier"
        );
    }
    assert_no_page_errors(&browser, "while signing in").await;
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

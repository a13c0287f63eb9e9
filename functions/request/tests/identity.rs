//! Who a caller is, as the request function's real binary derives it from
//! what API Gateway reports (README "Principals"), fed the events API
//! Gateway sends for an IAM user, an assumed role, an IAM Identity Center
//! role and a JWT: `GET /v1/whoami`, and every way tried to approve one's
//! own request or to approve as someone else. Then the Slack app, which
//! lets in only the workspaces the deployment names. AWS is moto.

use jitvm_core::ports::{RequestQuery, RequestStore};
use jitvm_core::{Principal, RequestId};
use jitvm_tests::api_gateway::{Auth, Call, HttpApi, Response};
use jitvm_tests::lambda::{
    ADMIN_ARN, ADMIN_SUB, ALICE_ARN, ALICE_PRINCIPAL, Deployed, Function, JWT_ISSUER, SLACK_SECRET,
    jwt_principal, sso,
};
use jitvm_tests::stack::{click_body, interaction_body, slack_signature, slash_body};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_jitvm-request");
const FUNCTION: &str = "RequestFunction";

/// An IAM user: nobody chooses its name but its account's admins.
const DANA: &str = "arn:aws:iam::123456789012:user/dana";
/// Sessions of roles IAM Identity Center makes, which the deployment
/// trusts (`TrustedSessionRoles: AWSReservedSSO_*`): the identity provider
/// sets the session name.
const SSO_ALICE: &str = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Developers_0a1b2c3d4e5f6a7b/alice@example.com";
const SSO_CAROL: &str = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Approvers_0a1b2c3d4e5f6a7b/carol@example.com";

fn iam(arn: &str) -> Auth {
    Auth::Iam(arn.to_owned())
}

/// A session of role `role` named `session`, as whoever assumed it chose.
fn session(role: &str, session: &str) -> String {
    format!("arn:aws:sts::123456789012:assumed-role/{role}/{session}")
}

struct Setup {
    deployed: Deployed,
    function: Function,
    api: HttpApi,
    arn: String,
}

/// A deployment in `region` with one instance protected by `policy`, and
/// the request function running.
async fn setup(region: &str, policy: Value) -> Setup {
    let deployed = Deployed::new(region).await;
    let vm = deployed.instance().await;
    deployed.enable(&vm.arn, policy).await;
    let function = deployed.start(FUNCTION, BINARY.as_ref()).await;
    Setup {
        deployed,
        function,
        api: HttpApi::from_template("Api"),
        arn: vm.arn,
    }
}

impl Setup {
    async fn call(&self, call: Call) -> Response {
        self.function.call(&self.api, call).await
    }

    /// Asks for port 22 as `who`; the answer.
    async fn ask(&self, who: Auth) -> Response {
        let body = json!({"virtualMachines": [{"id": self.arn, "ports": [{"number": 22,
            "duration": "PT1H", "allowedSourceAddressPrefix": "198.51.100.7"}]}],
            "justification": "deploy"});
        self.call(Call::new("POST", "/v1/requests", who).json(&body))
            .await
    }

    /// Asks for port 22 as `who`, which must leave it pending; its id.
    async fn pending(&self, who: Auth) -> String {
        let answer = self.ask(who).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        assert_eq!(
            answer.json()["status"],
            "PendingApproval",
            "{}",
            answer.body
        );
        answer.json()["id"].as_str().expect("an id").to_owned()
    }

    async fn approve(&self, id: &str, who: Auth) -> Response {
        self.call(Call::new(
            "POST",
            &format!("/v1/requests/{id}/approve"),
            who,
        ))
        .await
    }

    /// The stored status of request `id`.
    async fn status_of(&self, id: &str) -> String {
        let stored = self
            .deployed
            .stack
            .store
            .get_request(&RequestId::parse(id).expect("an id"))
            .await
            .expect("read the record")
            .expect("the record is stored");
        format!("{:?}", stored.value.status())
    }

    /// How many messages wait on the request queue.
    async fn queued(&self) -> usize {
        let answer = self
            .deployed
            .sqs()
            .receive_message()
            .queue_url(&self.deployed.queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        answer.messages.unwrap_or_default().len()
    }
}

async fn whoami(setup: &Setup, api: &HttpApi, who: Auth) -> Value {
    let answer = setup
        .function
        .call(api, Call::new("GET", "/v1/whoami", who))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn whoami_shows_the_principal_each_authentication_gives_and_what_it_may_do() {
    let setup = setup(
        "us-east-1",
        json!({"ports": [22],
            "requesters": [ALICE_PRINCIPAL, SSO_ALICE],
            "approvers": [session("Approvers", "*"), SSO_CAROL]}),
    )
    .await;
    let (api, sso_api) = (&setup.api, &HttpApi::from_template("SsoApi"));
    let vm = json!([setup.arn]);

    let me = whoami(&setup, api, iam(DANA)).await;
    assert_eq!(
        me,
        json!({"principal": DANA, "admin": false, "auditor": false,
               "approverOf": [], "requesterOf": [], "breakGlassOf": []})
    );
    assert_eq!(whoami(&setup, api, iam(ADMIN_ARN)).await["admin"], true);

    // An assumed role is its role: the session name is the caller's choice.
    let me = whoami(&setup, api, iam(ALICE_ARN)).await;
    assert_eq!(me["principal"], ALICE_PRINCIPAL);
    assert_eq!(me["authenticatedAs"], ALICE_ARN);
    assert!(
        me["note"].as_str().is_some_and(|n| n.contains("session")),
        "{me}"
    );
    assert_eq!(me["requesterOf"], vm);
    let me = whoami(&setup, api, iam(&session("Approvers", "carol"))).await;
    assert_eq!(me["principal"], session("Approvers", "*"));
    assert_eq!((&me["approverOf"], &me["requesterOf"]), (&vm, &json!([])));

    // A trusted role's session is the person.
    let me = whoami(&setup, api, iam(SSO_CAROL)).await;
    assert_eq!(me["principal"], SSO_CAROL);
    assert!(me.get("authenticatedAs").is_none(), "{me}");
    assert_eq!(me["approverOf"], vm);
    assert_eq!(whoami(&setup, api, iam(SSO_ALICE)).await["requesterOf"], vm);

    // A token's subject counts with its issuer.
    let me = whoami(&setup, sso_api, sso(ADMIN_SUB)).await;
    assert_eq!(me["principal"], jwt_principal(ADMIN_SUB));
    assert_eq!(me["admin"], true);
    let elsewhere = Auth::Jwt(json!({"sub": ADMIN_SUB, "iss": "https://other.example.net/"}));
    let me = whoami(&setup, sso_api, elsewhere).await;
    assert_eq!(
        me["principal"],
        format!("jwt:https://other.example.net/#{ADMIN_SUB}")
    );
    assert_eq!(
        me["admin"], false,
        "the same subject of another issuer is someone else"
    );
    assert_ne!(JWT_ISSUER, "https://other.example.net/");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_named_after_an_approver_approves_nothing() {
    // Carol approves through IAM Identity Center, and the policy names her
    // by her session there. Whoever may assume some other role can name a
    // session "carol@example.com", or name it after a role session.
    let setup = setup(
        "us-east-2",
        json!({"ports": [22], "approvers": [SSO_CAROL, session("Platform", "*")]}),
    )
    .await;
    let id = setup.pending(iam(DANA)).await;
    for mallory in [
        session("Developers", "carol@example.com"),
        session(
            "Developers",
            SSO_CAROL.rsplit('/').next().unwrap_or_default(),
        ),
        session("PlatformReadOnly", "carol"),
    ] {
        let answer = setup.approve(&id, iam(&mallory)).await;
        assert_eq!(answer.status, 403, "{mallory}: {}", answer.body);
        assert!(answer.body.contains("not an approver"), "{}", answer.body);
    }
    assert_eq!(setup.status_of(&id).await, "PendingApproval");
    assert_eq!(setup.queued().await, 0, "nothing was queued to open");

    // Carol herself, signed in through IAM Identity Center, may.
    let answer = setup.approve(&id, iam(SSO_CAROL)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["decidedBy"], SSO_CAROL, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn nobody_approves_their_own_request_under_another_name() {
    let setup = setup(
        "us-west-1",
        json!({"ports": [22], "approvers": [
            "arn:aws:sts::123456789012:assumed-role/Developers/*",
            "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_*"]}),
    )
    .await;
    // Alice of Developers asks, then approves as a second session of the
    // same role: one identity, whatever the session is called.
    let id = setup.pending(iam(ALICE_ARN)).await;
    for name in ["alice", "alice-approver", "bob"] {
        let answer = setup.approve(&id, iam(&session("Developers", name))).await;
        assert_eq!(answer.status, 403, "{name}: {}", answer.body);
        assert!(answer.body.contains("own request"), "{}", answer.body);
    }
    assert_eq!(setup.status_of(&id).await, "PendingApproval");

    // Through IAM Identity Center each session is a person: Alice cannot
    // approve her own, Carol can.
    let id = setup.pending(iam(SSO_ALICE)).await;
    // Identity Center names every permission set's session after the
    // person: Alice's approver permission set is still Alice.
    let alice_approver = SSO_CAROL.replace("carol@", "alice@");
    for alice in [SSO_ALICE, alice_approver.as_str()] {
        let answer = setup.approve(&id, iam(alice)).await;
        assert_eq!(answer.status, 403, "{alice}: {}", answer.body);
        assert!(answer.body.contains("own request"), "{}", answer.body);
    }
    assert_eq!(setup.queued().await, 0, "nothing was queued to open");
    let answer = setup.approve(&id, iam(SSO_CAROL)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(setup.queued().await, 1, "the approved request was queued");
}

/// A slash command or a click as Slack posts it, signed now.
fn slack(path: &str, body: &str) -> Call {
    let now = jiff::Timestamp::now().as_second();
    let signature = slack_signature(SLACK_SECRET, now, body);
    Call::new("POST", path, Auth::Anonymous)
        .body("application/x-www-form-urlencoded", body)
        .base64()
        .header("x-slack-request-timestamp", &now.to_string())
        .header("x-slack-signature", &signature)
}

/// The records `who` asked for.
async fn records_by(setup: &Setup, who: &str) -> usize {
    let page = setup
        .deployed
        .stack
        .store
        .query_requests(&RequestQuery {
            vm: None,
            requestor: Some(Principal::parse(who).expect("a principal")),
            since: Some(jiff::Timestamp::UNIX_EPOCH),
            until: None,
            after: None,
            limit: 10,
        })
        .await
        .expect("query the records");
    page.records.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_members_of_other_workspaces_are_refused_audited_and_leave_no_record() {
    // The README's example policy: no requesters named means anyone
    // authenticated, which must still never reach another workspace.
    let setup = setup("us-west-2", json!({"ports": [22]})).await;
    let instance = setup
        .arn
        .rsplit('/')
        .next()
        .expect("an instance id")
        .to_owned();
    let hook = "https://hooks.slack.com/commands/T0STRANGER/1/x";
    let wide_open = format!("22 {instance} 3h from 0.0.0.0/0 -- hello");
    let answer = setup
        .call(slack(
            "/v1/chatops/slack",
            &slash_body("T0STRANGER", "U0GUEST", &wide_open, hook),
        ))
        .await;
    assert_eq!(
        answer.status, 200,
        "Slack shows only a 200's body: {}",
        answer.body
    );
    assert!(
        answer.body.contains("WorkspaceNotAllowed"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("T0STRANGER"), "{}", answer.body);
    assert_eq!(records_by(&setup, "slack:T0STRANGER/U0GUEST").await, 0);
    assert_eq!(setup.queued().await, 0, "nothing was queued to open");
    let refused = setup.function.audit_event("slack.refused").await;
    assert_eq!(
        refused["fields"]["actor"], "slack:T0STRANGER/U0GUEST",
        "{refused}"
    );
    assert_eq!(
        refused["fields"]["reason"], "WorkspaceNotAllowed",
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_click_from_a_guest_of_another_workspace_decides_nothing() {
    let setup = setup(
        "eu-west-1",
        json!({"ports": [22], "approvers": ["slack:T0LAMBDA/U0CAROL", "slack:T0STRANGER/U0GUEST"]}),
    )
    .await;
    // A guest of a shared channel clicks a button in the allowed workspace:
    // the message is T0LAMBDA's, the guest is not.
    let id = setup.pending(iam(DANA)).await;
    let mut click: Value = json!({
        "type": "block_actions",
        "team": {"id": "T0LAMBDA", "domain": "ours"},
        "user": {"id": "U0GUEST", "team_id": "T0STRANGER", "username": "guest"},
        "response_url": "https://hooks.slack.com/actions/T0LAMBDA/1/x",
        "actions": [{"type": "button", "action_id": "approve", "value": id}],
    });
    let answer = setup
        .call(slack(
            "/v1/chatops/slack/interactive",
            &interaction_body(&click),
        ))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("WorkspaceNotAllowed"),
        "{}",
        answer.body
    );
    assert_eq!(setup.status_of(&id).await, "PendingApproval");

    // Without the clicker's own workspace, nobody is clicking.
    click["user"]
        .as_object_mut()
        .expect("a user")
        .remove("team_id");
    let answer = setup
        .call(slack(
            "/v1/chatops/slack/interactive",
            &interaction_body(&click),
        ))
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("user.team_id"), "{}", answer.body);
    assert_eq!(setup.status_of(&id).await, "PendingApproval");

    // A member of the allowed workspace is let in.
    let answer = setup
        .call(slack(
            "/v1/chatops/slack/interactive",
            &click_body(
                "T0LAMBDA",
                "U0CAROL",
                "deny",
                &id,
                "https://hooks.slack.com/actions/T0LAMBDA/1/x",
            ),
        ))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        !answer.body.contains("WorkspaceNotAllowed"),
        "{}",
        answer.body
    );
    assert_eq!(setup.status_of(&id).await, "Denied");
}

//! Contract tests of the ARM fake itself, with plain HTTP (reqwest): what the
//! Azure adapter may rely on, as the module documentation of
//! `jitvm_tests::arm_fake` states it.

use std::time::{Duration, Instant};

use jitvm_tests::arm_fake::{
    ArmFake, CLIENT_ASSERTION, CLIENT_ID, CLIENT_SECRET, COMPUTE_API_VERSION, Fault, FaultKind,
    NETWORK_API_VERSION, TENANT,
};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const SUB: &str = "11111111-2222-4333-8444-555555555555";
const RG: &str = "Rg-Contract";
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A fake with one VM (`Web-1`, 10.0.0.4) whose NIC carries `Web-NSG`, and a
/// token for ARM.
struct T {
    arm: ArmFake,
    http: Client,
    token: String,
    nsg: String,
    vm: String,
    subnet: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn setup() -> T {
    let arm = ArmFake::start().await;
    let nsg = arm.add_nsg(SUB, RG, "Web-NSG");
    let subnet = arm.add_subnet(SUB, RG, "Web-VNet", "Default", "10.0.0.0/24", None);
    let vm = arm.add_vm(SUB, RG, "Web-1", &subnet, "10.0.0.4", Some(&nsg));
    let http = Client::new();
    let token = secret_token(&http, &arm).await;
    T {
        arm,
        http,
        token,
        nsg,
        vm,
        subnet,
    }
}

async fn token_request(
    http: &Client,
    arm: &ArmFake,
    tenant: &str,
    form: &[(&str, &str)],
) -> Answer {
    let response = http
        .post(format!("{}/{tenant}/oauth2/v2.0/token", arm.base_url()))
        .form(form)
        .send()
        .await
        .expect("the token endpoint answers");
    answer(response).await
}

async fn secret_token(http: &Client, arm: &ArmFake) -> String {
    let a = token_request(
        http,
        arm,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", ARM_SCOPE),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["access_token"].as_str().unwrap().to_owned()
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn net(path: &str) -> String {
    format!("{path}?api-version={NETWORK_API_VERSION}")
}

fn compute(path: &str) -> String {
    format!("{path}?api-version={COMPUTE_API_VERSION}")
}

impl T {
    fn url(&self, path_and_query: &str) -> String {
        if path_and_query.starts_with("http") {
            path_and_query.to_owned()
        } else {
            format!("{}{path_and_query}", self.arm.base_url())
        }
    }

    async fn send_as(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path_and_query));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("the fake answers")).await
    }

    async fn send(&self, method: Method, path_and_query: &str, body: Option<Value>) -> Answer {
        let auth = format!("Bearer {}", self.token);
        self.send_as(method, path_and_query, body, Some(&auth))
            .await
    }

    async fn get(&self, path_and_query: &str) -> Answer {
        self.send(Method::GET, path_and_query, None).await
    }

    fn rule_path(&self, name: &str) -> String {
        net(&format!("{}/securityRules/{name}", self.nsg))
    }

    async fn put_rule(&self, name: &str, properties: Value) -> Answer {
        self.send(
            Method::PUT,
            &self.rule_path(name),
            Some(json!({"properties": properties})),
        )
        .await
    }

    async fn get_rule(&self, name: &str) -> Answer {
        self.get(&self.rule_path(name)).await
    }

    async fn delete_rule(&self, name: &str) -> Answer {
        self.send(Method::DELETE, &self.rule_path(name), None).await
    }

    /// Polls an operation URL until it stops saying InProgress; returns the
    /// number of InProgress answers and the last answer.
    async fn poll_async(&self, url: &str) -> (usize, Answer) {
        let mut in_progress = 0;
        loop {
            let a = self.get(url).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            if a.body["status"] != "InProgress" {
                return (in_progress, a);
            }
            in_progress += 1;
            assert!(in_progress < 20, "the operation never ends");
        }
    }
}

fn ssh(priority: u32) -> Value {
    json!({"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
        "sourceAddressPrefix": "198.51.100.7", "destinationAddressPrefix": "10.0.0.4",
        "access": "Allow", "priority": priority, "direction": "Inbound"})
}

/// `base` with fields replaced; `Value::Null` removes a field.
fn with(base: &Value, changes: &[(&str, Value)]) -> Value {
    let mut v = base.clone();
    let map = v.as_object_mut().unwrap();
    for (k, value) in changes {
        if value.is_null() {
            map.remove(*k);
        } else {
            map.insert((*k).to_owned(), value.clone());
        }
    }
    v
}

// ---- the token endpoint ------------------------------------------------

#[tokio::test]
async fn the_token_endpoint_issues_bearer_tokens_for_a_secret_or_an_assertion() {
    let arm = ArmFake::start().await;
    let http = Client::new();
    assert_eq!(arm.tokens_issued(), 0);
    let by_secret = token_request(
        &http,
        &arm,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", ARM_SCOPE),
        ],
    )
    .await;
    assert_eq!(by_secret.status, StatusCode::OK, "{}", by_secret.body);
    assert_eq!(by_secret.body["token_type"], "Bearer");
    assert_eq!(by_secret.body["expires_in"], 3599);
    assert_eq!(by_secret.body["ext_expires_in"], 3599);
    assert!(
        by_secret
            .header("content-type")
            .starts_with("application/json")
    );

    arm.set_token_lifetime(120);
    let by_assertion = token_request(
        &http,
        &arm,
        // Tenant ids are GUIDs: any case.
        &TENANT.to_uppercase(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_assertion", CLIENT_ASSERTION),
            ("client_assertion_type", JWT_BEARER),
            ("scope", ARM_SCOPE),
        ],
    )
    .await;
    assert_eq!(by_assertion.status, StatusCode::OK, "{}", by_assertion.body);
    assert_eq!(by_assertion.body["expires_in"], 120);
    let (a, b) = (
        by_secret.body["access_token"].as_str().unwrap(),
        by_assertion.body["access_token"].as_str().unwrap(),
    );
    assert!(a.len() >= 32 && a != b, "random tokens: {a} {b}");
    assert_eq!(arm.tokens_issued(), 2);
}

#[tokio::test]
async fn the_token_endpoint_refuses_as_the_identity_platform_does() {
    let arm = ArmFake::start().await;
    let http = Client::new();
    let good = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("scope", ARM_SCOPE),
    ];
    let replaced = |field: &str, value: Option<&'static str>| -> Vec<(String, String)> {
        let mut form: Vec<(String, String)> = good
            .iter()
            .filter(|(k, _)| *k != field)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if let Some(v) = value {
            form.push((field.to_owned(), v.to_owned()));
        }
        form
    };
    let assertion = |value: &str, kind: Option<&str>| {
        let mut form = replaced("client_secret", None);
        form.push(("client_assertion".into(), value.into()));
        if let Some(kind) = kind {
            form.push(("client_assertion_type".into(), kind.into()));
        }
        form
    };
    type Form = Vec<(String, String)>;
    let cases: Vec<(&str, String, Form, u16, &str, u64)> = vec![
        (
            "wrong secret",
            TENANT.into(),
            replaced("client_secret", Some("nope")),
            401,
            "invalid_client",
            7000215,
        ),
        (
            "no credential",
            TENANT.into(),
            replaced("client_secret", None),
            401,
            "invalid_client",
            7000218,
        ),
        (
            "wrong assertion",
            TENANT.into(),
            assertion("eyJ.not.it", Some(JWT_BEARER)),
            401,
            "invalid_client",
            700027,
        ),
        (
            "assertion without its type",
            TENANT.into(),
            assertion(CLIENT_ASSERTION, None),
            400,
            "invalid_request",
            900144,
        ),
        (
            "scope without /.default",
            TENANT.into(),
            replaced(
                "scope",
                Some("https://management.azure.com/user_impersonation"),
            ),
            400,
            "invalid_scope",
            1002012,
        ),
        (
            "two scopes",
            TENANT.into(),
            replaced(
                "scope",
                Some("https://management.azure.com/.default https://graph.microsoft.com/.default"),
            ),
            400,
            "invalid_scope",
            70011,
        ),
        (
            "unknown resource",
            TENANT.into(),
            replaced("scope", Some("https://example.invalid/.default")),
            400,
            "invalid_resource",
            500011,
        ),
        (
            "unknown tenant",
            "00000000-1111-4222-8333-444444444444".into(),
            good.iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            400,
            "invalid_request",
            90002,
        ),
        (
            "unsupported grant",
            TENANT.into(),
            replaced("grant_type", Some("password")),
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            "no grant",
            TENANT.into(),
            replaced("grant_type", None),
            400,
            "invalid_request",
            900144,
        ),
        (
            "unknown client",
            TENANT.into(),
            replaced("client_id", Some("99999999-0000-4000-8000-000000000000")),
            400,
            "unauthorized_client",
            700016,
        ),
    ];
    for (what, tenant, form, status, error, aadsts) in cases {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let a = token_request(&http, &arm, &tenant, &pairs).await;
        assert_eq!(a.status.as_u16(), status, "{what}: {}", a.body);
        assert_eq!(a.body["error"], error, "{what}: {}", a.body);
        assert_eq!(a.body["error_codes"], json!([aadsts]), "{what}: {}", a.body);
        let description = a.body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{aadsts}: ")),
            "{what}: {description}"
        );
        assert!(
            description.contains("Trace ID: ") && a.body["correlation_id"].is_string(),
            "{what}"
        );
    }
    let get = http
        .get(format!("{}/{TENANT}/oauth2/v2.0/token", arm.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(arm.tokens_issued(), 0, "no refusal issued a token");
}

// ---- authentication and api-version ------------------------------------

#[tokio::test]
async fn arm_wants_a_live_bearer_token_that_it_issued_for_arm() {
    let t = setup().await;
    let vm = compute(&t.vm);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "AuthenticationFailed"),
        (
            "not bearer",
            Some("Basic dXNlcjpwYXNz".into()),
            "AuthenticationFailed",
        ),
        (
            "unknown token",
            Some("Bearer not-a-token-it-issued".into()),
            "InvalidAuthenticationToken",
        ),
    ];
    for (what, auth, code) in cases {
        let a = t.send_as(Method::GET, &vm, None, auth.as_deref()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}: {}", a.body);
        assert_eq!(a.code(), code, "{what}");
        assert!(
            a.header("www-authenticate").starts_with("Bearer "),
            "{what}"
        );
    }

    t.arm.set_token_lifetime(0);
    let expired = secret_token(&t.http, &t.arm).await;
    let a = t
        .send_as(Method::GET, &vm, None, Some(&format!("Bearer {expired}")))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.code(), "ExpiredAuthenticationToken", "{}", a.body);

    t.arm.set_token_lifetime(3599);
    let graph = token_request(
        &t.http,
        &t.arm,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    let graph = graph.body["access_token"].as_str().unwrap();
    let a = t
        .send_as(Method::GET, &vm, None, Some(&format!("Bearer {graph}")))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.code(), "InvalidAuthenticationToken", "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audience")
    );

    // A scope naming the fake itself is an ARM audience too.
    let own_scope = format!("{}/.default", t.arm.base_url());
    let own = token_request(
        &t.http,
        &t.arm,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", &own_scope),
        ],
    )
    .await;
    let own = own.body["access_token"].as_str().unwrap();
    let a = t
        .send_as(Method::GET, &vm, None, Some(&format!("Bearer {own}")))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(t.get(&vm).await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_request_needs_its_provider_s_api_version() {
    let t = setup().await;
    let missing = t.get(&t.vm).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.code(), "MissingApiVersionParameter");
    let empty = t.get(&format!("{}?api-version=", t.nsg)).await;
    assert_eq!(empty.code(), "MissingApiVersionParameter");
    for (path, wrong) in [
        (t.vm.as_str(), NETWORK_API_VERSION),
        (t.nsg.as_str(), COMPUTE_API_VERSION),
        (t.subnet.as_str(), "2023-09-01"),
    ] {
        let a = t.get(&format!("{path}?api-version={wrong}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(a.code(), "InvalidApiVersionParameter", "{path}");
        assert!(a.body["error"]["message"].as_str().unwrap().contains(wrong));
    }
    let put = t
        .send(
            Method::PUT,
            &format!(
                "{}/securityRules/r1?api-version={COMPUTE_API_VERSION}",
                t.nsg
            ),
            Some(json!({"properties": ssh(100)})),
        )
        .await;
    assert_eq!(put.code(), "InvalidApiVersionParameter");
    assert!(
        t.arm.rules(&t.nsg).is_empty(),
        "a refused PUT writes nothing"
    );
    assert_eq!(t.get(&compute(&t.vm)).await.status, StatusCode::OK);
    assert_eq!(t.get(&net(&t.nsg)).await.status, StatusCode::OK);
}

// ---- reading -----------------------------------------------------------

#[tokio::test]
async fn a_vm_answers_its_nics_and_ids_keep_their_casing_whatever_the_path_s() {
    let t = setup().await;
    let a = t.get(&compute(&t.vm.to_lowercase())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.header("x-ms-request-id").len() >= 32);
    let vm = &a.body;
    assert_eq!(vm["id"], t.vm.as_str());
    assert_eq!(
        vm["id"],
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/Web-1"
        )
    );
    assert_eq!(vm["name"], "Web-1");
    assert_eq!(vm["type"], "Microsoft.Compute/virtualMachines");
    assert_eq!(vm["location"], "westeurope");
    assert_eq!(vm["properties"]["provisioningState"], "Succeeded");
    let nics = vm["properties"]["networkProfile"]["networkInterfaces"]
        .as_array()
        .unwrap();
    assert_eq!(nics.len(), 1);
    assert_eq!(
        nics[0]["id"],
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/networkInterfaces/Web-1-nic"
        )
    );
    assert_eq!(nics[0]["properties"]["primary"], true);

    // A second NIC made primary demotes the first.
    let second = t
        .arm
        .add_nic(&t.vm, "Web-1-nic2", &t.subnet, "10.0.0.9", None, true);
    let vm = t.get(&compute(&t.vm)).await.body;
    let nics = vm["properties"]["networkProfile"]["networkInterfaces"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(nics.len(), 2);
    assert_eq!(nics[0]["properties"]["primary"], false);
    assert_eq!(
        (
            nics[1]["id"].as_str().unwrap(),
            &nics[1]["properties"]["primary"]
        ),
        (second.as_str(), &json!(true))
    );

    let bare = t.arm.add_vm_without_nic(SUB, RG, "Bare-1");
    let vm = t.get(&compute(&bare)).await.body;
    assert_eq!(
        vm["properties"]["networkProfile"]["networkInterfaces"],
        json!([])
    );
}

#[tokio::test]
async fn a_nic_answers_its_ip_configurations_nsg_and_vm() {
    let t = setup().await;
    let nic_id = t.get(&compute(&t.vm)).await.body["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let nic = t
        .get(&net(&nic_id
            .to_uppercase()
            .replace("/SUBSCRIPTIONS/", "/subscriptions/")))
        .await;
    assert_eq!(nic.status, StatusCode::OK, "{}", nic.body);
    let nic = nic.body;
    assert_eq!(nic["id"], nic_id.as_str());
    assert_eq!(nic["type"], "Microsoft.Network/networkInterfaces");
    let p = &nic["properties"];
    assert_eq!(p["networkSecurityGroup"]["id"], t.nsg.as_str());
    assert_eq!(p["virtualMachine"]["id"], t.vm.as_str());
    assert_eq!(p["primary"], true);
    let configs = p["ipConfigurations"].as_array().unwrap();
    assert_eq!(configs.len(), 1);
    let c = &configs[0];
    assert_eq!(c["name"], "ipconfig1");
    assert_eq!(c["id"], format!("{nic_id}/ipConfigurations/ipconfig1"));
    assert_eq!(c["properties"]["primary"], true);
    assert_eq!(c["properties"]["privateIPAddress"], "10.0.0.4");
    assert_eq!(c["properties"]["privateIPAddressVersion"], "IPv4");
    assert_eq!(c["properties"]["subnet"]["id"], t.subnet.as_str());

    t.arm.set_nic_nsg(&t.vm, None);
    let nic = t.get(&net(&nic_id)).await.body;
    assert!(
        nic["properties"].get("networkSecurityGroup").is_none(),
        "{nic}"
    );
    t.arm.set_nic_nsg(&nic_id, Some("web-nsg"));
    let nic = t.get(&net(&nic_id)).await.body;
    assert_eq!(
        nic["properties"]["networkSecurityGroup"]["id"],
        t.nsg.as_str()
    );
}

#[tokio::test]
async fn a_subnet_answers_its_prefix_and_nsg() {
    let t = setup().await;
    let a = t.get(&net(&t.subnet)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["id"], t.subnet.as_str());
    assert_eq!(a.body["name"], "Default");
    assert_eq!(a.body["properties"]["addressPrefix"], "10.0.0.0/24");
    assert!(a.body["properties"].get("networkSecurityGroup").is_none());

    let guarded_nsg = t.arm.add_nsg(SUB, RG, "Subnet-NSG");
    let guarded = t.arm.add_subnet(
        SUB,
        RG,
        "Web-VNet",
        "Guarded",
        "10.0.1.0/24",
        Some(&guarded_nsg),
    );
    let a = t.get(&net(&guarded)).await;
    assert_eq!(
        a.body["properties"]["networkSecurityGroup"]["id"],
        guarded_nsg.as_str()
    );
    let nsg = t.get(&net(&guarded_nsg)).await.body;
    assert_eq!(nsg["properties"]["subnets"], json!([{"id": guarded}]));

    let vnet = t
        .get(&net(t.subnet.rsplit_once("/subnets/").unwrap().0))
        .await;
    assert_eq!(vnet.status, StatusCode::OK);
    assert_eq!(
        vnet.body["properties"]["subnets"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn an_nsg_answers_its_rules_and_the_six_default_rules() {
    let t = setup().await;
    t.arm.put_rule(
        &t.nsg,
        "allow-ssh-anywhere",
        json!({"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
            "sourceAddressPrefix": "*", "destinationAddressPrefix": "*",
            "access": "Allow", "priority": 300, "direction": "Inbound"}),
    );
    let a = t.get(&net(&t.nsg)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let nsg = &a.body;
    assert_eq!(nsg["id"], t.nsg.as_str());
    assert_eq!(nsg["name"], "Web-NSG");
    assert_eq!(nsg["type"], "Microsoft.Network/networkSecurityGroups");
    assert_eq!(nsg["location"], "westeurope");
    assert_eq!(nsg["properties"]["provisioningState"], "Succeeded");
    let rules = nsg["properties"]["securityRules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["name"], "allow-ssh-anywhere");
    assert_eq!(rules[0]["properties"]["priority"], 300);
    assert_eq!(rules[0]["properties"]["provisioningState"], "Succeeded");
    let defaults: Vec<(String, u64, String)> = nsg["properties"]["defaultSecurityRules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["properties"]["priority"].as_u64().unwrap(),
                r["properties"]["direction"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String)> = [
        ("AllowVnetInBound", 65000, "Inbound"),
        ("AllowAzureLoadBalancerInBound", 65001, "Inbound"),
        ("DenyAllInBound", 65500, "Inbound"),
        ("AllowVnetOutBound", 65000, "Outbound"),
        ("AllowInternetOutBound", 65001, "Outbound"),
        ("DenyAllOutBound", 65500, "Outbound"),
    ]
    .iter()
    .map(|(n, p, d)| ((*n).to_owned(), *p, (*d).to_owned()))
    .collect();
    assert_eq!(defaults, want);
    let nic_refs = nsg["properties"]["networkInterfaces"].as_array().unwrap();
    assert_eq!(nic_refs.len(), 1);
    assert!(
        nic_refs[0]["id"]
            .as_str()
            .unwrap()
            .ends_with("/networkInterfaces/Web-1-nic")
    );

    let one = t
        .get(&net(&format!(
            "{}/defaultSecurityRules/DenyAllInBound",
            t.nsg
        )))
        .await;
    assert_eq!(one.body["properties"]["access"], "Deny");
}

#[tokio::test]
async fn missing_things_answer_arm_s_codes() {
    let t = setup().await;
    let rg = format!("/subscriptions/{SUB}/resourceGroups/{RG}");
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            compute(&format!(
                "{rg}/providers/Microsoft.Compute/virtualMachines/ghost"
            )),
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
        ),
        (
            net(&format!(
                "{rg}/providers/Microsoft.Network/networkInterfaces/ghost"
            )),
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
        ),
        (
            net(&format!(
                "{rg}/providers/Microsoft.Network/networkSecurityGroups/ghost"
            )),
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
        ),
        (
            net(&format!(
                "{rg}/providers/Microsoft.Network/networkSecurityGroups/ghost/securityRules/r"
            )),
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
        ),
        (
            net(&format!(
                "{rg}/providers/Microsoft.Network/virtualNetworks/ghost/subnets/default"
            )),
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
        ),
        (
            net(&format!(
                "{}/subnets/ghost",
                t.subnet.rsplit_once("/subnets/").unwrap().0
            )),
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            net(&format!("{}/securityRules/ghost", t.nsg)),
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            compute(&format!(
                "/subscriptions/{SUB}/resourceGroups/nowhere/providers/Microsoft.Compute/virtualMachines/x"
            )),
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
        ),
        (
            compute(
                "/subscriptions/99999999-0000-4000-8000-000000000000/providers/Microsoft.Compute/virtualMachines",
            ),
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
        ),
        (
            net(&format!(
                "/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operations/00000000-0000-0000-0000-000000000000"
            )),
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            net(&format!(
                "{rg}/providers/Microsoft.Network/loadBalancers/lb"
            )),
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
        ),
        (
            net("/not/arm/at/all"),
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
        ),
    ];
    for (path, status, code) in cases {
        let a = t.get(&path).await;
        assert_eq!((a.status, a.code()), (status, code), "{path}: {}", a.body);
        assert!(
            a.header("content-type").starts_with("application/json"),
            "{path}"
        );
        assert_eq!(a.body["error"]["details"], json!([]), "{path}");
        assert!(!a.body["error"]["message"].as_str().unwrap().is_empty());
    }
    let a = t.send(Method::DELETE, &compute(&t.vm), None).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed")
    );
    assert_eq!(
        t.get(&compute(&t.vm)).await.status,
        StatusCode::OK,
        "still there"
    );
}

#[tokio::test]
async fn lists_are_paged_with_absolute_next_links() {
    let t = setup().await;
    t.arm.set_page_size(2);
    for i in 2..=5 {
        let nsg = t.arm.add_nsg(SUB, RG, &format!("nsg-{i}"));
        t.arm.add_vm(
            SUB,
            RG,
            &format!("Web-{i}"),
            &t.subnet,
            &format!("10.0.0.{}", 10 + i),
            Some(&nsg),
        );
    }
    // Another subscription's VM is not listed.
    let other_subnet = t.arm.add_subnet(
        "22222222-0000-4000-8000-000000000000",
        "rg",
        "v",
        "s",
        "10.1.0.0/24",
        None,
    );
    t.arm.add_vm(
        "22222222-0000-4000-8000-000000000000",
        "rg",
        "elsewhere",
        &other_subnet,
        "10.1.0.4",
        None,
    );

    let follow = |first: String| {
        let t = &t;
        async move {
            let mut next = Some(first);
            let mut pages = 0;
            let mut ids = Vec::new();
            while let Some(url) = next {
                let a = t.get(&url).await;
                assert_eq!(a.status, StatusCode::OK, "{url}: {}", a.body);
                pages += 1;
                let value = a.body["value"].as_array().unwrap();
                assert!(value.len() <= 2);
                ids.extend(value.iter().map(|v| v["id"].as_str().unwrap().to_owned()));
                next = a.body["nextLink"].as_str().map(|n| {
                    assert!(n.starts_with(&t.arm.base_url()), "absolute: {n}");
                    assert!(
                        n.contains("api-version=") && n.contains("$skiptoken="),
                        "{n}"
                    );
                    n.to_owned()
                });
            }
            (pages, ids)
        }
    };
    let (pages, vms) = follow(compute(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"
    )))
    .await;
    assert_eq!((pages, vms.len()), (3, 5), "{vms:?}");
    assert!(vms.contains(&t.vm));
    let (pages, nics) = follow(net(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Network/networkInterfaces"
    )))
    .await;
    assert_eq!((pages, nics.len()), (3, 5));
    let (pages, nsgs) = follow(net(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Network/networkSecurityGroups"
    )))
    .await;
    assert_eq!((pages, nsgs.len()), (3, 5));
    let (_, in_rg) = follow(compute(&format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines"
    )))
    .await;
    assert_eq!(in_rg.len(), 5);

    for p in [100, 101, 102] {
        t.arm.put_rule(&t.nsg, &format!("r{p}"), ssh(p));
    }
    let (pages, rules) = follow(net(&format!("{}/securityRules", t.nsg))).await;
    assert_eq!((pages, rules.len()), (2, 3));
    t.arm.set_page_size(50);
    let nsgs_page = t
        .get(&net(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Network/networkSecurityGroups"
        )))
        .await;
    assert!(
        nsgs_page.body.get("nextLink").is_none(),
        "no nextLink on the last page"
    );
    let listed = nsgs_page.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == t.nsg.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        listed["properties"]["securityRules"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "rules inline"
    );
    let bad = t
        .get(&format!(
            "{}&$skiptoken=zzz",
            net(&format!("{}/securityRules", t.nsg))
        ))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

// ---- writing rules -----------------------------------------------------

#[tokio::test]
async fn a_new_rule_is_201_updating_then_succeeded_through_its_async_operation() {
    let t = setup().await;
    t.arm.set_lro(2, 7);
    let put = t.put_rule("jitvm-22-a", ssh(100)).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    assert_eq!(put.body["properties"]["provisioningState"], "Updating");
    assert_eq!(
        put.body["id"],
        format!("{}/securityRules/jitvm-22-a", t.nsg)
    );
    assert_eq!(put.header("retry-after"), "7");
    assert!(
        put.headers.get("location").is_none(),
        "PUT answers Azure-AsyncOperation only"
    );
    let op = put.header("azure-asyncoperation").to_owned();
    let prefix = format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/operations/",
        t.arm.base_url()
    );
    assert!(op.starts_with(&prefix), "{op}");
    assert!(
        op.ends_with(&format!("?api-version={NETWORK_API_VERSION}")),
        "{op}"
    );

    let visible = t.get_rule("jitvm-22-a").await;
    assert_eq!(visible.status, StatusCode::OK);
    assert_eq!(visible.body["properties"]["provisioningState"], "Updating");
    assert_eq!(
        t.get(&net(&t.nsg)).await.body["properties"]["provisioningState"],
        "Updating"
    );

    let first = t.get(&op).await;
    assert_eq!(first.body, json!({"status": "InProgress"}));
    assert_eq!(first.header("retry-after"), "7");
    let (in_progress, done) = t.poll_async(&op).await;
    assert_eq!(in_progress, 1, "two InProgress in all");
    assert_eq!(done.body, json!({"status": "Succeeded"}));
    assert_eq!(t.get(&op).await.body["status"], "Succeeded", "stays done");
    assert_eq!(
        t.get_rule("jitvm-22-a").await.body["properties"]["provisioningState"],
        "Succeeded"
    );
    assert_eq!(
        t.get(&net(&t.nsg)).await.body["properties"]["provisioningState"],
        "Succeeded"
    );
}

#[tokio::test]
async fn a_rule_answers_the_full_shape_in_canonical_spelling() {
    let t = setup().await;
    let put = t
        .put_rule(
            "Mixed.Case_",
            json!({"protocol": "tcp", "sourcePortRange": "*", "destinationPortRanges": ["22", "3389-3390"],
                "sourceAddressPrefixes": ["198.51.100.0/24", "203.0.113.7"], "destinationAddressPrefix": "VirtualNetwork",
                "access": "allow", "priority": 4096, "direction": "inbound", "description": "ops"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let rule = t.get_rule("mixed.case_").await.body;
    assert_eq!(rule["name"], "Mixed.Case_");
    assert_eq!(
        rule["type"],
        "Microsoft.Network/networkSecurityGroups/securityRules"
    );
    let etag = rule["etag"].as_str().unwrap();
    assert!(
        etag.starts_with("W/\"") && etag.ends_with('"') && etag.len() > 30,
        "{etag}"
    );
    let p = &rule["properties"];
    assert_eq!(
        (
            p["protocol"].as_str(),
            p["access"].as_str(),
            p["direction"].as_str()
        ),
        (Some("Tcp"), Some("Allow"), Some("Inbound"))
    );
    assert_eq!(p["priority"], 4096);
    assert_eq!(p["description"], "ops");
    assert_eq!(p["sourcePortRange"], "*");
    assert_eq!(p["sourcePortRanges"], json!([]));
    assert_eq!(p["destinationPortRanges"], json!(["22", "3389-3390"]));
    assert!(
        p.get("destinationPortRange").is_none(),
        "unset singular forms are absent"
    );
    assert!(p.get("sourceAddressPrefix").is_none());
    assert_eq!(
        p["sourceAddressPrefixes"],
        json!(["198.51.100.0/24", "203.0.113.7"])
    );
    assert_eq!(p["destinationAddressPrefix"], "VirtualNetwork");
    assert_eq!(p["destinationAddressPrefixes"], json!([]));

    // Other accepted shapes.
    for (name, props) in [
        (
            "icmp-any",
            json!({"protocol": "Icmp", "sourcePortRange": "*", "destinationPortRange": "*", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "access": "Deny", "priority": 100, "direction": "Outbound"}),
        ),
        (
            "v6",
            json!({"protocol": "*", "sourcePortRange": "0-65535", "destinationPortRange": "0", "sourceAddressPrefix": "2001:db8::/32", "destinationAddressPrefix": "2001:db8:0:1::4", "access": "Allow", "priority": 101, "direction": "Inbound"}),
        ),
        (
            "tagged",
            json!({"protocol": "Udp", "sourcePortRange": "*", "destinationPortRange": "53", "sourceAddressPrefix": "Storage.WestEurope", "destinationAddressPrefix": "10.0.0.4/32", "access": "Allow", "priority": 102, "direction": "Inbound"}),
        ),
    ] {
        let a = t.put_rule(name, props).await;
        assert_eq!(a.status, StatusCode::CREATED, "{name}: {}", a.body);
    }
}

#[tokio::test]
async fn putting_a_rule_again_updates_it_with_200_and_a_new_etag() {
    let t = setup().await;
    let created = t.put_rule("Alpha", ssh(100)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    t.arm.settle_operations();
    let before = t.get_rule("Alpha").await.body;
    assert_eq!(before["properties"]["provisioningState"], "Succeeded");
    let updated = t
        .put_rule(
            "ALPHA",
            with(
                &ssh(100),
                &[("priority", json!(110)), ("description", json!("moved"))],
            ),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["name"], "Alpha", "the first casing stays");
    assert_eq!(updated.body["properties"]["provisioningState"], "Updating");
    assert!(!updated.header("azure-asyncoperation").is_empty());
    let after = t.get_rule("alpha").await.body;
    assert_eq!(after["properties"]["priority"], 110);
    assert_eq!(after["properties"]["description"], "moved");
    assert_ne!(after["etag"], before["etag"]);
    assert_eq!(t.arm.rules(&t.nsg).len(), 1);
}

#[tokio::test]
async fn deleting_answers_202_and_the_location_polls_to_204() {
    let t = setup().await;
    t.arm.put_rule(&t.nsg, "doomed", ssh(100));
    t.arm.set_lro(1, 2);
    let del = t.delete_rule("doomed").await;
    assert_eq!(del.status, StatusCode::ACCEPTED, "{}", del.body);
    assert_eq!(del.body, Value::Null);
    assert_eq!(del.header("retry-after"), "2");
    let location = del.header("location").to_owned();
    let async_op = del.header("azure-asyncoperation").to_owned();
    let base = format!(
        "{}/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/",
        t.arm.base_url()
    );
    assert!(
        location.starts_with(&format!("{base}operationResults/")),
        "{location}"
    );
    assert!(
        async_op.starts_with(&format!("{base}operations/")),
        "{async_op}"
    );
    let id = |url: &str| {
        url.rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(id(&location), id(&async_op), "one operation");
    assert!(location.contains(&format!("api-version={NETWORK_API_VERSION}")));

    let gone = t.get_rule("doomed").await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::NOT_FOUND, "NotFound"),
        "gone at once"
    );
    assert!(t.arm.rule(&t.nsg, "doomed").is_none());

    let first = t.get(&location).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.header("retry-after"), "2");
    assert!(first.header("location").contains("/operationResults/"));
    let done = t.get(&location).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT);
    assert_eq!(t.get(&async_op).await.body, json!({"status": "Succeeded"}));

    let again = t.delete_rule("doomed").await;
    assert_eq!(
        again.status,
        StatusCode::NO_CONTENT,
        "deleting what is not there"
    );
    assert!(again.headers.get("location").is_none());
    let under_ghost = t
        .send(Method::DELETE, &net(&format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/networkSecurityGroups/ghost/securityRules/r")), None)
        .await;
    assert_eq!(under_ghost.code(), "ResourceNotFound");
}

#[tokio::test]
async fn each_invalid_rule_gets_its_code_and_writes_nothing() {
    let t = setup().await;
    let base = ssh(200);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "long description",
            with(&base, &[("description", json!("x".repeat(141)))]),
            "SecurityRuleInvalidDescription",
        ),
        (
            "no protocol",
            with(&base, &[("protocol", Value::Null)]),
            "SecurityRuleParametersMissing",
        ),
        (
            "no priority",
            with(&base, &[("priority", Value::Null)]),
            "SecurityRuleParametersMissing",
        ),
        (
            "no direction",
            with(&base, &[("direction", Value::Null)]),
            "SecurityRuleParametersMissing",
        ),
        (
            "protocol",
            with(&base, &[("protocol", json!("Http"))]),
            "SecurityRuleInvalidProtocol",
        ),
        (
            "access",
            with(&base, &[("access", json!("Permit"))]),
            "SecurityRuleInvalidAccessType",
        ),
        (
            "direction",
            with(&base, &[("direction", json!("Sideways"))]),
            "SecurityRuleInvalidDirection",
        ),
        (
            "priority 99",
            with(&base, &[("priority", json!(99))]),
            "SecurityRuleInvalidPriority",
        ),
        (
            "priority 4097",
            with(&base, &[("priority", json!(4097))]),
            "SecurityRuleInvalidPriority",
        ),
        (
            "priority as text",
            with(&base, &[("priority", json!("200"))]),
            "InvalidRequestFormat",
        ),
        (
            "port above 65535",
            with(&base, &[("destinationPortRange", json!("70000"))]),
            "SecurityRuleInvalidPortRange",
        ),
        (
            "port range backwards",
            with(&base, &[("destinationPortRange", json!("22-21"))]),
            "SecurityRuleInvalidPortRange",
        ),
        (
            "port list in one string",
            with(&base, &[("destinationPortRange", json!("80,443"))]),
            "SecurityRuleInvalidPortRange",
        ),
        (
            "bad port in a list",
            with(
                &base,
                &[
                    ("destinationPortRange", Value::Null),
                    ("destinationPortRanges", json!(["22", "x"])),
                ],
            ),
            "SecurityRuleInvalidPortRange",
        ),
        (
            "no destination port",
            with(&base, &[("destinationPortRange", Value::Null)]),
            "SecurityRuleParametersMissing",
        ),
        (
            "both port forms",
            with(&base, &[("destinationPortRanges", json!(["23"]))]),
            "SecurityRuleParameterContainsUnsupportedValue",
        ),
        (
            "host bits",
            with(&base, &[("sourceAddressPrefix", json!("198.51.100.7/24"))]),
            "SecurityRuleInvalidAddressPrefix",
        ),
        (
            "short address",
            with(&base, &[("sourceAddressPrefix", json!("10.0.0/8"))]),
            "SecurityRuleInvalidAddressPrefix",
        ),
        (
            "address words",
            with(&base, &[("destinationAddressPrefix", json!("my vm"))]),
            "SecurityRuleInvalidAddressPrefix",
        ),
        (
            "no source",
            with(&base, &[("sourceAddressPrefix", Value::Null)]),
            "SecurityRuleParametersMissing",
        ),
        (
            "both address forms",
            with(
                &base,
                &[("sourceAddressPrefixes", json!(["203.0.113.0/24"]))],
            ),
            "SecurityRuleParameterContainsUnsupportedValue",
        ),
        (
            "tag in a list",
            with(
                &base,
                &[
                    ("sourceAddressPrefix", Value::Null),
                    ("sourceAddressPrefixes", json!(["Internet"])),
                ],
            ),
            "SecurityRuleParameterContainsUnsupportedValue",
        ),
        (
            "star in a list",
            with(
                &base,
                &[
                    ("sourceAddressPrefix", Value::Null),
                    ("sourceAddressPrefixes", json!(["*"])),
                ],
            ),
            "SecurityRuleParameterContainsUnsupportedValue",
        ),
        (
            "two families",
            with(&base, &[("sourceAddressPrefix", json!("2001:db8::/32"))]),
            "ResourceCannotContainAddressPrefixesFromDifferentAddressFamilies",
        ),
        (
            "list of numbers",
            with(
                &base,
                &[
                    ("destinationPortRange", Value::Null),
                    ("destinationPortRanges", json!([22])),
                ],
            ),
            "InvalidRequestFormat",
        ),
    ];
    for (what, props, code) in cases {
        let a = t.put_rule("candidate", props).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, code),
            "{what}: {}",
            a.body
        );
        assert!(a.headers.get("azure-asyncoperation").is_none(), "{what}");
        assert!(t.arm.rules(&t.nsg).is_empty(), "{what} wrote a rule");
    }
    for name in ["-lead", "trail.", "trail-", "has%20space", &"a".repeat(81)] {
        let a = t.put_rule(name, base.clone()).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, "InvalidResourceName"),
            "{name}: {}",
            a.body
        );
    }
    let raw = t
        .http
        .put(t.url(&t.rule_path("candidate")))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert_eq!(answer(raw).await.code(), "InvalidRequestFormat");
    assert!(t.arm.rules(&t.nsg).is_empty());

    // The boundaries themselves are fine.
    let ok = t
        .put_rule(
            &"a".repeat(80),
            with(&base, &[("description", json!("é".repeat(140)))]),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
}

#[tokio::test]
async fn a_priority_is_unique_per_direction() {
    let t = setup().await;
    assert_eq!(
        t.put_rule("first", ssh(200)).await.status,
        StatusCode::CREATED
    );
    let clash = t.put_rule("second", ssh(200)).await;
    assert_eq!(
        (clash.status, clash.code()),
        (StatusCode::BAD_REQUEST, "SecurityRuleConflict")
    );
    let message = clash.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("first") && message.contains("second"),
        "{message}"
    );
    assert!(t.arm.rule(&t.nsg, "second").is_none());
    let outbound = t
        .put_rule(
            "second",
            with(&ssh(200), &[("direction", json!("Outbound"))]),
        )
        .await;
    assert_eq!(outbound.status, StatusCode::CREATED, "{}", outbound.body);
    let same = t
        .put_rule(
            "first",
            with(&ssh(200), &[("description", json!("same place"))]),
        )
        .await;
    assert_eq!(
        same.status,
        StatusCode::OK,
        "a rule does not conflict with itself"
    );
    let moved_onto = t.put_rule("second", ssh(200)).await;
    assert_eq!(
        moved_onto.code(),
        "SecurityRuleConflict",
        "an update is checked too"
    );
}

#[tokio::test]
async fn an_nsg_holds_only_as_many_rules_as_the_limit() {
    let t = setup().await;
    t.arm.set_rule_limit(3);
    for p in [100, 101, 102] {
        assert_eq!(
            t.put_rule(&format!("r{p}"), ssh(p)).await.status,
            StatusCode::CREATED
        );
    }
    let full = t.put_rule("r103", ssh(103)).await;
    assert_eq!(
        (full.status, full.code()),
        (StatusCode::BAD_REQUEST, "SecurityRuleCountLimitReached")
    );
    assert_eq!(t.arm.rules(&t.nsg).len(), 3);
    let update = t.put_rule("r100", ssh(150)).await;
    assert_eq!(update.status, StatusCode::OK, "updating is not adding");
    assert_eq!(t.delete_rule("r101").await.status, StatusCode::ACCEPTED);
    assert_eq!(
        t.put_rule("r103", ssh(103)).await.status,
        StatusCode::CREATED,
        "room again"
    );
}

// ---- faults ------------------------------------------------------------

#[tokio::test]
async fn throttling_answers_429_with_retry_after_then_is_spent() {
    let t = setup().await;
    t.arm.inject(Fault {
        method: Some("put".into()),
        path_contains: "/SECURITYRULES/t1".into(),
        times: 2,
        kind: FaultKind::Throttle {
            retry_after_secs: 3,
        },
    });
    assert_eq!(
        t.get_rule("t1").await.status,
        StatusCode::NOT_FOUND,
        "a GET does not match"
    );
    assert_eq!(
        t.put_rule("other", ssh(100)).await.status,
        StatusCode::CREATED,
        "another path does not match"
    );
    for _ in 0..2 {
        let a = t.put_rule("t1", ssh(101)).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
        );
        assert_eq!(a.header("retry-after"), "3");
    }
    assert!(
        t.arm.rule(&t.nsg, "t1").is_none(),
        "a throttled PUT writes nothing"
    );
    assert_eq!(
        t.put_rule("t1", ssh(101)).await.status,
        StatusCode::CREATED,
        "spent"
    );
    let statuses: Vec<(String, u16)> = t
        .arm
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/t1"))
        .map(|c| (c.method, c.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("GET".into(), 404),
            ("PUT".into(), 429),
            ("PUT".into(), 429),
            ("PUT".into(), 201)
        ]
    );
}

#[tokio::test]
async fn another_operation_in_progress_answers_409_with_retry_after() {
    let t = setup().await;
    t.arm.inject(Fault::new(
        None,
        "/securityRules/",
        1,
        FaultKind::AnotherOperationInProgress {
            retry_after_secs: 4,
        },
    ));
    let a = t.put_rule("busy", ssh(100)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::CONFLICT, "AnotherOperationInProgress")
    );
    assert_eq!(a.header("retry-after"), "4");
    let message = a.body["error"]["message"].as_str().unwrap();
    let url = message
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap();
    assert!(url.contains("/operations/"), "{message}");
    assert!(
        t.get(url).await.body["status"].is_string(),
        "the named operation can be polled"
    );
    assert!(t.arm.rule(&t.nsg, "busy").is_none());
    assert_eq!(
        t.put_rule("busy", ssh(100)).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_server_error_comes_before_authentication() {
    let t = setup().await;
    t.arm.inject(Fault::new(
        Some("GET"),
        "/virtualMachines/web-1",
        1,
        FaultKind::ServerError,
    ));
    let a = t.send_as(Method::GET, &compute(&t.vm), None, None).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
    );
    let again = t.send_as(Method::GET, &compute(&t.vm), None, None).await;
    assert_eq!(
        again.status,
        StatusCode::UNAUTHORIZED,
        "spent: now authentication speaks"
    );
    assert_eq!(t.get(&compute(&t.vm)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn latency_delays_then_serves() {
    let t = setup().await;
    t.arm.inject(Fault::new(
        None,
        "networkSecurityGroups",
        1,
        FaultKind::Latency(Duration::from_millis(300)),
    ));
    let started = Instant::now();
    let a = t.get(&net(&t.nsg)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.status, StatusCode::OK);
    let started = Instant::now();
    t.get(&net(&t.nsg)).await;
    assert!(started.elapsed() < Duration::from_millis(300), "once only");
}

#[tokio::test]
async fn a_priority_taken_meanwhile_makes_the_put_conflict_with_a_racer() {
    let t = setup().await;
    t.arm.inject(Fault::new(
        None,
        "/securityRules/",
        1,
        FaultKind::PriorityTaken,
    ));
    // Not a rule PUT: the fault waits for one.
    assert_eq!(
        t.get(&net(&format!("{}/securityRules", t.nsg)))
            .await
            .status,
        StatusCode::OK
    );
    let a = t.put_rule("mine", ssh(150)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "SecurityRuleConflict"),
        "{}",
        a.body
    );
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("racer-1")
    );
    let racer = t.arm.rule(&t.nsg, "racer-1").expect("the racer stays");
    let p = &racer["properties"];
    assert_eq!(
        (p["priority"].as_u64(), p["direction"].as_str()),
        (Some(150), Some("Inbound"))
    );
    assert_eq!(
        (p["access"].as_str(), p["protocol"].as_str()),
        (Some("Allow"), Some("Tcp"))
    );
    assert_eq!(p["destinationPortRange"], "1");
    assert_eq!(p["sourceAddressPrefix"], "10.255.255.255");
    assert_eq!(
        t.put_rule("mine", ssh(151)).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_failed_put_operation_rolls_the_rule_back() {
    let t = setup().await;
    let fails = || FaultKind::OperationFails {
        code: "InternalServerError".into(),
        message: "the NSG update failed".into(),
    };
    t.arm
        .inject(Fault::new(Some("PUT"), "/securityRules/new", 1, fails()));
    let put = t.put_rule("new", ssh(100)).await;
    assert_eq!(put.status, StatusCode::CREATED, "accepted as usual");
    assert!(
        t.arm.rule(&t.nsg, "new").is_some(),
        "visible while in progress"
    );
    let (_, done) = t.poll_async(put.header("azure-asyncoperation")).await;
    assert_eq!(done.body["status"], "Failed");
    assert_eq!(done.body["error"]["code"], "InternalServerError");
    assert_eq!(done.body["error"]["message"], "the NSG update failed");
    assert!(
        t.arm.rule(&t.nsg, "new").is_none(),
        "a failed create leaves no rule"
    );
    assert_eq!(t.get_rule("new").await.status, StatusCode::NOT_FOUND);

    t.arm.put_rule(&t.nsg, "kept", ssh(110));
    t.arm
        .inject(Fault::new(Some("PUT"), "/securityRules/kept", 1, fails()));
    let put = t
        .put_rule(
            "kept",
            with(&ssh(120), &[("description", json!("changed"))]),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let (_, done) = t.poll_async(put.header("azure-asyncoperation")).await;
    assert_eq!(done.body["status"], "Failed");
    let back = t.arm.rule(&t.nsg, "kept").unwrap();
    assert_eq!(
        back["properties"]["priority"], 110,
        "a failed update restores the rule"
    );
    assert!(back["properties"].get("description").is_none());
    assert_eq!(back["properties"]["provisioningState"], "Succeeded");
}

#[tokio::test]
async fn a_failed_delete_operation_brings_the_rule_back() {
    let t = setup().await;
    t.arm.put_rule(&t.nsg, "sticky", ssh(100));
    t.arm.set_lro(0, 0);
    t.arm.inject(Fault::new(
        Some("DELETE"),
        "/securityRules/sticky",
        1,
        FaultKind::OperationFails {
            code: "CanceledAndSupersededDueToAnotherOperation".into(),
            message: "superseded".into(),
        },
    ));
    let del = t.delete_rule("sticky").await;
    assert_eq!(del.status, StatusCode::ACCEPTED);
    let polled = t.get(del.header("location")).await;
    assert_eq!(
        (polled.status, polled.code()),
        (
            StatusCode::BAD_REQUEST,
            "CanceledAndSupersededDueToAnotherOperation"
        )
    );
    let status = t.get(del.header("azure-asyncoperation")).await;
    assert_eq!(status.body["status"], "Failed");
    let back = t.get_rule("sticky").await;
    assert_eq!(back.status, StatusCode::OK, "the rule is back");
    assert_eq!(back.body["properties"]["provisioningState"], "Succeeded");
}

#[tokio::test]
async fn faults_apply_to_the_token_endpoint_too() {
    let arm = ArmFake::start().await;
    let http = Client::new();
    arm.inject(Fault::new(
        Some("POST"),
        "/oauth2/v2.0/token",
        1,
        FaultKind::Throttle {
            retry_after_secs: 5,
        },
    ));
    arm.inject(Fault::new(
        Some("POST"),
        "/oauth2/",
        1,
        FaultKind::ServerError,
    ));
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("scope", ARM_SCOPE),
    ];
    let throttled = token_request(&http, &arm, TENANT, &form).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), "5");
    assert!(
        throttled.body["error"].is_string(),
        "an identity-platform body: {}",
        throttled.body
    );
    let failed = token_request(&http, &arm, TENANT, &form).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.body["error"], "server_error");
    assert_eq!(arm.tokens_issued(), 0);
    assert_eq!(
        token_request(&http, &arm, TENANT, &form).await.status,
        StatusCode::OK
    );
    assert_eq!(arm.tokens_issued(), 1);
}

// ---- observation and seeding -------------------------------------------

#[tokio::test]
async fn calls_are_recorded_in_order_without_the_query() {
    let t = setup().await;
    let statuses: Vec<u16> = t.arm.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![200], "the setup's token request");
    t.arm.clear_calls();
    t.get(&compute(&t.vm)).await;
    t.put_rule("r", ssh(100)).await;
    t.send_as(Method::GET, &net(&t.nsg), None, None).await;
    let calls = t.arm.calls();
    let seen: Vec<(&str, &str, u16)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str(), c.status))
        .collect();
    let rule = format!("{}/securityRules/r", t.nsg);
    assert_eq!(
        seen,
        vec![
            ("GET", t.vm.as_str(), 200),
            ("PUT", rule.as_str(), 201),
            ("GET", t.nsg.as_str(), 401)
        ]
    );
}

#[tokio::test]
async fn settling_completes_pending_operations() {
    let t = setup().await;
    t.arm.set_lro(5, 0);
    let put = t.put_rule("pending", ssh(100)).await;
    assert_eq!(
        t.arm.rule(&t.nsg, "pending").unwrap()["properties"]["provisioningState"],
        "Updating"
    );
    t.arm.settle_operations();
    assert_eq!(
        t.arm.rule(&t.nsg, "pending").unwrap()["properties"]["provisioningState"],
        "Succeeded"
    );
    assert_eq!(
        t.get(put.header("azure-asyncoperation")).await.body["status"],
        "Succeeded"
    );
}

#[tokio::test]
async fn seeding_rules_sorts_them_and_removing_reports_what_it_did() {
    let t = setup().await;
    t.arm.put_rule(&t.nsg, "b", json!({"properties": ssh(300)}));
    t.arm.put_rule(&t.nsg, "a", ssh(200));
    let names: Vec<String> = t
        .arm
        .rules(&t.nsg)
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["a", "b"], "by priority");
    assert!(t.arm.remove_rule(&t.nsg.to_uppercase(), "B"));
    assert!(!t.arm.remove_rule(&t.nsg, "b"));
    assert_eq!(t.get_rule("b").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_removed_vm_is_gone_and_its_nic_is_detached() {
    let t = setup().await;
    let nic = t.get(&compute(&t.vm)).await.body["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(t.arm.remove_vm(&t.vm.to_lowercase()));
    assert!(!t.arm.remove_vm(&t.vm), "already gone");
    assert_eq!(t.get(&compute(&t.vm)).await.code(), "ResourceNotFound");
    let nic = t.get(&net(&nic)).await;
    assert_eq!(nic.status, StatusCode::OK, "the NIC stays");
    assert!(
        nic.body["properties"].get("virtualMachine").is_none(),
        "{}",
        nic.body
    );
    assert_eq!(
        nic.body["properties"]["networkSecurityGroup"]["id"],
        t.nsg.as_str()
    );
    assert_eq!(
        t.get(&net(&t.nsg)).await.status,
        StatusCode::OK,
        "the NSG stays"
    );
}

#[tokio::test]
#[should_panic(expected = "SecurityRuleInvalidPriority")]
async fn seeding_an_invalid_rule_panics_with_the_code() {
    let t = setup().await;
    t.arm.put_rule(&t.nsg, "bad", ssh(5000));
}

#[tokio::test]
async fn only_loopback_addresses_are_served() {
    let refused = ArmFake::start_on("0.0.0.0:0".parse().unwrap()).await;
    assert!(refused.is_err());
    let fake = ArmFake::start_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert!(fake.base_url().starts_with("http://127.0.0.1:"));
}

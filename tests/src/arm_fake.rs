//! A fake of the Azure Resource Manager (ARM) REST API, as far as jitvm uses
//! it, plus the Microsoft identity platform v2 token endpoint, served over
//! plain HTTP on a loopback port. Integration tests start one per test
//! ([`ArmFake::start`]); the local stack runs the `jitvm-arm-fake` binary.
//!
//! The token endpoint and ARM share one base URL, `http://127.0.0.1:PORT`
//! ([`ArmFake::base_url`]): it is both the "authority" and the "ARM endpoint".
//!
//! # Sources
//!
//! Shapes, status codes and long-running-operation (LRO) options follow the
//! published contract in `Azure/azure-rest-api-specs`:
//!
//! - `specification/network/resource-manager/Microsoft.Network/stable/2024-05-01/networkSecurityGroup.json`
//!   (SecurityRules_CreateOrUpdate: 200/201, LRO `final-state-via:
//!   azure-async-operation`; SecurityRules_Delete: 200/202/204, LRO
//!   `final-state-via: location`; the `SecurityRulePropertiesFormat` fields,
//!   priority 100–4096, description up to 140 characters, the protocol enum);
//! - `.../2024-05-01/network.json` (`CloudError`/`CloudErrorBody`,
//!   `AzureAsyncOperationResult` with `InProgress`/`Succeeded`/`Failed`,
//!   `ProvisioningState`);
//! - `.../2024-05-01/networkInterface.json`, `virtualNetwork.json` and the
//!   examples `NetworkSecurityGroupGet.json` (the six default rules),
//!   `NetworkSecurityGroupRuleCreate.json`, `NetworkInterfaceGet.json`,
//!   `SubnetGet.json`;
//! - `specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2024-07-01/virtualMachine.json`
//!   and `examples/virtualMachineExamples/VirtualMachine_Get.json`.
//!
//! Behaviour the specs do not pin down comes from Microsoft's documentation
//! ("Track asynchronous Azure operations", "Throttling Resource Manager
//! requests", "Azure Resource Manager resource naming rules") and from error
//! bodies real ARM returned, as quoted in public issue trackers (cited per
//! code below). Nothing here is copied from those sources; messages are
//! written for this fake and only imitate the real ones where that helps a
//! reader of a test failure.
//!
//! # Pinned api-versions
//!
//! Every ARM request must carry `?api-version=` equal to
//! [`NETWORK_API_VERSION`] (`2024-05-01`) for `Microsoft.Network` paths,
//! operation status and operation result URLs included, or
//! [`COMPUTE_API_VERSION`] (`2024-07-01`) for `Microsoft.Compute` paths.
//! Missing or empty: 400 `MissingApiVersionParameter`. Any other value: 400
//! `InvalidApiVersionParameter` (the real code; the real message lists every
//! supported version, this one lists the pinned one only).
//!
//! # Token endpoint
//!
//! `POST /{tenant}/oauth2/v2.0/token`, form-encoded, client-credentials only.
//! The one known tenant, client and credentials are [`TENANT`],
//! [`CLIENT_ID`], [`CLIENT_SECRET`] and [`CLIENT_ASSERTION`] (also as
//! associated consts of [`ArmFake`]) (the assertion is compared as an opaque
//! string: no JWT is parsed or verified). Success: 200
//! `{"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":"…"}`
//! with `N` the configured lifetime ([`ArmFake::set_token_lifetime`], default
//! 3599 s; 0 gives tokens that are already expired when ARM sees them). The
//! access token is an opaque random string, not a JWT. Failures use the
//! identity platform's error body: `error`, `error_description`
//! (`AADSTSnnnn: …` plus trace/correlation ids and a timestamp),
//! `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
//! Checked in this order:
//!
//! | condition | status | `error` | AADSTS |
//! | --- | --- | --- | --- |
//! | method other than POST | 405 | `invalid_request` | 900561 |
//! | unknown tenant | 400 | `invalid_request` | 90002 |
//! | `grant_type` missing | 400 | `invalid_request` | 900144 |
//! | `grant_type` not `client_credentials` | 400 | `unsupported_grant_type` | 70003 |
//! | `client_id` missing | 400 | `invalid_request` | 900144 |
//! | unknown `client_id` | 400 | `unauthorized_client` | 700016 |
//! | `scope` missing | 400 | `invalid_request` | 900144 |
//! | more than one scope | 400 | `invalid_scope` | 70011 |
//! | scope not ending in `/.default` | 400 | `invalid_scope` | 1002012 |
//! | unknown resource in the scope | 400 | `invalid_resource` | 500011 |
//! | both `client_secret` and `client_assertion` | 400 | `invalid_request` | 9002313 (approximate) |
//! | neither | 401 | `invalid_client` | 7000218 |
//! | wrong secret | 401 | `invalid_client` | 7000215 |
//! | `client_assertion_type` missing | 400 | `invalid_request` | 900144 |
//! | `client_assertion_type` not the jwt-bearer URN | 400 | `invalid_request` | 9002313 (approximate) |
//! | wrong assertion | 401 | `invalid_client` | 700027 |
//!
//! A wrong secret answers **401** (not 400): that is what the identity
//! platform returns for `invalid_client` (AADSTS7000215 bodies quoted in e.g.
//! OfficeDev/microsoft-365-agents-toolkit#8621 and keycloak/keycloak#31294
//! came with HTTP 401).
//!
//! Known resources (the part of the scope before `/.default`, compared
//! without case and trailing `/`): `https://management.azure.com`,
//! `https://management.core.windows.net`, this fake's base URL (so an adapter
//! that derives the scope from its ARM endpoint works), and
//! `https://graph.microsoft.com`. A token is bound to its resource: ARM
//! accepts only tokens for the first three (see below), so a token obtained
//! for Graph is refused the way real ARM refuses a wrong audience.
//!
//! # Authentication on ARM
//!
//! Every ARM request needs `Authorization: Bearer <token>` with a token this
//! fake issued, not expired, for an ARM resource. Failures are 401 with a
//! CloudError body and a `WWW-Authenticate: Bearer authorization_uri=…,
//! error="invalid_token", …` header:
//!
//! - header missing or not `Bearer <token>`: `AuthenticationFailed`;
//! - unknown token: `InvalidAuthenticationToken`;
//! - expired token: `ExpiredAuthenticationToken`;
//! - token for another resource (e.g. Graph): `InvalidAuthenticationToken`.
//!
//! # Subscriptions, resource groups, ids
//!
//! Subscriptions and resource groups exist when something was seeded in
//! them. A request under an unknown subscription answers 404
//! `SubscriptionNotFound`; under an unknown resource group of a known one,
//! 404 `ResourceGroupNotFound`. Paths and ids are matched without regard to
//! case (ARM ids are case-insensitive); answers carry ids in the casing the
//! resource was created with, and names of rules keep the casing of their
//! first PUT. Request paths are not percent-decoded.
//!
//! # Routes
//!
//! All JSON answers are `Content-Type: application/json; charset=utf-8` and
//! carry an `x-ms-request-id`. Error bodies are CloudError:
//! `{"error":{"code":"…","message":"…","details":[]}}`.
//!
//! Compute (`2024-07-01`):
//! - `GET /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}`:
//!   `id`, `name`, `type`, `location`, `properties.vmId`,
//!   `properties.hardwareProfile.vmSize`,
//!   `properties.networkProfile.networkInterfaces[]` (`id`,
//!   `properties.primary`), `properties.provisioningState`.
//! - `GET /subscriptions/{s}[/resourceGroups/{rg}]/providers/Microsoft.Compute/virtualMachines`:
//!   paged list.
//!
//! Network (`2024-05-01`):
//! - `GET …/Microsoft.Network/networkInterfaces/{nic}`:
//!   `properties.ipConfigurations[]` (`name`, `id`, `properties.primary`,
//!   `properties.privateIPAddress`, `properties.privateIPAddressVersion`,
//!   `properties.privateIPAllocationMethod`, `properties.subnet.id`),
//!   `properties.networkSecurityGroup.id` when the NIC has an NSG,
//!   `properties.virtualMachine.id` when attached, `properties.primary`.
//!   Paged lists by subscription and by resource group.
//! - `GET …/virtualNetworks/{vnet}` (address space and subnets inline) and
//!   `GET …/virtualNetworks/{vnet}/subnets/{subnet}` (`properties.addressPrefix`,
//!   `properties.networkSecurityGroup.id` when set,
//!   `properties.ipConfigurations[]` references).
//! - `GET …/networkSecurityGroups/{nsg}`: `properties.securityRules` (full
//!   rule objects), `properties.defaultSecurityRules` (the six defaults:
//!   `AllowVnetInBound` 65000, `AllowAzureLoadBalancerInBound` 65001,
//!   `DenyAllInBound` 65500, `AllowVnetOutBound` 65000,
//!   `AllowInternetOutBound` 65001, `DenyAllOutBound` 65500),
//!   `properties.networkInterfaces[]` and `properties.subnets[]` references,
//!   `properties.provisioningState` (`Updating` while one of its rules is).
//!   Paged lists by subscription and by resource group, rules inline.
//! - `GET …/networkSecurityGroups/{nsg}/defaultSecurityRules[/{name}]`.
//! - `GET …/networkSecurityGroups/{nsg}/securityRules` (paged),
//!   `GET|PUT|DELETE …/securityRules/{rule}`.
//! - `GET /subscriptions/{s}/providers/Microsoft.Network/locations/{loc}/operations/{id}`
//!   (Azure-AsyncOperation) and `…/operationResults/{id}` (Location).
//!
//! Lists answer `{"value":[…],"nextLink":"…"}`; `nextLink` is absent on the
//! last page and otherwise an absolute URL to this fake with the same path,
//! `api-version` and `$skiptoken=<offset>`. Page size: 50
//! ([`ArmFake::set_page_size`]). Lists are ordered by id (case-insensitive);
//! rules in an NSG in the order they were created. Order is not part of the
//! ARM contract and callers should not depend on it. A `$skiptoken` that is
//! not an offset this fake could have produced answers 400 `InvalidSkipToken`
//! (an invention).
//!
//! A rule answers `{"id","name","etag":"W/\"<uuid>\"","type":"Microsoft.Network/networkSecurityGroups/securityRules","properties":{…}}`
//! with `provisioningState`, `description` (only when set), `protocol`,
//! the singular `sourcePortRange`/`destinationPortRange`/
//! `sourceAddressPrefix`/`destinationAddressPrefix` (only when set), the
//! plural `sourcePortRanges`/`destinationPortRanges`/`sourceAddressPrefixes`/
//! `destinationAddressPrefixes` (always, possibly empty), `access`,
//! `priority`, `direction`. `protocol`, `access` and `direction` are
//! accepted in any case and answered in their canonical spelling (`Tcp`,
//! `Allow`, `Inbound`). The etag changes on every write.
//!
//! Not found:
//! - a missing top-level resource (VM, NIC, virtual network, NSG): 404
//!   `ResourceNotFound` ("The Resource 'Microsoft.Network/networkSecurityGroups/x'
//!   under resource group 'rg' was not found…"), which is what ARM answers
//!   for both providers;
//! - a missing child of an existing parent (subnet, security rule, default
//!   rule): 404 `NotFound` ("Resource /subscriptions/…/securityRules/x not
//!   found."), which is what the network provider itself answers;
//! - an unknown operation id: 404 `NotFound`;
//! - a path this fake does not know: 404 `InvalidResourceType`;
//! - a known path with a method it does not emulate: 405 `MethodNotAllowed`.
//!
//! # Writing security rules
//!
//! `PUT …/securityRules/{rule}` with `{"properties":{…}}` replaces the rule
//! (PUT semantics; fields not given are unset). Checks, in this order (the
//! first failing one answers), each 400 with a CloudError; the port checks
//! run for ports before the address checks run for addresses:
//!
//! | check | code | evidence |
//! | --- | --- | --- |
//! | body is not JSON, or a field has the wrong JSON type | `InvalidRequestFormat` | NRP's code for unparsable requests |
//! | name: 1–80 chars of letters, digits, `_`, `.`, `-`; starts with a letter or digit; ends with a letter, digit or `_` | `InvalidResourceName` | resource naming rules; MicrosoftDocs/azure-docs#105345 |
//! | description over 140 characters | `SecurityRuleInvalidDescription` | limit from the spec; **code not confirmed** (no public example found) |
//! | `protocol` missing, or `access`/`direction`/`priority` missing | `SecurityRuleParametersMissing` | code seen in Azure/sap-hana#135 |
//! | `priority` not an integer | `InvalidRequestFormat` | |
//! | `protocol` not `Tcp`/`Udp`/`Icmp`/`Esp`/`Ah`/`*` (any case) | `SecurityRuleInvalidProtocol` | **code not confirmed** |
//! | `access` not `Allow`/`Deny` | `SecurityRuleInvalidAccessType` | code exists in NRP (seen for service-tag access checks) |
//! | `direction` not `Inbound`/`Outbound` | `SecurityRuleInvalidDirection` | **code not confirmed** |
//! | `priority` outside 100–4096 | `SecurityRuleInvalidPriority` | pulumi/pulumi-azure-native#2221 |
//! | singular and plural form of the same field both set | `SecurityRuleParameterContainsUnsupportedValue` | **code chosen, not confirmed** for this case |
//! | neither form of a port or address field set | `SecurityRuleParametersMissing` | Azure/sap-hana#135 |
//! | a port spec not `N`, `N-M` (0 ≤ N ≤ M ≤ 65535) or `*` | `SecurityRuleInvalidPortRange` | Azure/azure-cli#23499, hashicorp/terraform-provider-azurerm#659 |
//! | application security groups given | `SecurityRuleParameterContainsUnsupportedValue` | not emulated |
//! | an address not `*`, an IPv4/IPv6 address, a CIDR with no host bits set, or a service tag (a letter, then letters/digits, optionally `.Region`) | `SecurityRuleInvalidAddressPrefix` | hashicorp/terraform-provider-azurerm#16761; host bits: Azure/azure-powershell#4557 |
//! | `*` or a service tag in a plural address list | `SecurityRuleParameterContainsUnsupportedValue` | hashicorp/terraform-provider-azurerm#5617 |
//! | IPv4 and IPv6 prefixes in one rule | `ResourceCannotContainAddressPrefixesFromDifferentAddressFamilies` | hashicorp/terraform-provider-azurerm#12534 |
//! | another rule with the same direction and priority | `SecurityRuleConflict` ("Security rule {other} conflicts with rule {this}. Rules cannot have the same Priority and Direction…") | hashicorp/terraform-provider-azurerm#11137, Azure/aks-engine#2106 |
//! | creating a rule when the NSG already has the limit (1000, [`ArmFake::set_rule_limit`]) | `SecurityRuleCountLimitReached` | Azure/azure-rest-api-specs#3003 |
//!
//! A PUT under a missing NSG answers 404 `ResourceNotFound`.
//!
//! Success: **201** when created, **200** when updated; the body is the rule
//! with `provisioningState: "Updating"`; headers
//! `Azure-AsyncOperation: {base}/subscriptions/{s}/providers/Microsoft.Network/locations/{location}/operations/{uuid}?api-version=2024-05-01`
//! and `Retry-After: n` (n = 0 by default for speed, [`ArmFake::set_lro`];
//! real ARM says 10). No `Location` header (the spec's final state is via
//! Azure-AsyncOperation). The rule is visible in GET and lists at once, as
//! `Updating`, and becomes `Succeeded` when its operation reports
//! `Succeeded`.
//!
//! `DELETE …/securityRules/{rule}` of an existing rule: **202**, no body,
//! with `Location: {base}/subscriptions/{s}/providers/Microsoft.Network/locations/{loc}/operationResults/{uuid}?api-version=2024-05-01`,
//! `Azure-AsyncOperation` (`…/operations/{uuid}`, same uuid) and
//! `Retry-After`. **The rule disappears at once** (GET answers 404 and lists
//! omit it right after the 202), not when the operation completes; real NRP
//! would show it `Deleting` for a few seconds. A DELETE of a missing rule in
//! an existing NSG answers **204**; under a missing NSG, 404
//! `ResourceNotFound`.
//!
//! # Long-running operations
//!
//! An operation reports `InProgress` for the first `in_progress_polls` polls
//! (default 1), then its outcome, for ever after. Polls through either URL
//! count. It makes progress only when polled (or on
//! [`ArmFake::settle_operations`]), never with time, so tests are
//! deterministic; an adapter that never polls leaves its rules `Updating`.
//!
//! - Azure-AsyncOperation URL: 200 `{"status":"InProgress"}` (with
//!   `Retry-After`), then `{"status":"Succeeded"}` or
//!   `{"status":"Failed","error":{"code","message","details":[]}}`.
//! - Location URL: 202 with `Location` and `Retry-After` while in progress;
//!   then 204 for a delete (200 with the rule for a put); a failed operation
//!   answers 400 with the CloudError (500 when its code is
//!   `InternalServerError`).
//!
//! A failed operation is rolled back when it reports `Failed`: a created rule
//! is removed, an updated rule gets its previous properties back, a deleted
//! rule comes back (unless a rule of that name was created since). A later
//! write to the same rule supersedes an operation: its outcome no longer
//! touches the rule.
//!
//! # Faults ([`ArmFake::inject`])
//!
//! A [`Fault`] matches requests by method (`None` = any) and by a
//! case-insensitive substring of the path, fires `times` times, then is
//! spent; faults are tried in the order injected. They apply before
//! authentication (and on the token endpoint too):
//!
//! - `Throttle`: 429 `TooManyRequests` with `Retry-After` (the code the
//!   compute provider uses; ARM's own subscription throttling says
//!   `SubscriptionRequestsThrottled`, so callers should key on 429 and
//!   `Retry-After`, not the code). On the token endpoint: 429 with an
//!   identity-platform body (`temporarily_unavailable`).
//! - `AnotherOperationInProgress`: 409 `AnotherOperationInProgress` with
//!   `Retry-After` and a message naming an operation URL.
//! - `ServerError`: 500 `InternalServerError` (token endpoint: 500
//!   `server_error`).
//! - `Latency(d)`: waits `d`, then serves normally.
//! - `PriorityTaken`: only matches a `PUT` of a security rule. Before the PUT
//!   is handled, a competing rule `racer-<n>` (Allow, Tcp, destination port 1,
//!   from 10.255.255.255, source port and destination `*`) takes the
//!   requested direction and priority, so the PUT fails with
//!   `SecurityRuleConflict` naming `racer-<n>`. The racer stays.
//! - `OperationFails { code, message }`: only matches a `PUT` or `DELETE` of
//!   a security rule. The write is accepted as usual but its operation ends
//!   `Failed` with that error and is rolled back (see above).
//!
//! # Not emulated
//!
//! Writes other than security rules (NSGs, NICs, subnets, VMs are seeded,
//! and VMs removed, through the Rust API only); `If-Match`/etag preconditions; application
//! security groups; `$filter`/`$expand`; address ranges written `a-b`;
//! per-subscription throttling and `x-ms-ratelimit-*` headers; real service
//! tag lists (any tag-shaped word is accepted); real JWTs; operations that
//! complete with time; `AnotherOperationInProgress` arising by itself from
//! concurrent writes (only by injection); HTTPS.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The Microsoft.Network api-version every network request must carry.
pub const NETWORK_API_VERSION: &str = "2024-05-01";
/// The Microsoft.Compute api-version every compute request must carry.
pub const COMPUTE_API_VERSION: &str = "2024-07-01";
/// Where seeded resources live.
pub const LOCATION: &str = "westeurope";
/// The one tenant the token endpoint knows.
pub const TENANT: &str = "72f988bf-0000-4000-8000-000000000001";
/// The one client (application) id it knows.
pub const CLIENT_ID: &str = "6d2c5e3a-0000-4000-8000-00000000c1d0";
/// That client's secret.
pub const CLIENT_SECRET: &str = "fake-secret~0123456789abcdefghijklmnopqrstuv";
/// The client assertion it accepts (compared as an opaque string).
pub const CLIENT_ASSERTION: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJqaXR2bS1mYWtlIn0.ZmFrZS1zaWduYXR1cmU";

const RULE_TYPE: &str = "Microsoft.Network/networkSecurityGroups/securityRules";
const DEFAULT_RULE_TYPE: &str = "Microsoft.Network/networkSecurityGroups/defaultSecurityRules";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ARM_AUDIENCES: [&str; 2] = [
    "https://management.azure.com",
    "https://management.core.windows.net",
];
const GRAPH: &str = "https://graph.microsoft.com";

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    /// The path as requested, without the query.
    pub path: String,
    pub status: u16,
}

/// A fault to inject: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `Some("PUT")` to match only PUTs (any case); `None` for any method.
    pub method: Option<String>,
    /// A case-insensitive substring of the request path.
    pub path_contains: String,
    /// How many matching requests it fires on before it is spent.
    pub times: u32,
    pub kind: FaultKind,
}

impl Fault {
    pub fn new(method: Option<&str>, path_contains: &str, times: u32, kind: FaultKind) -> Fault {
        Fault {
            method: method.map(str::to_owned),
            path_contains: path_contains.to_owned(),
            times,
            kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// 429 `TooManyRequests` with `Retry-After`.
    Throttle { retry_after_secs: u32 },
    /// 409 `AnotherOperationInProgress` with `Retry-After`.
    AnotherOperationInProgress { retry_after_secs: u32 },
    /// 500 `InternalServerError`.
    ServerError,
    /// An ARM error answer with this status and code, such as a 404 for an
    /// operation ARM no longer knows.
    Error { status: u16, code: String },
    /// Waits, then serves normally.
    Latency(Duration),
    /// A competing rule takes the requested direction and priority just
    /// before a security-rule PUT is handled.
    PriorityTaken,
    /// The security-rule PUT or DELETE is accepted, but its operation ends
    /// `Failed` with this error and is rolled back.
    OperationFails { code: String, message: String },
}

/// The fake: an HTTP server on a loopback port and the world it serves.
/// Dropping it stops the server.
pub struct ArmFake {
    base: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ArmFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ArmFake {
    /// [`TENANT`].
    pub const TENANT: &str = TENANT;
    /// [`CLIENT_ID`].
    pub const CLIENT_ID: &str = CLIENT_ID;
    /// [`CLIENT_SECRET`].
    pub const CLIENT_SECRET: &str = CLIENT_SECRET;
    /// [`CLIENT_ASSERTION`].
    pub const CLIENT_ASSERTION: &str = CLIENT_ASSERTION;

    /// Starts on a free port of 127.0.0.1, serving on the current tokio
    /// runtime.
    pub async fn start() -> ArmFake {
        ArmFake::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("the ARM fake binds a free loopback port")
    }

    /// Starts on `addr`, which must be a loopback address.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<ArmFake> {
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the ARM fake listens on loopback only, not {addr}"),
            ));
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            base: base.clone(),
            world: Mutex::new(World::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ArmFake {
            base,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`: the authority URL and the ARM URL.
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.shared.lock()
    }

    // ---- seeding -------------------------------------------------------

    /// Makes a subscription and resource group exist, empty (ARM answers
    /// `SubscriptionNotFound` for a subscription it does not know).
    pub fn add_resource_group(&self, sub: &str, rg: &str) {
        self.world().register_scope(sub, rg);
    }

    /// Adds an empty NSG (location [`LOCATION`]) and returns its id. Adding
    /// one that exists returns the existing id.
    pub fn add_nsg(&self, sub: &str, rg: &str, name: &str) -> String {
        let mut w = self.world();
        w.register_scope(sub, rg);
        let id = arm_id(sub, rg, "Microsoft.Network", "networkSecurityGroups", name);
        w.nsgs
            .entry(key(&id))
            .or_insert_with(|| Nsg {
                id: id.clone(),
                name: name.to_owned(),
                sub: sub.to_owned(),
                rg: rg.to_owned(),
                location: LOCATION.to_owned(),
                guid: Uuid::now_v7().to_string(),
                etag: new_etag(),
                rules: Vec::new(),
            })
            .id
            .clone()
    }

    /// Adds (or replaces) a subnet, creating its virtual network when
    /// needed, and returns the subnet id. `nsg` is an NSG id, or the name of
    /// an NSG in the same resource group; it must exist.
    pub fn add_subnet(
        &self,
        sub: &str,
        rg: &str,
        vnet: &str,
        subnet: &str,
        prefix: &str,
        nsg: Option<&str>,
    ) -> String {
        let mut w = self.world();
        w.register_scope(sub, rg);
        let nsg = nsg.map(|n| w.resolve_nsg(n, sub, rg));
        let vnet_id = arm_id(sub, rg, "Microsoft.Network", "virtualNetworks", vnet);
        let v = w.vnets.entry(key(&vnet_id)).or_insert_with(|| Vnet {
            id: vnet_id.clone(),
            name: vnet.to_owned(),
            subnets: Vec::new(),
        });
        let s = Subnet {
            name: subnet.to_owned(),
            prefix: prefix.to_owned(),
            nsg,
        };
        match v
            .subnets
            .iter_mut()
            .find(|s| s.name.eq_ignore_ascii_case(subnet))
        {
            Some(existing) => {
                existing.prefix = s.prefix;
                existing.nsg = s.nsg;
            }
            None => v.subnets.push(s),
        }
        let name = &v
            .subnets
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(subnet))
            .expect("just added")
            .name;
        format!("{}/subnets/{name}", v.id)
    }

    /// Adds a VM with one NIC, `<name>-nic` (primary, one primary IP
    /// configuration `ipconfig1` at `private_ip` in `subnet_id`, which must
    /// exist), carrying `nic_nsg` (an NSG id or a name in the same resource
    /// group) when given. Returns the VM id.
    pub fn add_vm(
        &self,
        sub: &str,
        rg: &str,
        name: &str,
        subnet_id: &str,
        private_ip: &str,
        nic_nsg: Option<&str>,
    ) -> String {
        let vm_id = self.add_vm_without_nic(sub, rg, name);
        self.add_nic(
            &vm_id,
            &format!("{name}-nic"),
            subnet_id,
            private_ip,
            nic_nsg,
            true,
        );
        vm_id
    }

    /// Adds a VM with no network interface (an edge case) and returns its id.
    pub fn add_vm_without_nic(&self, sub: &str, rg: &str, name: &str) -> String {
        let mut w = self.world();
        w.register_scope(sub, rg);
        let id = arm_id(sub, rg, "Microsoft.Compute", "virtualMachines", name);
        assert!(
            !w.vms.contains_key(&key(&id)),
            "VM {id} is already in the ARM fake"
        );
        w.vms.insert(
            key(&id),
            Vm {
                id: id.clone(),
                name: name.to_owned(),
                sub: sub.to_owned(),
                rg: rg.to_owned(),
                vm_id: Uuid::now_v7().to_string(),
                nics: Vec::new(),
            },
        );
        id
    }

    /// Deletes a VM as Azure does by default: its NICs stay (detached: no
    /// `virtualMachine` reference), as do their NSGs and rules. False when
    /// there was no such VM.
    pub fn remove_vm(&self, vm_id: &str) -> bool {
        let mut w = self.world();
        let Some(vm) = w.vms.remove(&key(vm_id)) else {
            return false;
        };
        for nic in &vm.nics {
            if let Some(nic) = w.nics.get_mut(&key(nic)) {
                nic.vm = None;
                nic.primary = false;
                nic.etag = new_etag();
            }
        }
        true
    }

    /// Adds a NIC named `nic_name` to an existing VM (in the VM's resource
    /// group), with one primary IP configuration `ipconfig1`. When `primary`
    /// is true it becomes the VM's primary NIC and the others stop being
    /// primary. Returns the NIC id.
    pub fn add_nic(
        &self,
        vm_id: &str,
        nic_name: &str,
        subnet_id: &str,
        private_ip: &str,
        nsg: Option<&str>,
        primary: bool,
    ) -> String {
        let mut w = self.world();
        let (sub, rg, vm_canonical) = {
            let vm = w
                .vms
                .get(&key(vm_id))
                .unwrap_or_else(|| panic!("no VM {vm_id} in the ARM fake"));
            (vm.sub.clone(), vm.rg.clone(), vm.id.clone())
        };
        let subnet = w
            .subnet_id_canonical(subnet_id)
            .unwrap_or_else(|| panic!("no subnet {subnet_id} in the ARM fake"));
        private_ip
            .parse::<IpAddr>()
            .unwrap_or_else(|_| panic!("{private_ip} is not an IP address"));
        let nsg = nsg.map(|n| w.resolve_nsg(n, &sub, &rg));
        let id = arm_id(
            &sub,
            &rg,
            "Microsoft.Network",
            "networkInterfaces",
            nic_name,
        );
        assert!(
            !w.nics.contains_key(&key(&id)),
            "NIC {id} is already in the ARM fake"
        );
        let has_primary = w.vms[&key(vm_id)]
            .nics
            .iter()
            .any(|n| w.nics.get(&key(n)).is_some_and(|n| n.primary));
        let primary = primary || !has_primary;
        if primary {
            let others: Vec<String> = w.vms[&key(vm_id)].nics.clone();
            for other in others {
                if let Some(n) = w.nics.get_mut(&key(&other)) {
                    n.primary = false;
                }
            }
        }
        w.nics.insert(
            key(&id),
            Nic {
                id: id.clone(),
                name: nic_name.to_owned(),
                sub,
                rg,
                nsg,
                vm: Some(vm_canonical),
                primary,
                etag: new_etag(),
                guid: Uuid::now_v7().to_string(),
                ip_configs: vec![IpConfig {
                    name: "ipconfig1".to_owned(),
                    primary: true,
                    private_ip: private_ip.to_owned(),
                    subnet,
                }],
            },
        );
        w.vms
            .get_mut(&key(vm_id))
            .expect("checked above")
            .nics
            .push(id.clone());
        id
    }

    /// Sets or clears the NSG of a NIC, given the NIC's id or its VM's id
    /// (then the VM's primary NIC). `nsg` is an NSG id or a name in the NIC's
    /// resource group.
    pub fn set_nic_nsg(&self, nic_or_vm_id: &str, nsg: Option<&str>) {
        let mut w = self.world();
        let nic_key = if w.nics.contains_key(&key(nic_or_vm_id)) {
            key(nic_or_vm_id)
        } else {
            let vm = w
                .vms
                .get(&key(nic_or_vm_id))
                .unwrap_or_else(|| panic!("no NIC or VM {nic_or_vm_id} in the ARM fake"));
            let primary = vm
                .nics
                .iter()
                .find(|n| w.nics.get(&key(n)).is_some_and(|n| n.primary))
                .unwrap_or_else(|| panic!("VM {nic_or_vm_id} has no network interface"));
            key(primary)
        };
        let (sub, rg) = {
            let n = &w.nics[&nic_key];
            (n.sub.clone(), n.rg.clone())
        };
        let nsg = nsg.map(|n| w.resolve_nsg(n, &sub, &rg));
        let nic = w.nics.get_mut(&nic_key).expect("checked above");
        nic.nsg = nsg;
        nic.etag = new_etag();
    }

    /// Adds or replaces a rule "by hand", as a customer would, in state
    /// `Succeeded`. `properties` is the rule's `properties` object (or a whole
    /// rule body with a `properties` member). It is validated like a PUT,
    /// conflicts and the rule limit included; this panics when the API would
    /// refuse it.
    pub fn put_rule(&self, nsg_id: &str, name: &str, properties: Value) {
        let props = match properties.get("properties") {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => properties,
        };
        let mut w = self.world();
        let limit = w.rule_limit;
        let nsg = w
            .nsgs
            .get_mut(&key(nsg_id))
            .unwrap_or_else(|| panic!("no NSG {nsg_id} in the ARM fake"));
        let rule_id = format!("{}/securityRules/{name}", nsg.id);
        let result = check_rule_name(name)
            .and_then(|()| parse_rule(&props, &rule_id))
            .and_then(|p| admit(nsg, name, p, limit, Prov::Succeeded, None));
        if let Err(e) = result {
            panic!(
                "the ARM fake refuses rule {name} in {nsg_id}: {} {}",
                e.code, e.message
            );
        }
    }

    /// Removes a rule "by hand"; false when there was none.
    pub fn remove_rule(&self, nsg_id: &str, name: &str) -> bool {
        let mut w = self.world();
        let Some(nsg) = w.nsgs.get_mut(&key(nsg_id)) else {
            return false;
        };
        let before = nsg.rules.len();
        nsg.rules.retain(|r| !r.name.eq_ignore_ascii_case(name));
        before != nsg.rules.len()
    }

    /// The NSG's rules as a GET would answer them, sorted by priority (then
    /// name). Panics when there is no such NSG.
    pub fn rules(&self, nsg_id: &str) -> Vec<Value> {
        let w = self.world();
        let nsg = w
            .nsgs
            .get(&key(nsg_id))
            .unwrap_or_else(|| panic!("no NSG {nsg_id} in the ARM fake"));
        let mut rules: Vec<&Rule> = nsg.rules.iter().collect();
        rules.sort_by(|a, b| {
            (a.props.priority, a.name.to_ascii_lowercase())
                .cmp(&(b.props.priority, b.name.to_ascii_lowercase()))
        });
        rules.into_iter().map(|r| rule_json(&nsg.id, r)).collect()
    }

    /// One rule as a GET would answer it.
    pub fn rule(&self, nsg_id: &str, name: &str) -> Option<Value> {
        let w = self.world();
        let nsg = w.nsgs.get(&key(nsg_id))?;
        nsg.rules
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .map(|r| rule_json(&nsg.id, r))
    }

    // ---- knobs ---------------------------------------------------------

    /// The most rules one NSG may hold (default 1000).
    pub fn set_rule_limit(&self, n: usize) {
        self.world().rule_limit = n;
    }

    /// Items per page of every list (default 50; at least 1).
    pub fn set_page_size(&self, n: usize) {
        self.world().page_size = n.max(1);
    }

    /// Lifetime of tokens issued from now on (default 3599 s; 0 issues
    /// tokens that are already expired).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.world().token_lifetime = secs;
    }

    /// Makes every token issued so far expired now, as if their time ran
    /// out at once: the next call with one gets `ExpiredAuthenticationToken`.
    pub fn expire_tokens(&self) {
        let now = Timestamp::now();
        for token in self.world().tokens.values_mut() {
            token.expires = now;
        }
    }

    /// For operations started from now on: how many polls answer
    /// `InProgress` before the outcome (default 1), and the `Retry-After`
    /// the fake advertises (default 0).
    pub fn set_lro(&self, in_progress_polls: u32, retry_after_secs: u32) {
        let mut w = self.world();
        w.lro_polls = in_progress_polls;
        w.retry_after = retry_after_secs;
    }

    pub fn inject(&self, fault: Fault) {
        self.world().faults.push(fault);
    }

    /// How many faults are not yet spent: a test waits for a latency
    /// fault's request to have arrived (and be held) by waiting for this to
    /// drop.
    pub fn faults_left(&self) -> usize {
        self.world().faults.len()
    }

    /// Drops every fault not yet spent: ARM answers normally again.
    pub fn clear_faults(&self) {
        self.world().faults.clear();
    }

    /// Completes every pending operation as if it had been polled to the
    /// end (with its outcome and rollback).
    pub fn settle_operations(&self) {
        let mut w = self.world();
        let pending: Vec<String> = w
            .ops
            .iter()
            .filter(|(_, op)| op.outcome.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in pending {
            w.settle(&id);
        }
    }

    /// Logs one line per request to standard error (off by default).
    pub fn set_request_log(&self, on: bool) {
        self.world().log = on;
    }

    // ---- observation ---------------------------------------------------

    /// Every request received, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.world().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.world().calls.clear();
    }

    /// How many tokens the token endpoint has issued.
    pub fn tokens_issued(&self) -> usize {
        self.world().tokens_issued
    }
}

// ---- the world ---------------------------------------------------------

struct Shared {
    base: String,
    world: Mutex<World>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct World {
    /// Lower-case subscription id to the id as seeded.
    subs: BTreeMap<String, String>,
    /// Lower-case (subscription, resource group).
    rgs: BTreeSet<(String, String)>,
    /// All keyed by lower-case id.
    nsgs: BTreeMap<String, Nsg>,
    vnets: BTreeMap<String, Vnet>,
    nics: BTreeMap<String, Nic>,
    vms: BTreeMap<String, Vm>,
    /// Keyed by lower-case operation id.
    ops: HashMap<String, Operation>,
    tokens: HashMap<String, Token>,
    tokens_issued: usize,
    faults: Vec<Fault>,
    calls: Vec<Call>,
    rule_limit: usize,
    page_size: usize,
    token_lifetime: u64,
    lro_polls: u32,
    retry_after: u32,
    racers: u32,
    log: bool,
}

struct Nsg {
    id: String,
    name: String,
    sub: String,
    rg: String,
    location: String,
    guid: String,
    etag: String,
    rules: Vec<Rule>,
}

#[derive(Clone)]
struct Rule {
    name: String,
    props: RuleProps,
    etag: String,
    state: Prov,
    /// The operation that last wrote this rule, while it is pending.
    pending: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prov {
    Succeeded,
    Updating,
}

impl Prov {
    fn as_str(self) -> &'static str {
        match self {
            Prov::Succeeded => "Succeeded",
            Prov::Updating => "Updating",
        }
    }
}

#[derive(Clone, Debug)]
struct RuleProps {
    description: Option<String>,
    protocol: &'static str,
    source_port_range: Option<String>,
    source_port_ranges: Vec<String>,
    destination_port_range: Option<String>,
    destination_port_ranges: Vec<String>,
    source_address_prefix: Option<String>,
    source_address_prefixes: Vec<String>,
    destination_address_prefix: Option<String>,
    destination_address_prefixes: Vec<String>,
    access: &'static str,
    priority: u32,
    direction: &'static str,
}

struct Vnet {
    id: String,
    name: String,
    subnets: Vec<Subnet>,
}

struct Subnet {
    name: String,
    prefix: String,
    /// NSG id, canonical casing.
    nsg: Option<String>,
}

struct Nic {
    id: String,
    name: String,
    sub: String,
    rg: String,
    nsg: Option<String>,
    vm: Option<String>,
    primary: bool,
    etag: String,
    guid: String,
    ip_configs: Vec<IpConfig>,
}

struct IpConfig {
    name: String,
    primary: bool,
    private_ip: String,
    /// Subnet id, canonical casing.
    subnet: String,
}

struct Vm {
    id: String,
    name: String,
    sub: String,
    rg: String,
    vm_id: String,
    nics: Vec<String>,
}

struct Token {
    expires: Timestamp,
    /// The resource of the scope, normalised (lower case, no trailing `/`).
    audience: String,
}

struct Operation {
    sub: String,
    polls_left: u32,
    fail: Option<(String, String)>,
    kind: OpKind,
    outcome: Option<Outcome>,
}

enum OpKind {
    /// `previous` is the rule as it was before an update.
    PutRule {
        nsg: String,
        previous: Option<Box<Rule>>,
    },
    DeleteRule {
        nsg: String,
        removed: Box<Rule>,
    },
    Noop,
}

#[derive(Clone)]
enum Outcome {
    Succeeded,
    Failed(String, String),
}

enum Progress {
    InProgress,
    Done(Outcome),
}

impl World {
    fn new() -> World {
        World {
            subs: BTreeMap::new(),
            rgs: BTreeSet::new(),
            nsgs: BTreeMap::new(),
            vnets: BTreeMap::new(),
            nics: BTreeMap::new(),
            vms: BTreeMap::new(),
            ops: HashMap::new(),
            tokens: HashMap::new(),
            tokens_issued: 0,
            faults: Vec::new(),
            calls: Vec::new(),
            rule_limit: 1000,
            page_size: 50,
            token_lifetime: 3599,
            lro_polls: 1,
            retry_after: 0,
            racers: 0,
            log: false,
        }
    }

    fn register_scope(&mut self, sub: &str, rg: &str) {
        self.subs
            .entry(sub.to_ascii_lowercase())
            .or_insert_with(|| sub.to_owned());
        self.rgs
            .insert((sub.to_ascii_lowercase(), rg.to_ascii_lowercase()));
    }

    /// The canonical id of an NSG given by id or by name in `sub`/`rg`;
    /// panics when it does not exist (seeding only).
    fn resolve_nsg(&self, reference: &str, sub: &str, rg: &str) -> String {
        let id = if reference.starts_with('/') {
            reference.to_owned()
        } else {
            arm_id(
                sub,
                rg,
                "Microsoft.Network",
                "networkSecurityGroups",
                reference,
            )
        };
        self.nsgs
            .get(&key(&id))
            .map(|n| n.id.clone())
            .unwrap_or_else(|| panic!("no NSG {reference} in the ARM fake: add_nsg it first"))
    }

    fn subnet_id_canonical(&self, subnet_id: &str) -> Option<String> {
        let k = key(subnet_id);
        let (vnet_key, name) = k.rsplit_once("/subnets/")?;
        let vnet = self.vnets.get(vnet_key)?;
        let s = vnet
            .subnets
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))?;
        Some(format!("{}/subnets/{}", vnet.id, s.name))
    }

    fn check_scope(&self, sub: &str, rg: Option<&str>) -> Res<()> {
        let sub_l = sub.to_ascii_lowercase();
        if !self.subs.contains_key(&sub_l) {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                format!("The subscription '{sub}' could not be found."),
            ));
        }
        if let Some(rg) = rg
            && !self.rgs.contains(&(sub_l, rg.to_ascii_lowercase()))
        {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{rg}' could not be found."),
            ));
        }
        Ok(())
    }

    fn take_fault(&mut self, method: &Method, path: &str, route: &Route) -> Option<FaultKind> {
        let path_l = path.to_ascii_lowercase();
        let is_rule = matches!(route, Route::Rule { .. });
        let idx = self.faults.iter().position(|f| {
            f.times > 0
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
                && path_l.contains(&f.path_contains.to_ascii_lowercase())
                && match f.kind {
                    FaultKind::PriorityTaken => is_rule && method == Method::PUT,
                    FaultKind::OperationFails { .. } => {
                        is_rule && (method == Method::PUT || method == Method::DELETE)
                    }
                    _ => true,
                }
        })?;
        let fault = &mut self.faults[idx];
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(idx);
        }
        Some(kind)
    }

    fn new_op(&mut self, sub: &str, fail: Option<(String, String)>, kind: OpKind) -> String {
        let id = Uuid::now_v7().to_string();
        self.ops.insert(
            id.clone(),
            Operation {
                sub: sub.to_ascii_lowercase(),
                polls_left: self.lro_polls,
                fail,
                kind,
                outcome: None,
            },
        );
        id
    }

    fn poll(&mut self, sub: &str, op_id: &str) -> Option<Progress> {
        let id = op_id.to_ascii_lowercase();
        let op = self.ops.get_mut(&id)?;
        if op.sub != sub.to_ascii_lowercase() {
            return None;
        }
        if let Some(outcome) = &op.outcome {
            return Some(Progress::Done(outcome.clone()));
        }
        if op.polls_left > 0 {
            op.polls_left -= 1;
            return Some(Progress::InProgress);
        }
        Some(Progress::Done(self.settle(&id)))
    }

    /// Ends an operation with its outcome, applying it (or rolling back).
    fn settle(&mut self, id: &str) -> Outcome {
        let Some(op) = self.ops.get_mut(id) else {
            return Outcome::Succeeded;
        };
        if let Some(outcome) = &op.outcome {
            return outcome.clone();
        }
        let outcome = match op.fail.take() {
            Some((code, message)) => Outcome::Failed(code, message),
            None => Outcome::Succeeded,
        };
        op.outcome = Some(outcome.clone());
        let kind = std::mem::replace(&mut op.kind, OpKind::Noop);
        let failed = matches!(outcome, Outcome::Failed(..));
        match kind {
            OpKind::PutRule { nsg, previous } => {
                if let Some(nsg) = self.nsgs.get_mut(&nsg)
                    && let Some(idx) = nsg
                        .rules
                        .iter()
                        .position(|r| r.pending.as_deref() == Some(id))
                {
                    if !failed {
                        nsg.rules[idx].state = Prov::Succeeded;
                        nsg.rules[idx].pending = None;
                    } else if let Some(previous) = previous {
                        let mut previous = *previous;
                        previous.state = Prov::Succeeded;
                        previous.pending = None;
                        previous.etag = new_etag();
                        nsg.rules[idx] = previous;
                    } else {
                        nsg.rules.remove(idx);
                    }
                    nsg.etag = new_etag();
                }
            }
            OpKind::DeleteRule { nsg, removed } => {
                if failed
                    && let Some(nsg) = self.nsgs.get_mut(&nsg)
                    && !nsg
                        .rules
                        .iter()
                        .any(|r| r.name.eq_ignore_ascii_case(&removed.name))
                {
                    let mut rule = *removed;
                    rule.state = Prov::Succeeded;
                    rule.pending = None;
                    rule.etag = new_etag();
                    nsg.rules.push(rule);
                    nsg.etag = new_etag();
                }
            }
            OpKind::Noop => {}
        }
        outcome
    }

    fn check_auth(&self, headers: &HeaderMap, base: &str) -> Res<()> {
        let unauthorized = |code: &str, message: String| {
            ArmError::new(StatusCode::UNAUTHORIZED, code, message).challenge()
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.".to_owned(),
            ));
        };
        let value = value.to_str().unwrap_or("");
        let token = match value.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                token.trim()
            }
            _ => {
                return Err(unauthorized(
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is provided in an invalid format."
                        .to_owned(),
                ));
            }
        };
        let Some(token) = self.tokens.get(token) else {
            return Err(unauthorized(
                "InvalidAuthenticationToken",
                "The access token is invalid.".to_owned(),
            ));
        };
        let now = Timestamp::now();
        if now >= token.expires {
            return Err(unauthorized(
                "ExpiredAuthenticationToken",
                format!(
                    "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                    token.expires.strftime("%m/%d/%Y %H:%M:%S"),
                    now.strftime("%m/%d/%Y %H:%M:%S"),
                ),
            ));
        }
        if !is_arm_audience(&token.audience, base) {
            return Err(unauthorized(
                "InvalidAuthenticationToken",
                format!(
                    "The access token has been obtained for wrong audience or resource '{}'. It should \
                     exactly match one of the allowed audiences 'https://management.core.windows.net/', \
                     'https://management.azure.com/' or '{base}/'.",
                    token.audience
                ),
            ));
        }
        Ok(())
    }

    // ---- JSON views ----------------------------------------------------

    fn vm_json(&self, vm: &Vm) -> Value {
        let nics: Vec<Value> = vm
            .nics
            .iter()
            .map(|id| {
                let primary = self.nics.get(&key(id)).is_some_and(|n| n.primary);
                json!({"id": id, "properties": {"primary": primary}})
            })
            .collect();
        json!({
            "id": vm.id,
            "name": vm.name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": LOCATION,
            "properties": {
                "vmId": vm.vm_id,
                "hardwareProfile": {"vmSize": "Standard_B2s"},
                "networkProfile": {"networkInterfaces": nics},
                "provisioningState": "Succeeded",
            },
        })
    }

    fn nic_json(&self, nic: &Nic) -> Value {
        let configs: Vec<Value> = nic
            .ip_configs
            .iter()
            .map(|c| {
                let version = match c.private_ip.parse::<IpAddr>() {
                    Ok(IpAddr::V6(_)) => "IPv6",
                    _ => "IPv4",
                };
                json!({
                    "name": c.name,
                    "id": format!("{}/ipConfigurations/{}", nic.id, c.name),
                    "etag": nic.etag,
                    "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
                    "properties": {
                        "provisioningState": "Succeeded",
                        "privateIPAddress": c.private_ip,
                        "privateIPAllocationMethod": "Dynamic",
                        "privateIPAddressVersion": version,
                        "subnet": {"id": c.subnet},
                        "primary": c.primary,
                    },
                })
            })
            .collect();
        let mut props = json!({
            "provisioningState": "Succeeded",
            "resourceGuid": nic.guid,
            "ipConfigurations": configs,
            "primary": nic.primary,
            "enableIPForwarding": false,
        });
        if let Some(nsg) = &nic.nsg {
            props["networkSecurityGroup"] = json!({"id": nsg});
        }
        if let Some(vm) = &nic.vm {
            props["virtualMachine"] = json!({"id": vm});
        }
        json!({
            "id": nic.id,
            "name": nic.name,
            "type": "Microsoft.Network/networkInterfaces",
            "location": LOCATION,
            "etag": nic.etag,
            "properties": props,
        })
    }

    fn subnet_json(&self, vnet: &Vnet, subnet: &Subnet) -> Value {
        let id = format!("{}/subnets/{}", vnet.id, subnet.name);
        let id_l = key(&id);
        let configs: Vec<Value> = self
            .nics
            .values()
            .flat_map(|n| {
                n.ip_configs
                    .iter()
                    .filter(|c| key(&c.subnet) == id_l)
                    .map(|c| json!({"id": format!("{}/ipConfigurations/{}", n.id, c.name)}))
            })
            .collect();
        let mut props = json!({
            "provisioningState": "Succeeded",
            "addressPrefix": subnet.prefix,
            "ipConfigurations": configs,
        });
        if let Some(nsg) = &subnet.nsg {
            props["networkSecurityGroup"] = json!({"id": nsg});
        }
        json!({
            "id": id,
            "name": subnet.name,
            "type": "Microsoft.Network/virtualNetworks/subnets",
            "properties": props,
        })
    }

    fn vnet_json(&self, vnet: &Vnet) -> Value {
        let prefixes: Vec<&str> = vnet.subnets.iter().map(|s| s.prefix.as_str()).collect();
        let subnets: Vec<Value> = vnet
            .subnets
            .iter()
            .map(|s| self.subnet_json(vnet, s))
            .collect();
        json!({
            "id": vnet.id,
            "name": vnet.name,
            "type": "Microsoft.Network/virtualNetworks",
            "location": LOCATION,
            "properties": {
                "provisioningState": "Succeeded",
                "addressSpace": {"addressPrefixes": prefixes},
                "subnets": subnets,
            },
        })
    }

    fn nsg_json(&self, nsg: &Nsg) -> Value {
        let nsg_l = key(&nsg.id);
        let nics: Vec<Value> = self
            .nics
            .values()
            .filter(|n| n.nsg.as_deref().is_some_and(|id| key(id) == nsg_l))
            .map(|n| json!({"id": n.id}))
            .collect();
        let subnets: Vec<Value> = self
            .vnets
            .values()
            .flat_map(|v| {
                v.subnets
                    .iter()
                    .filter(|s| s.nsg.as_deref().is_some_and(|id| key(id) == nsg_l))
                    .map(|s| json!({"id": format!("{}/subnets/{}", v.id, s.name)}))
            })
            .collect();
        let state = if nsg.rules.iter().any(|r| r.state == Prov::Updating) {
            Prov::Updating
        } else {
            Prov::Succeeded
        };
        json!({
            "id": nsg.id,
            "name": nsg.name,
            "type": "Microsoft.Network/networkSecurityGroups",
            "location": nsg.location,
            "etag": nsg.etag,
            "properties": {
                "provisioningState": state.as_str(),
                "resourceGuid": nsg.guid,
                "securityRules": nsg.rules.iter().map(|r| rule_json(&nsg.id, r)).collect::<Vec<_>>(),
                "defaultSecurityRules": default_rules_json(&nsg.id),
                "networkInterfaces": nics,
                "subnets": subnets,
            },
        })
    }

    fn page(&self, items: Vec<Value>, ctx: &Ctx) -> Res<Value> {
        let skip = ctx.skip.unwrap_or(0);
        if skip > items.len() {
            return Err(invalid_skip_token(skip));
        }
        let end = (skip + self.page_size).min(items.len());
        let mut body = json!({"value": items[skip..end].to_vec()});
        if end < items.len() {
            body["nextLink"] = json!(format!(
                "{}{}?api-version={}&$skiptoken={end}",
                ctx.base, ctx.path, ctx.api
            ));
        }
        Ok(body)
    }
}

// ---- routing -----------------------------------------------------------

#[derive(Debug)]
enum Route {
    Token {
        tenant: String,
    },
    OpStatus {
        sub: String,
        op: String,
    },
    OpResult {
        sub: String,
        op: String,
    },
    ListVms {
        sub: String,
        rg: Option<String>,
    },
    Vm {
        sub: String,
        rg: String,
        name: String,
    },
    ListNics {
        sub: String,
        rg: Option<String>,
    },
    Nic {
        sub: String,
        rg: String,
        name: String,
    },
    Vnet {
        sub: String,
        rg: String,
        name: String,
    },
    Subnet {
        sub: String,
        rg: String,
        vnet: String,
        name: String,
    },
    ListNsgs {
        sub: String,
        rg: Option<String>,
    },
    Nsg {
        sub: String,
        rg: String,
        name: String,
    },
    Rules {
        sub: String,
        rg: String,
        nsg: String,
    },
    Rule {
        sub: String,
        rg: String,
        nsg: String,
        name: String,
    },
    DefaultRules {
        sub: String,
        rg: String,
        nsg: String,
    },
    DefaultRule {
        sub: String,
        rg: String,
        nsg: String,
        name: String,
    },
    Unknown,
}

impl Route {
    fn api_version(&self) -> &'static str {
        match self {
            Route::ListVms { .. } | Route::Vm { .. } => COMPUTE_API_VERSION,
            _ => NETWORK_API_VERSION,
        }
    }

    fn allows(&self, method: &Method) -> bool {
        match self {
            Route::Rule { .. } => [Method::GET, Method::PUT, Method::DELETE].contains(method),
            Route::Token { .. } => method == Method::POST,
            _ => method == Method::GET,
        }
    }
}

fn parse_route(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [tenant, o, v, t] if eq(o, "oauth2") && eq(v, "v2.0") && eq(t, "token") => Route::Token {
            tenant: (*tenant).to_owned(),
        },
        [s, sub, p, ns, tail @ ..] if eq(s, "subscriptions") && eq(p, "providers") => {
            parse_provider(sub, None, ns, tail)
        }
        [s, sub, r, rg, p, ns, tail @ ..]
            if eq(s, "subscriptions") && eq(r, "resourceGroups") && eq(p, "providers") =>
        {
            parse_provider(sub, Some(rg), ns, tail)
        }
        _ => Route::Unknown,
    }
}

fn parse_provider(sub: &str, rg: Option<&str>, ns: &str, tail: &[&str]) -> Route {
    fn s(x: &str) -> String {
        x.to_owned()
    }
    let sub = sub.to_owned();
    if eq(ns, "Microsoft.Compute") {
        return match (rg, tail) {
            (rg, [t]) if eq(t, "virtualMachines") => Route::ListVms { sub, rg: rg.map(s) },
            (Some(rg), [t, name]) if eq(t, "virtualMachines") => Route::Vm {
                sub,
                rg: s(rg),
                name: s(name),
            },
            _ => Route::Unknown,
        };
    }
    if !eq(ns, "Microsoft.Network") {
        return Route::Unknown;
    }
    match (rg, tail) {
        (None, [l, _loc, o, op]) if eq(l, "locations") && eq(o, "operations") => {
            Route::OpStatus { sub, op: s(op) }
        }
        (None, [l, _loc, o, op]) if eq(l, "locations") && eq(o, "operationResults") => {
            Route::OpResult { sub, op: s(op) }
        }
        (rg, [t]) if eq(t, "networkInterfaces") => Route::ListNics { sub, rg: rg.map(s) },
        (rg, [t]) if eq(t, "networkSecurityGroups") => Route::ListNsgs { sub, rg: rg.map(s) },
        (Some(rg), [t, name]) if eq(t, "networkInterfaces") => Route::Nic {
            sub,
            rg: s(rg),
            name: s(name),
        },
        (Some(rg), [t, name]) if eq(t, "virtualNetworks") => Route::Vnet {
            sub,
            rg: s(rg),
            name: s(name),
        },
        (Some(rg), [t, vnet, sn, name]) if eq(t, "virtualNetworks") && eq(sn, "subnets") => {
            Route::Subnet {
                sub,
                rg: s(rg),
                vnet: s(vnet),
                name: s(name),
            }
        }
        (Some(rg), [t, name]) if eq(t, "networkSecurityGroups") => Route::Nsg {
            sub,
            rg: s(rg),
            name: s(name),
        },
        (Some(rg), [t, nsg, r]) if eq(t, "networkSecurityGroups") && eq(r, "securityRules") => {
            Route::Rules {
                sub,
                rg: s(rg),
                nsg: s(nsg),
            }
        }
        (Some(rg), [t, nsg, r, name])
            if eq(t, "networkSecurityGroups") && eq(r, "securityRules") =>
        {
            Route::Rule {
                sub,
                rg: s(rg),
                nsg: s(nsg),
                name: s(name),
            }
        }
        (Some(rg), [t, nsg, r])
            if eq(t, "networkSecurityGroups") && eq(r, "defaultSecurityRules") =>
        {
            Route::DefaultRules {
                sub,
                rg: s(rg),
                nsg: s(nsg),
            }
        }
        (Some(rg), [t, nsg, r, name])
            if eq(t, "networkSecurityGroups") && eq(r, "defaultSecurityRules") =>
        {
            Route::DefaultRule {
                sub,
                rg: s(rg),
                nsg: s(nsg),
                name: s(name),
            }
        }
        _ => Route::Unknown,
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Where list paging and LRO URLs point.
struct Ctx<'a> {
    base: &'a str,
    path: &'a str,
    api: &'static str,
    skip: Option<usize>,
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = parse_route(&path);
    let response = serve(&shared, req, &route, &path).await;
    let status = response.status().as_u16();
    let log = {
        let mut w = shared.lock();
        w.calls.push(Call {
            method: method.to_string(),
            path: path.clone(),
            status,
        });
        w.log
    };
    if log {
        eprintln!("jitvm-arm-fake: {method} {path} -> {status}");
    }
    response
}

async fn serve(shared: &Shared, req: Request, route: &Route, path: &str) -> Response {
    let fault = shared.lock().take_fault(req.method(), path, route);
    let mut priority_taken = false;
    let mut op_fail = None;
    if let Some(kind) = fault {
        match kind {
            FaultKind::Latency(d) => tokio::time::sleep(d).await,
            FaultKind::PriorityTaken => priority_taken = true,
            FaultKind::OperationFails { code, message } => op_fail = Some((code, message)),
            other => return fault_response(shared, other, route),
        }
    }
    if let Route::Token { tenant } = route {
        return token(shared, tenant, req).await;
    }
    let mut response = match arm(shared, req, route, priority_taken, op_fail).await {
        Ok(r) => r,
        Err(e) => e.into_response(&shared.base),
    };
    if let Ok(v) = HeaderValue::from_str(&Uuid::now_v7().to_string()) {
        response.headers_mut().insert("x-ms-request-id", v);
    }
    response
}

fn fault_response(shared: &Shared, kind: FaultKind, route: &Route) -> Response {
    let token_endpoint = matches!(route, Route::Token { .. });
    match kind {
        FaultKind::Throttle { retry_after_secs } => {
            let mut r = if token_endpoint {
                aad_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "temporarily_unavailable",
                    90033,
                    "A transient error has occurred. Please try again.",
                )
            } else {
                ArmError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    format!(
                        "The request is being throttled as the limit has been reached for this \
                         operation. Please try again after '{retry_after_secs}' seconds."
                    ),
                )
                .into_response(&shared.base)
            };
            set_header(&mut r, "retry-after", retry_after_secs.to_string());
            r
        }
        FaultKind::AnotherOperationInProgress { retry_after_secs } => {
            let sub = match route {
                Route::Rule { sub, .. }
                | Route::Rules { sub, .. }
                | Route::Nsg { sub, .. }
                | Route::Nic { sub, .. }
                | Route::Vm { sub, .. } => sub.clone(),
                _ => "00000000-0000-0000-0000-000000000000".to_owned(),
            };
            let op = shared.lock().new_op(&sub, None, OpKind::Noop);
            let mut r = ArmError::new(
                StatusCode::CONFLICT,
                "AnotherOperationInProgress",
                format!(
                    "Another operation on this or dependent resource is in progress. To retrieve \
                     status of the operation use uri: {}",
                    op_url(&shared.base, &sub, LOCATION, "operations", &op)
                ),
            )
            .into_response(&shared.base);
            set_header(&mut r, "retry-after", retry_after_secs.to_string());
            r
        }
        FaultKind::ServerError => {
            if token_endpoint {
                aad_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    90033,
                    "A transient error has occurred. Please try again.",
                )
            } else {
                ArmError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "An error has occurred while processing the request. Please try again.",
                )
                .into_response(&shared.base)
            }
        }
        FaultKind::Error { status, code } => ArmError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &code,
            format!("{code} (injected)"),
        )
        .into_response(&shared.base),
        // Handled by the caller.
        FaultKind::Latency(_) | FaultKind::PriorityTaken | FaultKind::OperationFails { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn arm(
    shared: &Shared,
    req: Request,
    route: &Route,
    priority_taken: bool,
    op_fail: Option<(String, String)>,
) -> Res<Response> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    shared.lock().check_auth(req.headers(), &shared.base)?;
    if matches!(route, Route::Unknown) {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type addressed by '{path}' could not be found (the ARM fake does not serve it)."
            ),
        ));
    }
    if !route.allows(&method) {
        return Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The requested resource does not support http method '{method}'."),
        ));
    }
    let api = route.api_version();
    check_api_version(query.as_deref(), api)?;
    let skip = match query_param(query.as_deref(), "$skiptoken") {
        None => None,
        Some(t) => Some(t.parse::<usize>().map_err(|_| invalid_skip_token(t))?),
    };
    let body = if method == Method::PUT {
        axum::body::to_bytes(req.into_body(), 4 << 20)
            .await
            .map_err(|_| invalid_request_format())?
    } else {
        bytes::Bytes::new()
    };
    let ctx = Ctx {
        base: &shared.base,
        path: &path,
        api,
        skip,
    };
    let mut w = shared.lock();
    let w = &mut *w;
    match route {
        Route::ListVms { sub, rg } => {
            w.check_scope(sub, rg.as_deref())?;
            let items = w
                .vms
                .values()
                .filter(|v| in_scope(&v.sub, &v.rg, sub, rg.as_deref()))
                .map(|v| w.vm_json(v))
                .collect();
            ok(w.page(items, &ctx)?)
        }
        Route::Vm { sub, rg, name } => {
            w.check_scope(sub, Some(rg))?;
            let id = arm_id(sub, rg, "Microsoft.Compute", "virtualMachines", name);
            let vm = w
                .vms
                .get(&key(&id))
                .ok_or_else(|| resource_not_found("Microsoft.Compute/virtualMachines", name, rg))?;
            ok(w.vm_json(vm))
        }
        Route::ListNics { sub, rg } => {
            w.check_scope(sub, rg.as_deref())?;
            let items = w
                .nics
                .values()
                .filter(|n| in_scope(&n.sub, &n.rg, sub, rg.as_deref()))
                .map(|n| w.nic_json(n))
                .collect();
            ok(w.page(items, &ctx)?)
        }
        Route::Nic { sub, rg, name } => {
            w.check_scope(sub, Some(rg))?;
            let id = arm_id(sub, rg, "Microsoft.Network", "networkInterfaces", name);
            let nic = w.nics.get(&key(&id)).ok_or_else(|| {
                resource_not_found("Microsoft.Network/networkInterfaces", name, rg)
            })?;
            ok(w.nic_json(nic))
        }
        Route::Vnet { sub, rg, name } => {
            w.check_scope(sub, Some(rg))?;
            let vnet = find_vnet(w, sub, rg, name)?;
            ok(w.vnet_json(vnet))
        }
        Route::Subnet {
            sub,
            rg,
            vnet,
            name,
        } => {
            w.check_scope(sub, Some(rg))?;
            let v = find_vnet(w, sub, rg, vnet)?;
            let subnet = v
                .subnets
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| child_not_found(&path))?;
            ok(w.subnet_json(v, subnet))
        }
        Route::ListNsgs { sub, rg } => {
            w.check_scope(sub, rg.as_deref())?;
            let items = w
                .nsgs
                .values()
                .filter(|n| in_scope(&n.sub, &n.rg, sub, rg.as_deref()))
                .map(|n| w.nsg_json(n))
                .collect();
            ok(w.page(items, &ctx)?)
        }
        Route::Nsg { sub, rg, name } => {
            w.check_scope(sub, Some(rg))?;
            let nsg = find_nsg(w, sub, rg, name)?;
            ok(w.nsg_json(nsg))
        }
        Route::DefaultRules { sub, rg, nsg } => {
            w.check_scope(sub, Some(rg))?;
            let nsg = find_nsg(w, sub, rg, nsg)?;
            ok(json!({"value": default_rules_json(&nsg.id)}))
        }
        Route::DefaultRule { sub, rg, nsg, name } => {
            w.check_scope(sub, Some(rg))?;
            let nsg = find_nsg(w, sub, rg, nsg)?;
            let rule = default_rules_json(&nsg.id)
                .into_iter()
                .find(|r| r["name"].as_str().is_some_and(|n| eq(n, name)))
                .ok_or_else(|| child_not_found(&path))?;
            ok(rule)
        }
        Route::Rules { sub, rg, nsg } => {
            w.check_scope(sub, Some(rg))?;
            let nsg = find_nsg(w, sub, rg, nsg)?;
            let items = nsg.rules.iter().map(|r| rule_json(&nsg.id, r)).collect();
            ok(w.page(items, &ctx)?)
        }
        Route::Rule { sub, rg, nsg, name } => {
            w.check_scope(sub, Some(rg))?;
            let nsg_key = key(&find_nsg(w, sub, rg, nsg)?.id);
            match method {
                Method::GET => {
                    let nsg = &w.nsgs[&nsg_key];
                    let rule = nsg
                        .rules
                        .iter()
                        .find(|r| r.name.eq_ignore_ascii_case(name))
                        .ok_or_else(|| child_not_found(&path))?;
                    ok(rule_json(&nsg.id, rule))
                }
                Method::PUT => {
                    put_rule_api(w, &ctx, &nsg_key, name, &body, priority_taken, op_fail)
                }
                _ => delete_rule_api(w, &ctx, &nsg_key, name, op_fail),
            }
        }
        Route::OpStatus { sub, op } => {
            w.check_scope(sub, None)?;
            let retry_after = w.retry_after;
            match w.poll(sub, op) {
                None => Err(op_not_found(op)),
                Some(Progress::InProgress) => {
                    let mut r = json_response(StatusCode::OK, &json!({"status": "InProgress"}));
                    set_header(&mut r, "retry-after", retry_after.to_string());
                    Ok(r)
                }
                Some(Progress::Done(Outcome::Succeeded)) => ok(json!({"status": "Succeeded"})),
                Some(Progress::Done(Outcome::Failed(code, message))) => ok(json!({
                    "status": "Failed",
                    "error": {"code": code, "message": message, "details": []},
                })),
            }
        }
        Route::OpResult { sub, op } => {
            w.check_scope(sub, None)?;
            let retry_after = w.retry_after;
            let put_rule = match w.ops.get(&op.to_ascii_lowercase()).map(|o| &o.kind) {
                Some(OpKind::PutRule { nsg, .. }) => Some(nsg.clone()),
                _ => None,
            };
            let pending_rule = put_rule.as_ref().and_then(|nsg_key| {
                let nsg = w.nsgs.get(nsg_key)?;
                let op_l = op.to_ascii_lowercase();
                nsg.rules
                    .iter()
                    .position(|r| r.pending.as_deref() == Some(op_l.as_str()))
                    .map(|i| (nsg_key.clone(), i))
            });
            match w.poll(sub, op) {
                None => Err(op_not_found(op)),
                Some(Progress::InProgress) => {
                    let mut r = StatusCode::ACCEPTED.into_response();
                    set_header(
                        &mut r,
                        "location",
                        format!("{}{}?api-version={api}", shared.base, path),
                    );
                    set_header(&mut r, "retry-after", retry_after.to_string());
                    Ok(r)
                }
                Some(Progress::Done(Outcome::Succeeded)) => match pending_rule {
                    Some((nsg_key, i)) => {
                        let nsg = &w.nsgs[&nsg_key];
                        match nsg.rules.get(i) {
                            Some(rule) => ok(rule_json(&nsg.id, rule)),
                            None => Ok(StatusCode::NO_CONTENT.into_response()),
                        }
                    }
                    None => Ok(StatusCode::NO_CONTENT.into_response()),
                },
                Some(Progress::Done(Outcome::Failed(code, message))) => {
                    let status = if code == "InternalServerError" {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::BAD_REQUEST
                    };
                    Err(ArmError::new(status, &code, message))
                }
            }
        }
        Route::Token { .. } | Route::Unknown => unreachable!("handled above"),
    }
}

fn put_rule_api(
    w: &mut World,
    ctx: &Ctx,
    nsg_key: &str,
    name: &str,
    body: &[u8],
    priority_taken: bool,
    op_fail: Option<(String, String)>,
) -> Res<Response> {
    let body: Value = serde_json::from_slice(body).map_err(|_| invalid_request_format())?;
    let empty = Value::Object(Map::new());
    let props = match body.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err(invalid_request_format()),
    };
    if priority_taken {
        take_priority(w, nsg_key, props);
    }
    let limit = w.rule_limit;
    let nsg = &w.nsgs[nsg_key];
    check_rule_name(name)?;
    let parsed = parse_rule(props, &format!("{}/securityRules/{name}", nsg.id))?;
    // Checked before the operation exists, so a refused PUT leaves none.
    check_admission(nsg, name, &parsed, limit)?;
    let previous = nsg
        .rules
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(name))
        .cloned();
    let (lro_sub, location) = (nsg.sub.clone(), nsg.location.clone());
    let created = previous.is_none();
    let op = w.new_op(
        &lro_sub,
        op_fail,
        OpKind::PutRule {
            nsg: nsg_key.to_owned(),
            previous: previous.map(Box::new),
        },
    );
    let nsg = w.nsgs.get_mut(nsg_key).expect("looked up by the caller");
    admit(nsg, name, parsed, limit, Prov::Updating, Some(op.clone()))?;
    let rule = nsg
        .rules
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(name))
        .expect("just admitted");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut r = json_response(status, &rule_json(&nsg.id, rule));
    set_header(
        &mut r,
        "azure-asyncoperation",
        op_url(ctx.base, &lro_sub, &location, "operations", &op),
    );
    set_header(&mut r, "retry-after", w.retry_after.to_string());
    Ok(r)
}

fn delete_rule_api(
    w: &mut World,
    ctx: &Ctx,
    nsg_key: &str,
    name: &str,
    op_fail: Option<(String, String)>,
) -> Res<Response> {
    let nsg = w.nsgs.get_mut(nsg_key).expect("looked up by the caller");
    let Some(idx) = nsg
        .rules
        .iter()
        .position(|r| r.name.eq_ignore_ascii_case(name))
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let removed = nsg.rules.remove(idx);
    nsg.etag = new_etag();
    let sub = nsg.sub.clone();
    let location = nsg.location.clone();
    let op = w.new_op(
        &sub,
        op_fail,
        OpKind::DeleteRule {
            nsg: nsg_key.to_owned(),
            removed: Box::new(removed),
        },
    );
    let mut r = StatusCode::ACCEPTED.into_response();
    set_header(
        &mut r,
        "location",
        op_url(ctx.base, &sub, &location, "operationResults", &op),
    );
    set_header(
        &mut r,
        "azure-asyncoperation",
        op_url(ctx.base, &sub, &location, "operations", &op),
    );
    set_header(&mut r, "retry-after", w.retry_after.to_string());
    Ok(r)
}

/// The `PriorityTaken` fault: a competing rule takes the direction and
/// priority the PUT asks for, when it asks for valid ones.
fn take_priority(w: &mut World, nsg_key: &str, props: &Value) {
    let direction = props
        .get("direction")
        .and_then(Value::as_str)
        .and_then(|d| canonical(d, &["Inbound", "Outbound"]));
    let priority = props
        .get("priority")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| (100..=4096).contains(p));
    let (Some(direction), Some(priority)) = (direction, priority) else {
        return;
    };
    let Some(nsg) = w.nsgs.get_mut(nsg_key) else {
        return;
    };
    let mut name;
    loop {
        w.racers += 1;
        name = format!("racer-{}", w.racers);
        if !nsg.rules.iter().any(|r| r.name.eq_ignore_ascii_case(&name)) {
            break;
        }
    }
    nsg.rules.push(Rule {
        name,
        props: RuleProps {
            description: None,
            protocol: "Tcp",
            source_port_range: Some("*".to_owned()),
            source_port_ranges: Vec::new(),
            destination_port_range: Some("1".to_owned()),
            destination_port_ranges: Vec::new(),
            source_address_prefix: Some("10.255.255.255".to_owned()),
            source_address_prefixes: Vec::new(),
            destination_address_prefix: Some("*".to_owned()),
            destination_address_prefixes: Vec::new(),
            access: "Allow",
            priority,
            direction,
        },
        etag: new_etag(),
        state: Prov::Succeeded,
        pending: None,
    });
    nsg.etag = new_etag();
}

/// Refuses a rule whose direction and priority another rule has, or a new
/// rule beyond the limit.
fn check_admission(nsg: &Nsg, name: &str, props: &RuleProps, limit: usize) -> Res<()> {
    if let Some(other) = nsg.rules.iter().find(|r| {
        !r.name.eq_ignore_ascii_case(name)
            && r.props.direction == props.direction
            && r.props.priority == props.priority
    }) {
        return Err(ArmError::bad_request(
            "SecurityRuleConflict",
            format!(
                "Security rule {} conflicts with rule {name}. Rules cannot have the same Priority \
                 and Direction. To learn more, see aka.ms/nsgrules.",
                other.name
            ),
        ));
    }
    let exists = nsg.rules.iter().any(|r| r.name.eq_ignore_ascii_case(name));
    if !exists && nsg.rules.len() >= limit {
        return Err(ArmError::bad_request(
            "SecurityRuleCountLimitReached",
            format!(
                "A security group cannot have more than {limit} security rules. Security group {} \
                 already has {}.",
                nsg.id,
                nsg.rules.len()
            ),
        ));
    }
    Ok(())
}

/// Adds or replaces a rule after [`check_admission`].
fn admit(
    nsg: &mut Nsg,
    name: &str,
    props: RuleProps,
    limit: usize,
    state: Prov,
    pending: Option<String>,
) -> Res<()> {
    check_admission(nsg, name, &props, limit)?;
    let etag = new_etag();
    match nsg
        .rules
        .iter_mut()
        .find(|r| r.name.eq_ignore_ascii_case(name))
    {
        Some(rule) => {
            rule.props = props;
            rule.etag = etag;
            rule.state = state;
            rule.pending = pending;
        }
        None => nsg.rules.push(Rule {
            name: name.to_owned(),
            props,
            etag,
            state,
            pending,
        }),
    }
    nsg.etag = new_etag();
    Ok(())
}

fn find_nsg<'w>(w: &'w World, sub: &str, rg: &str, name: &str) -> Res<&'w Nsg> {
    let id = arm_id(sub, rg, "Microsoft.Network", "networkSecurityGroups", name);
    w.nsgs
        .get(&key(&id))
        .ok_or_else(|| resource_not_found("Microsoft.Network/networkSecurityGroups", name, rg))
}

fn find_vnet<'w>(w: &'w World, sub: &str, rg: &str, name: &str) -> Res<&'w Vnet> {
    let id = arm_id(sub, rg, "Microsoft.Network", "virtualNetworks", name);
    w.vnets
        .get(&key(&id))
        .ok_or_else(|| resource_not_found("Microsoft.Network/virtualNetworks", name, rg))
}

fn in_scope(res_sub: &str, res_rg: &str, sub: &str, rg: Option<&str>) -> bool {
    eq(res_sub, sub) && rg.is_none_or(|rg| eq(res_rg, rg))
}

// ---- the token endpoint ------------------------------------------------

async fn token(shared: &Shared, tenant: &str, req: Request) -> Response {
    if req.method() != Method::POST {
        return aad_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            &format!(
                "The endpoint only accepts POST requests. Received a {} request.",
                req.method()
            ),
        );
    }
    let form: Vec<(String, String)> =
        match Form::<Vec<(String, String)>>::from_request(req, &()).await {
            Ok(Form(form)) => form,
            Err(_) => Vec::new(),
        };
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let missing = |name: &str| {
        aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
    };
    if !eq(tenant, ArmFake::TENANT) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and \
                 are signing into the correct cloud."
            ),
        );
    }
    let Some(grant) = get("grant_type") else {
        return missing("grant_type");
    };
    if grant != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let Some(client) = get("client_id") else {
        return missing("client_id");
    };
    if !eq(client, ArmFake::CLIENT_ID) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client}' was not found in the directory '{tenant}'. \
                 This can happen if the application has not been installed by the administrator of \
                 the tenant or consented to by any user in the tenant."
            ),
        );
    }
    let Some(scope) = get("scope") else {
        return missing("scope");
    };
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.len() != 1 {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            &format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} \
                 is not valid."
            ),
        );
    }
    let Some(resource) = scopes[0].strip_suffix("/.default") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have \
                 a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    let audience = normalize_resource(resource);
    if !is_arm_audience(&audience, &shared.base) && audience != GRAPH {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. \
                 This can happen if the application has not been installed by the administrator of \
                 the tenant or consented to by any user in the tenant."
            ),
        );
    }
    match (get("client_secret"), get("client_assertion")) {
        (Some(_), Some(_)) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                9002313,
                "Invalid request. Request is malformed or invalid: give either 'client_secret' or \
                 'client_assertion', not both.",
            );
        }
        (None, None) => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or \
                 'client_secret'.",
            );
        }
        (Some(secret), None) => {
            if secret != ArmFake::CLIENT_SECRET {
                return aad_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request \
                         is the client secret value, not the client secret ID, for a secret added to \
                         app '{client}'."
                    ),
                );
            }
        }
        (None, Some(assertion)) => {
            let Some(kind) = get("client_assertion_type") else {
                return missing("client_assertion_type");
            };
            if kind != JWT_BEARER {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    9002313,
                    &format!(
                        "Invalid request. Request is malformed or invalid: client_assertion_type must \
                         be {JWT_BEARER}, not {kind}."
                    ),
                );
            }
            if assertion != ArmFake::CLIENT_ASSERTION {
                return aad_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    700027,
                    "Client assertion failed signature validation.",
                );
            }
        }
    }
    let access_token = format!(
        "fake-arm.{}{}",
        Uuid::now_v7().simple(),
        Uuid::now_v7().simple()
    );
    let lifetime = {
        let mut w = shared.lock();
        let lifetime = w.token_lifetime;
        let expires = Timestamp::now()
            .checked_add(SignedDuration::from_secs(
                i64::try_from(lifetime).unwrap_or(i64::MAX / 2),
            ))
            .unwrap_or(Timestamp::MAX);
        w.tokens
            .insert(access_token.clone(), Token { expires, audience });
        w.tokens_issued += 1;
        lifetime
    };
    let mut r = json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }),
    );
    set_header(&mut r, "cache-control", "no-store, no-cache".to_owned());
    r
}

fn normalize_resource(resource: &str) -> String {
    resource.trim_end_matches('/').to_ascii_lowercase()
}

fn is_arm_audience(audience: &str, base: &str) -> bool {
    ARM_AUDIENCES.contains(&audience) || audience == normalize_resource(base)
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let stamp = Timestamp::now().strftime("%Y-%m-%d %H:%M:%SZ").to_string();
    let trace = Uuid::now_v7();
    let correlation = Uuid::now_v7();
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace.to_string(),
            "correlation_id": correlation.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

// ---- rule validation ---------------------------------------------------

fn check_rule_name(name: &str) -> Res<()> {
    let chars: Vec<char> = name.chars().collect();
    let allowed = |c: &char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let valid = (1..=80).contains(&chars.len())
        && chars.iter().all(allowed)
        && chars[0].is_ascii_alphanumeric()
        && chars
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_');
    if valid {
        Ok(())
    } else {
        Err(ArmError::bad_request(
            "InvalidResourceName",
            format!(
                "Resource name {name} is invalid. The name can be up to 80 characters long. It must \
                 begin with a letter or digit and end with a letter, digit or '_', and may contain \
                 letters, digits, '.', '-' and '_'."
            ),
        ))
    }
}

/// Validates a rule's `properties` and normalises them.
fn parse_rule(props: &Value, rule_id: &str) -> Res<RuleProps> {
    let empty = Map::new();
    let props = match props {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => return Err(invalid_request_format()),
    };
    let text = |field: &str| -> Res<Option<String>> {
        match props.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid_request_format()),
        }
    };
    let list = |field: &str| -> Res<Vec<String>> {
        match props.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(invalid_request_format)
                })
                .collect(),
            Some(_) => Err(invalid_request_format()),
        }
    };
    let missing = |what: &str| {
        ArmError::bad_request(
            "SecurityRuleParametersMissing",
            format!(
                "Required security rule parameters are missing for security rule with Id: \
                 {rule_id}. Security rule must specify {what}."
            ),
        )
    };

    let description = text("description")?;
    if let Some(d) = &description {
        let n = d.chars().count();
        if n > 140 {
            return Err(ArmError::bad_request(
                "SecurityRuleInvalidDescription",
                format!(
                    "Security rule {rule_id} has a description of {n} characters; at most 140 are \
                     allowed."
                ),
            ));
        }
    }

    let protocol = text("protocol")?.ok_or_else(|| missing("Protocol"))?;
    let access = text("access")?.ok_or_else(|| missing("Access"))?;
    let direction = text("direction")?.ok_or_else(|| missing("Direction"))?;
    let priority = match props.get("priority") {
        None | Some(Value::Null) => return Err(missing("Priority")),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(invalid_request_format)?,
        Some(_) => return Err(invalid_request_format()),
    };

    let protocol = canonical(&protocol, &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"]).ok_or_else(|| {
        ArmError::bad_request(
            "SecurityRuleInvalidProtocol",
            format!(
                "Security rule {rule_id} has invalid Protocol. Value provided: {protocol}. Allowed \
                 values: Tcp, Udp, Icmp, Esp, Ah, *."
            ),
        )
    })?;
    let access = canonical(&access, &["Allow", "Deny"]).ok_or_else(|| {
        ArmError::bad_request(
            "SecurityRuleInvalidAccessType",
            format!(
                "Security rule {rule_id} has invalid Access. Value provided: {access}. Allowed \
                 values: Allow, Deny."
            ),
        )
    })?;
    let direction = canonical(&direction, &["Inbound", "Outbound"]).ok_or_else(|| {
        ArmError::bad_request(
            "SecurityRuleInvalidDirection",
            format!(
                "Security rule {rule_id} has invalid Direction. Value provided: {direction}. Allowed \
                 values: Inbound, Outbound."
            ),
        )
    })?;
    if !(100..=4096).contains(&priority) {
        return Err(ArmError::bad_request(
            "SecurityRuleInvalidPriority",
            format!(
                "Security rule has invalid Priority. Value provided: {priority} Allowed range 100-4096."
            ),
        ));
    }
    let priority = u32::try_from(priority).expect("checked range");

    let one_of = |single: &str, plural: &str| -> Res<(Option<String>, Vec<String>)> {
        let s = text(single)?;
        let p = list(plural)?;
        match (&s, p.is_empty()) {
            (Some(_), false) => Err(ArmError::bad_request(
                "SecurityRuleParameterContainsUnsupportedValue",
                format!(
                    "Security rule {rule_id} specifies both {single} and {plural}; give one of them."
                ),
            )),
            (None, true) => Err(missing(&format!("{plural} or {single}"))),
            _ => Ok((s, p)),
        }
    };
    let (source_port_range, source_port_ranges) = one_of("sourcePortRange", "sourcePortRanges")?;
    let (destination_port_range, destination_port_ranges) =
        one_of("destinationPortRange", "destinationPortRanges")?;
    for port in source_port_range
        .iter()
        .chain(&source_port_ranges)
        .chain(&destination_port_range)
        .chain(&destination_port_ranges)
    {
        if !valid_port_spec(port) {
            return Err(ArmError::bad_request(
                "SecurityRuleInvalidPortRange",
                format!(
                    "Security rule has invalid Port range. Value provided: {port}. Value should be \
                     an integer OR integer range with '-' delimiter. Valid range 0-65535."
                ),
            ));
        }
    }

    if [
        "sourceApplicationSecurityGroups",
        "destinationApplicationSecurityGroups",
    ]
    .iter()
    .any(|f| {
        props
            .get(*f)
            .is_some_and(|v| !v.is_null() && v != &json!([]))
    }) {
        return Err(ArmError::bad_request(
            "SecurityRuleParameterContainsUnsupportedValue",
            format!(
                "Security rule {rule_id} uses application security groups, which the ARM fake does not emulate."
            ),
        ));
    }
    let (source_address_prefix, source_address_prefixes) =
        one_of("sourceAddressPrefix", "sourceAddressPrefixes")?;
    let (destination_address_prefix, destination_address_prefixes) =
        one_of("destinationAddressPrefix", "destinationAddressPrefixes")?;
    let invalid_prefix = |value: &str| {
        ArmError::bad_request(
            "SecurityRuleInvalidAddressPrefix",
            format!("Security rule {rule_id} has invalid Address prefix. Value provided: {value}."),
        )
    };
    let mut families = BTreeSet::new();
    for value in [&source_address_prefix, &destination_address_prefix]
        .into_iter()
        .flatten()
    {
        match classify_address(value).ok_or_else(|| invalid_prefix(value))? {
            Address::V4 => families.insert(4),
            Address::V6 => families.insert(6),
            Address::Any | Address::Tag => false,
        };
    }
    for (field, values) in [
        ("SourceAddressPrefixes", &source_address_prefixes),
        ("DestinationAddressPrefixes", &destination_address_prefixes),
    ] {
        for value in values {
            match classify_address(value).ok_or_else(|| invalid_prefix(value))? {
                Address::V4 => families.insert(4),
                Address::V6 => families.insert(6),
                Address::Any | Address::Tag => {
                    return Err(ArmError::bad_request(
                        "SecurityRuleParameterContainsUnsupportedValue",
                        format!(
                            "Security rule parameter {field} for rule with Id {rule_id} cannot \
                             specify '*' or service tags. Unsupported value used: {value}."
                        ),
                    ));
                }
            };
        }
    }
    if families.len() > 1 {
        return Err(ArmError::bad_request(
            "ResourceCannotContainAddressPrefixesFromDifferentAddressFamilies",
            format!(
                "Security rule {rule_id} contains IP addresses or prefixes that belong to different \
                 address families. All IP addresses or prefixes in the resource should belong to the \
                 same address family."
            ),
        ));
    }

    Ok(RuleProps {
        description,
        protocol,
        source_port_range,
        source_port_ranges,
        destination_port_range,
        destination_port_ranges,
        source_address_prefix,
        source_address_prefixes,
        destination_address_prefix,
        destination_address_prefixes,
        access,
        priority,
        direction,
    })
}

fn canonical(value: &str, allowed: &[&'static str]) -> Option<&'static str> {
    allowed
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(value))
}

fn valid_port_spec(spec: &str) -> bool {
    fn port(s: &str) -> Option<u32> {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>().ok().filter(|p| *p <= 65535)
    }
    if spec == "*" {
        return true;
    }
    match spec.split_once('-') {
        Some((a, b)) => matches!((port(a), port(b)), (Some(a), Some(b)) if a <= b),
        None => port(spec).is_some(),
    }
}

enum Address {
    Any,
    Tag,
    V4,
    V6,
}

fn classify_address(value: &str) -> Option<Address> {
    if value == "*" {
        return Some(Address::Any);
    }
    if let Some((ip, len)) = value.split_once('/') {
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: u32 = len.parse().ok()?;
        return match ip.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let host = if len >= 32 { 0 } else { u32::MAX >> len };
                (len <= 32 && bits & host == 0).then_some(Address::V4)
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let host = if len >= 128 { 0 } else { u128::MAX >> len };
                (len <= 128 && bits & host == 0).then_some(Address::V6)
            }
        };
    }
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Some(if ip.is_ipv4() {
            Address::V4
        } else {
            Address::V6
        });
    }
    let mut parts = value.split('.');
    let first = parts.next()?;
    let tag_like = first.starts_with(|c: char| c.is_ascii_alphabetic())
        && first.chars().all(|c| c.is_ascii_alphanumeric())
        && parts.all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
    tag_like.then_some(Address::Tag)
}

// ---- JSON and HTTP helpers ---------------------------------------------

fn rule_json(nsg_id: &str, rule: &Rule) -> Value {
    let p = &rule.props;
    let mut props = Map::new();
    props.insert("provisioningState".into(), json!(rule.state.as_str()));
    if let Some(d) = &p.description {
        props.insert("description".into(), json!(d));
    }
    props.insert("protocol".into(), json!(p.protocol));
    for (name, value) in [
        ("sourcePortRange", &p.source_port_range),
        ("destinationPortRange", &p.destination_port_range),
        ("sourceAddressPrefix", &p.source_address_prefix),
        ("destinationAddressPrefix", &p.destination_address_prefix),
    ] {
        if let Some(v) = value {
            props.insert(name.into(), json!(v));
        }
    }
    props.insert("sourcePortRanges".into(), json!(p.source_port_ranges));
    props.insert(
        "destinationPortRanges".into(),
        json!(p.destination_port_ranges),
    );
    props.insert(
        "sourceAddressPrefixes".into(),
        json!(p.source_address_prefixes),
    );
    props.insert(
        "destinationAddressPrefixes".into(),
        json!(p.destination_address_prefixes),
    );
    props.insert("access".into(), json!(p.access));
    props.insert("priority".into(), json!(p.priority));
    props.insert("direction".into(), json!(p.direction));
    json!({
        "id": format!("{nsg_id}/securityRules/{}", rule.name),
        "name": rule.name,
        "etag": rule.etag,
        "type": RULE_TYPE,
        "properties": props,
    })
}

struct DefaultRule {
    name: &'static str,
    priority: u32,
    direction: &'static str,
    access: &'static str,
    source: &'static str,
    destination: &'static str,
    description: &'static str,
}

/// The six rules every NSG has (see `NetworkSecurityGroupGet.json`).
const DEFAULT_RULES: [DefaultRule; 6] = [
    DefaultRule {
        name: "AllowVnetInBound",
        priority: 65000,
        direction: "Inbound",
        access: "Allow",
        source: "VirtualNetwork",
        destination: "VirtualNetwork",
        description: "Allows inbound traffic from any VM in the virtual network",
    },
    DefaultRule {
        name: "AllowAzureLoadBalancerInBound",
        priority: 65001,
        direction: "Inbound",
        access: "Allow",
        source: "AzureLoadBalancer",
        destination: "*",
        description: "Allows inbound traffic from the Azure load balancer",
    },
    DefaultRule {
        name: "DenyAllInBound",
        priority: 65500,
        direction: "Inbound",
        access: "Deny",
        source: "*",
        destination: "*",
        description: "Denies all other inbound traffic",
    },
    DefaultRule {
        name: "AllowVnetOutBound",
        priority: 65000,
        direction: "Outbound",
        access: "Allow",
        source: "VirtualNetwork",
        destination: "VirtualNetwork",
        description: "Allows outbound traffic to any VM in the virtual network",
    },
    DefaultRule {
        name: "AllowInternetOutBound",
        priority: 65001,
        direction: "Outbound",
        access: "Allow",
        source: "*",
        destination: "Internet",
        description: "Allows outbound traffic to the Internet",
    },
    DefaultRule {
        name: "DenyAllOutBound",
        priority: 65500,
        direction: "Outbound",
        access: "Deny",
        source: "*",
        destination: "*",
        description: "Denies all other outbound traffic",
    },
];

fn default_rules_json(nsg_id: &str) -> Vec<Value> {
    DEFAULT_RULES
        .iter()
        .map(|d| {
            json!({
                "id": format!("{nsg_id}/defaultSecurityRules/{}", d.name),
                "name": d.name,
                "etag": "W/\"00000000-0000-0000-0000-000000000000\"",
                "type": DEFAULT_RULE_TYPE,
                "properties": {
                    "provisioningState": "Succeeded",
                    "description": d.description,
                    "protocol": "*",
                    "sourcePortRange": "*",
                    "destinationPortRange": "*",
                    "sourceAddressPrefix": d.source,
                    "destinationAddressPrefix": d.destination,
                    "sourcePortRanges": [],
                    "destinationPortRanges": [],
                    "sourceAddressPrefixes": [],
                    "destinationAddressPrefixes": [],
                    "access": d.access,
                    "priority": d.priority,
                    "direction": d.direction,
                },
            })
        })
        .collect()
}

fn arm_id(sub: &str, rg: &str, namespace: &str, kind: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{kind}/{name}")
}

/// The lookup key of an id: lower case, no trailing `/`.
fn key(id: &str) -> String {
    id.trim_end_matches('/').to_ascii_lowercase()
}

fn new_etag() -> String {
    format!("W/\"{}\"", Uuid::now_v7())
}

fn op_url(base: &str, sub: &str, location: &str, kind: &str, op: &str) -> String {
    format!(
        "{base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/{kind}/{op}?api-version={NETWORK_API_VERSION}"
    )
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = k.replace("%24", "$");
        k.eq_ignore_ascii_case(name).then(|| v.to_owned())
    })
}

fn check_api_version(query: Option<&str>, expected: &str) -> Res<()> {
    match query_param(query, "api-version").filter(|v| !v.is_empty()) {
        None => Err(ArmError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if v == expected => Ok(()),
        Some(v) => Err(ArmError::bad_request(
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid. The supported versions are '{expected}'."),
        )),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn ok(body: Value) -> Res<Response> {
    Ok(json_response(StatusCode::OK, &body))
}

fn set_header(r: &mut Response, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

type Res<T> = Result<T, ArmError>;

/// A CloudError answer.
#[derive(Debug)]
struct ArmError {
    status: StatusCode,
    code: String,
    message: String,
    /// Adds a `WWW-Authenticate` challenge (401s).
    challenge: bool,
}

impl ArmError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ArmError {
        ArmError {
            status,
            code: code.to_owned(),
            message: message.into(),
            challenge: false,
        }
    }

    fn bad_request(code: &str, message: impl Into<String>) -> ArmError {
        ArmError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn challenge(mut self) -> ArmError {
        self.challenge = true;
        self
    }

    fn into_response(self, base: &str) -> Response {
        let mut r = json_response(
            self.status,
            &json!({"error": {"code": self.code, "message": self.message, "details": []}}),
        );
        if self.challenge {
            let description = self.message.replace('"', "'");
            set_header(
                &mut r,
                "www-authenticate",
                format!(
                    "Bearer authorization_uri=\"{base}/{}\", error=\"invalid_token\", error_description=\"{description}\"",
                    ArmFake::TENANT
                ),
            );
        }
        r
    }
}

fn invalid_request_format() -> ArmError {
    ArmError::bad_request("InvalidRequestFormat", "Cannot parse the request.")
}

fn invalid_skip_token(token: impl std::fmt::Display) -> ArmError {
    ArmError::bad_request(
        "InvalidSkipToken",
        format!("The $skiptoken '{token}' is not valid for this list."),
    )
}

fn resource_not_found(kind: &str, name: &str, rg: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{kind}/{name}' under resource group '{rg}' was not found. For more \
             details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

fn child_not_found(path: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Resource {} not found.", path.trim_end_matches('/')),
    )
}

fn op_not_found(op: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Operation {op} not found."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_six_documented_default_rules_are_there() {
        let rules = default_rules_json(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n",
        );
        let seen: Vec<(&str, u64, &str, &str)> = rules
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap(),
                    r["properties"]["priority"].as_u64().unwrap(),
                    r["properties"]["direction"].as_str().unwrap(),
                    r["properties"]["access"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("AllowVnetInBound", 65000, "Inbound", "Allow"),
                ("AllowAzureLoadBalancerInBound", 65001, "Inbound", "Allow"),
                ("DenyAllInBound", 65500, "Inbound", "Deny"),
                ("AllowVnetOutBound", 65000, "Outbound", "Allow"),
                ("AllowInternetOutBound", 65001, "Outbound", "Allow"),
                ("DenyAllOutBound", 65500, "Outbound", "Deny"),
            ]
        );
        assert_eq!(
            rules[1]["properties"]["sourceAddressPrefix"],
            "AzureLoadBalancer"
        );
        assert_eq!(
            rules[4]["properties"]["destinationAddressPrefix"],
            "Internet"
        );
        assert!(
            rules[0]["id"]
                .as_str()
                .unwrap()
                .ends_with("/defaultSecurityRules/AllowVnetInBound")
        );
    }

    #[test]
    fn port_specs() {
        for ok in ["*", "0", "22", "65535", "1000-2000", "22-22", "0-65535"] {
            assert!(valid_port_spec(ok), "{ok}");
        }
        for bad in [
            "", "-", "65536", "22-21", "1,2", "a", " 22", "22-", "-22", "1-2-3", "+1",
        ] {
            assert!(!valid_port_spec(bad), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        for (value, want) in [
            ("*", "any"),
            ("10.0.0.0/8", "v4"),
            ("10.0.0.4", "v4"),
            ("10.0.0.4/32", "v4"),
            ("2001:db8::/32", "v6"),
            ("2001:db8::1", "v6"),
            ("Internet", "tag"),
            ("Storage.WestEurope", "tag"),
        ] {
            let got = match classify_address(value) {
                Some(Address::Any) => "any",
                Some(Address::V4) => "v4",
                Some(Address::V6) => "v6",
                Some(Address::Tag) => "tag",
                None => "invalid",
            };
            assert_eq!(got, want, "{value}");
        }
        for bad in [
            "10.0.0.5/24",
            "10.0.0.0/33",
            "10.0.0/8",
            "300.1.1.1",
            "1.2.3.4-1.2.3.9",
            "",
            "Tag!",
            "10.0.0.0/",
            "2001:db8::1/32",
        ] {
            assert!(classify_address(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn rule_names() {
        for ok in ["a", "jitvm-22-x", "A_b.c-d_", "9"] {
            assert!(check_rule_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(81);
        for bad in [
            "",
            "-a",
            "_a",
            ".a",
            "a-",
            "a.",
            "a b",
            "a/b",
            long.as_str(),
        ] {
            assert!(check_rule_name(bad).is_err(), "{bad}");
        }
        assert!(check_rule_name(&"a".repeat(80)).is_ok());
    }

    #[test]
    fn routes_match_without_case() {
        assert!(matches!(
            parse_route(
                "/SUBSCRIPTIONS/s/resourcegroups/rg/PROVIDERS/microsoft.network/NetworkSecurityGroups/n/SECURITYRULES/r"
            ),
            Route::Rule { .. }
        ));
        assert!(matches!(
            parse_route("/t/OAuth2/V2.0/Token"),
            Route::Token { .. }
        ));
        assert!(matches!(
            parse_route("/subscriptions/s/providers/Microsoft.Foo/bars"),
            Route::Unknown
        ));
    }
}

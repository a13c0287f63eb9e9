//! `template.yaml`, the SAM application: every crate under `functions/` is a
//! function of the template and back; every IAM statement obeys the
//! least-privilege rules; each function may do exactly what its code calls;
//! the tables, the queue and the routes match what the code expects; and
//! `cfn-lint`, `sam validate --lint` and `sam validate` pass.
//!
//! The template is read by the pinned SAM translator from `.venv` (the code
//! `sam deploy` runs), both as written and transformed, so the IAM checks see
//! what would be deployed, including anything SAM generates. Nothing here
//! needs the network or an AWS account. Without `.venv` every test fails
//! with a message naming `bash infra/setup.sh`; none is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use jitvm_core::aws::dynamo::{
    REQUEST_INDEXES, REQUESTS_BY_DAY, REQUESTS_BY_REQUESTOR, REQUESTS_BY_VM, REQUESTS_PENDING,
    REQUESTS_RANGE_KEY,
};
use jitvm_core::aws::ec2::TAG_PLACEHOLDER;
use jitvm_core::aws::sqs::MAX_RECEIVE_COUNT;
use jitvm_core::domain::rule::{TAG_EXPIRES, TAG_MANAGED, TAG_REQUEST, TAG_REQUESTER, TAG_VM};
use jitvm_tests::root;
use jitvm_tests::template::{resources, routes_of, run, templates, venv_tool};
use serde_json::{Value, json};

/// Actions that AWS cannot limit to resources, so `Resource: "*"` is the
/// narrowest there is for them.
const UNSCOPABLE: &[&str] = &[
    "ec2:DescribeInstances",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSecurityGroupRules",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
];

/// Statements allowed to write to security groups that are not jitvm's,
/// each with the condition (an opt-in parameter) it must sit under. README.md
/// ("What IAM cannot narrow") says why.
const DOCUMENTED_EXCEPTIONS: &[(&str, &str)] =
    &[("CloseAndRestoreStandingRules", "CloseStandingAccess")];

/// Actions the platform calls with a function's role rather than the
/// function's own code: logs, traces, and the SQS event source mapping.
const PLATFORM: &[&str] = &[
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    // The DynamoDB stream's event source mapping reads with the role.
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
];

/// Routes whose function verifies its caller itself (Slack's signed
/// requests) and so go without API Gateway authorization, on the IAM API
/// only, to the request function.
const SELF_VERIFYING_ROUTES: &[&str] = &[
    "POST /v1/chatops/slack",
    "POST /v1/chatops/slack/interactive",
];

/// The web console's page and assets: public, on the single-sign-on API
/// only, and only when the console is configured.
const CONSOLE_ROUTES: &[&str] = &["GET /", "GET /console/{file}"];

/// Environment variables the template sets that the code does not read yet.
const PENDING_VARIABLES: &[&str] = &[];

/// What each function (by its directory under `functions/`) may call, and
/// must be allowed to: the union of what its handler's ports call in
/// `shared/src/aws` (and `shared/src/azure` through the policy store), plus
/// what the platform calls for it.
fn allowed_actions(function: &str) -> BTreeSet<&'static str> {
    let common = [
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        // Every function reads the Azure client secret at start-up.
        "secretsmanager:GetSecretValue",
    ];
    let own: &[&str] = match function {
        // Policies: read, write, delete, list; requests: mark closed, list
        // a VM's recent ones. EC2: classify, enable (create, tag at
        // creation, attach the group), disable (revoke, detach, delete, and
        // the placeholder group for an interface left with none), close and
        // restore standing rules.
        "policy" => &[
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
            "dynamodb:Scan",
            "dynamodb:Query",
            "ec2:DescribeInstances",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSecurityGroupRules",
            "ec2:CreateSecurityGroup",
            "ec2:CreateTags",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:DeleteSecurityGroup",
        ],
        // Records, the queue, and an early revoke of a request's rules (an
        // expiry timer takes over one the cloud would not remove); the
        // policies listed to find a VM a Slack command names by short name.
        "request" => &[
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:Scan",
            "sqs:SendMessage",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSecurityGroupRules",
            "ec2:RevokeSecurityGroupIngress",
        ],
        // The queue (through the event source mapping), the policy and the
        // record, one tagged AuthorizeSecurityGroupIngress per grant, and
        // its expiry timer.
        "grant" => &[
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:SendMessage",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSecurityGroupRules",
            "ec2:DescribeNetworkInterfaces",
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:CreateTags",
            "ec2:RevokeSecurityGroupIngress",
        ],
        // The timers (through the event source mapping, and set again) and
        // the sweep: jitvm groups' rules, revoke, mark records; the policies
        // for the NSGs they name (Azure); the requests still pending, to deny
        // those that waited too long; the live requests, to bring them in
        // line with the cloud; a jitvm group copied to another interface
        // taken off it (with the placeholder group, made on first need).
        "expire" => &[
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:SendMessage",
            "dynamodb:Scan",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSecurityGroupRules",
            "ec2:DescribeNetworkInterfaces",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:CreateSecurityGroup",
            "ec2:CreateTags",
            "ec2:RevokeSecurityGroupEgress",
        ],
        // The requests table's stream and the notify queue (through the
        // event source mappings), retries and reminders queued again and
        // failed stream batches sent on; a record for a reminder and a
        // policy for its channels; the audit events on the bus.
        "notify" => &[
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
            "dynamodb:GetItem",
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:SendMessage",
            "events:PutEvents",
        ],
        other => panic!(
            "functions/{other} has no allow-list in tests/tests/template.rs: add one naming exactly the AWS actions its code calls"
        ),
    };
    common.into_iter().chain(own.iter().copied()).collect()
}

/// The indexes of the requests table each function lists requests by, and
/// so may (and must be allowed to) `dynamodb:Query`: the request function
/// lists by VM (also for `/jit pending`), by requestor and by day; the
/// policy function a VM's recent requests, and the grant function too (to
/// find the grant a newer request replaces); the sweep the pending ones.
fn allowed_indexes(function: &str) -> BTreeSet<&'static str> {
    match function {
        "policy" | "grant" => BTreeSet::from([REQUESTS_BY_VM]),
        "request" => BTreeSet::from([REQUESTS_BY_VM, REQUESTS_BY_REQUESTOR, REQUESTS_BY_DAY]),
        "expire" => BTreeSet::from([REQUESTS_PENDING, REQUESTS_BY_DAY]),
        _ => BTreeSet::new(),
    }
}

// ------------------------------------------------------------------- tests

#[test]
fn every_function_crate_is_a_template_function_and_back() {
    let crates = function_crates();
    assert!(!crates.is_empty(), "no crates under functions/");
    let functions = template_functions();
    let crate_dirs: BTreeSet<&str> = crates.iter().map(|c| c.dir.as_str()).collect();
    let template_dirs: BTreeSet<&str> = functions.values().map(|f| f.dir.as_str()).collect();
    assert_eq!(
        crate_dirs, template_dirs,
        "the crates under functions/ and the template's functions (by CodeUri functions/<name>) differ"
    );
    assert_eq!(
        functions.len(),
        crates.len(),
        "two template functions share a crate"
    );
    let source = resources(&templates().source);
    for (id, function) in &functions {
        let krate = crates
            .iter()
            .find(|c| c.dir == function.dir)
            .expect("matched above");
        let [bin] = krate.bins.as_slice() else {
            panic!(
                "functions/{} ({}) must have exactly one [[bin]], the Lambda bootstrap; it has {:?}",
                krate.dir, krate.package, krate.bins
            );
        };
        let metadata = &source[id.as_str()]["Metadata"];
        assert_eq!(
            metadata["BuildMethod"], "rust-cargolambda",
            "{id}: Metadata.BuildMethod"
        );
        assert_eq!(
            metadata["BuildProperties"]["Binary"],
            json!(bin),
            "{id}: Metadata.BuildProperties.Binary must name the bin of {}",
            krate.package
        );
        let props = &function.lambda["Properties"];
        assert_eq!(props["Runtime"], "provided.al2023", "{id}: Runtime");
        assert_eq!(props["Handler"], "bootstrap", "{id}: Handler");
        assert_eq!(
            props["Architectures"],
            json!(["arm64"]),
            "{id}: Architectures"
        );
        let memory = props["MemorySize"].as_u64().unwrap_or(0);
        assert!(
            (1..=128).contains(&memory),
            "{id}: MemorySize {memory}: the functions must fit 128 MB"
        );
        let timeout = props["Timeout"].as_u64().unwrap_or(0);
        assert!((1..=900).contains(&timeout), "{id}: Timeout {timeout} s");
        assert_eq!(
            props["LoggingConfig"]["LogFormat"], "JSON",
            "{id}: JSON logs"
        );
    }
}

#[test]
fn functions_read_the_variables_the_code_reads() {
    let known = variables_in_code();
    let every_function = [
        "JITVM_POLICIES_TABLE",
        "JITVM_REQUESTS_TABLE",
        "JITVM_REQUEST_QUEUE",
        "JITVM_REQUEST_QUEUE_URL",
        "JITVM_ADMINS",
        "JITVM_REGIONS",
        "JITVM_MAX_GROUPS_PER_INTERFACE",
        "JITVM_AZURE_TENANT_ID",
        "JITVM_AZURE_CLIENT_ID",
        "JITVM_AZURE_CLIENT_SECRET_ARN",
        "JITVM_AZURE_SUBSCRIPTIONS",
        "JITVM_AZURE_ALLOW_PRIORITIES",
        "JITVM_AZURE_DENY_PRIORITIES",
    ];
    for (id, function) in template_functions() {
        let variables = function.lambda["Properties"]["Environment"]["Variables"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for name in variables.keys().filter(|n| n.starts_with("JITVM_")) {
            assert!(
                known.contains(name) || PENDING_VARIABLES.contains(&name.as_str()),
                "{id} sets {name}, which neither the functions nor the local host read (shared/src/config.rs)"
            );
        }
        for name in every_function {
            assert!(variables.contains_key(name), "{id} does not set {name}");
        }
        assert!(
            !variables.contains_key("JITVM_AZURE_CLIENT_SECRET"),
            "{id}: the Azure client secret goes through Secrets Manager (JITVM_AZURE_CLIENT_SECRET_ARN), never into the function's configuration"
        );
        assert_eq!(
            variables["JITVM_REQUEST_QUEUE"],
            json!({"Fn::GetAtt": ["RequestQueue", "QueueName"]}),
            "{id}: JITVM_REQUEST_QUEUE is the FIFO queue's name"
        );
        assert_eq!(
            variables["JITVM_REQUEST_QUEUE_URL"],
            json!({"Ref": "RequestQueue"}),
            "{id}: JITVM_REQUEST_QUEUE_URL"
        );
        assert_eq!(
            variables["JITVM_EXPIRY_QUEUE"],
            json!({"Fn::GetAtt": ["ExpiryQueue", "QueueName"]}),
            "{id}: JITVM_EXPIRY_QUEUE is the expiry queue's name"
        );
        assert_eq!(
            variables["JITVM_EXPIRY_QUEUE_URL"],
            json!({"Ref": "ExpiryQueue"}),
            "{id}: JITVM_EXPIRY_QUEUE_URL"
        );
    }
}

#[test]
fn each_function_has_a_role_of_its_own_and_no_managed_policy() {
    let transformed = resources(&templates().transformed);
    let mut seen = BTreeSet::new();
    for (id, function) in template_functions() {
        assert!(
            seen.insert(function.role.clone()),
            "{id} shares role {} with another function",
            function.role
        );
        let role = &transformed[function.role.as_str()];
        assert_eq!(
            role["Properties"]["AssumeRolePolicyDocument"]["Statement"],
            json!([{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]),
            "{}: only Lambda may assume it",
            function.role
        );
        assert!(
            role["Properties"].get("ManagedPolicyArns").is_none(),
            "{}: a managed policy grants more than the function calls",
            function.role
        );
    }
    for (id, resource) in transformed {
        let kind = resource["Type"].as_str().unwrap_or_default();
        assert!(
            !matches!(
                kind,
                "AWS::IAM::Policy"
                    | "AWS::IAM::ManagedPolicy"
                    | "AWS::IAM::User"
                    | "AWS::IAM::Group"
            ),
            "{id} ({kind}): permissions belong in the function roles"
        );
        if kind == "AWS::IAM::Role" {
            assert!(
                seen.contains(id),
                "{id}: a role no function uses (SAM generates one when a function has no Role:)"
            );
        }
    }
}

#[test]
fn no_statement_allows_every_action_or_every_resource() {
    let statements = all_statements();
    assert!(!statements.is_empty(), "no IAM statements found");
    for s in &statements {
        assert!(
            s.body.get("NotAction").is_none() && s.body.get("NotResource").is_none(),
            "{}: NotAction/NotResource allow everything else",
            s.name
        );
        for action in &s.actions {
            assert!(
                !action.contains('*') && action.contains(':'),
                "{}: action {action:?} is a wildcard",
                s.name
            );
        }
        if s.resources.iter().any(|r| r == "*") {
            for action in &s.actions {
                assert!(
                    UNSCOPABLE.contains(&action.as_str()),
                    "{}: {action} on Resource \"*\", though it can be limited to resources",
                    s.name
                );
            }
        }
        for r in &s.resources {
            assert!(
                r == "*" || !r.contains(":*:*:") && !r.ends_with(":*"),
                "{}: resource {r:?} is every resource of its service",
                s.name
            );
        }
    }
}

#[test]
fn security_group_writes_are_limited_to_jitvm_groups() {
    let managed = [
        format!("aws:ResourceTag/{TAG_MANAGED}"),
        format!("ec2:ResourceTag/{TAG_MANAGED}"),
    ];
    let request_managed = format!("aws:RequestTag/{TAG_MANAGED}");
    // The placeholder group (no rules; stands in for a jitvm group taken
    // off an interface that had no other) is the one other group jitvm
    // makes and writes to, by its own tag.
    let request_placeholder = format!("aws:RequestTag/{TAG_PLACEHOLDER}");
    let resource_placeholder = format!("aws:ResourceTag/{TAG_PLACEHOLDER}");
    let mut seen = BTreeSet::new();
    for s in all_statements() {
        let ec2_writes: Vec<&String> = s
            .actions
            .iter()
            .filter(|a| a.starts_with("ec2:") && !a.starts_with("ec2:Describe"))
            .collect();
        if ec2_writes.is_empty() {
            continue;
        }
        assert!(
            s.string_equals("aws:RequestedRegion").is_some(),
            "{}: EC2 writes must be limited to the swept regions (aws:RequestedRegion)",
            s.name
        );
        assert!(
            !s.resources.iter().any(|r| r == "*"),
            "{}: EC2 writes on Resource \"*\"",
            s.name
        );
        let groups = s.resources.iter().any(|r| r.contains(":security-group/"));
        let rules = s
            .resources
            .iter()
            .any(|r| r.contains(":security-group-rule/"));
        let tagged = managed
            .iter()
            .any(|k| s.string_equals(k) == Some(json!("true")));
        let new_placeholder = s.string_equals(&request_placeholder) == Some(json!("true"));
        let placeholder = s.string_equals(&resource_placeholder) == Some(json!("true"));
        for action in ec2_writes {
            seen.insert(action.clone());
            match action.as_str() {
                // Only the placeholder is emptied, and of every rule.
                "ec2:RevokeSecurityGroupEgress" => assert!(
                    groups && !rules && placeholder && !tagged,
                    "{}: RevokeSecurityGroupEgress only on groups tagged {TAG_PLACEHOLDER}=true",
                    s.name
                ),
                "ec2:RevokeSecurityGroupIngress" if placeholder => assert!(
                    groups && !rules,
                    "{}: the placeholder's rules are on security groups",
                    s.name
                ),
                "ec2:AuthorizeSecurityGroupIngress" | "ec2:RevokeSecurityGroupIngress" => {
                    if groups && !tagged {
                        let exception = DOCUMENTED_EXCEPTIONS
                            .iter()
                            .find(|(sid, _)| s.sid.as_deref() == Some(*sid));
                        let Some((sid, condition)) = exception else {
                            panic!(
                                "{}: {action} on security groups without the {TAG_MANAGED}=true resource-tag condition",
                                s.name
                            );
                        };
                        assert!(
                            s.conditions.iter().any(|c| c.as_str() == *condition),
                            "{}: {sid} must only exist under the opt-in condition {condition}",
                            s.name
                        );
                    }
                    if rules {
                        assert_eq!(
                            action, "ec2:AuthorizeSecurityGroupIngress",
                            "{}: {action} on security group rules",
                            s.name
                        );
                        // The rule is a resource the call creates: it must
                        // carry a grant's tags, and only those. The group it
                        // goes on is checked by the statement above.
                        assert_eq!(
                            s.condition("Null", &format!("aws:RequestTag/{TAG_REQUEST}")),
                            Some(json!("false")),
                            "{}: a new rule must be tagged {TAG_REQUEST}",
                            s.name
                        );
                        assert_eq!(
                            s.condition("ForAllValues:StringEquals", "aws:TagKeys"),
                            Some(json!([TAG_REQUEST, TAG_EXPIRES, TAG_REQUESTER])),
                            "{}: a new rule carries the grant's tags only",
                            s.name
                        );
                    }
                }
                "ec2:CreateTags" => {
                    let expected = match (groups, rules) {
                        (true, false) => "CreateSecurityGroup",
                        (false, true) => "AuthorizeSecurityGroupIngress",
                        _ => panic!(
                            "{}: CreateTags must name either security groups or security group rules",
                            s.name
                        ),
                    };
                    assert_eq!(
                        s.string_equals("ec2:CreateAction"),
                        Some(json!(expected)),
                        "{}: CreateTags only while {expected} creates the resource",
                        s.name
                    );
                    if groups {
                        assert!(
                            s.string_equals(&request_managed) == Some(json!("true"))
                                || new_placeholder,
                            "{}: a new group is tagged {TAG_MANAGED}=true or {TAG_PLACEHOLDER}=true",
                            s.name
                        );
                    }
                }
                "ec2:CreateSecurityGroup" if groups && new_placeholder => {
                    assert_eq!(
                        s.condition("ForAllValues:StringEquals", "aws:TagKeys"),
                        Some(json!([TAG_PLACEHOLDER, "Name"])),
                        "{}: a placeholder group carries its own tag only",
                        s.name
                    );
                }
                "ec2:CreateSecurityGroup" => {
                    if groups {
                        assert_eq!(
                            s.string_equals(&request_managed),
                            Some(json!("true")),
                            "{}: CreateSecurityGroup only with the {TAG_MANAGED}=true request tag",
                            s.name
                        );
                        assert_eq!(
                            s.condition("ForAllValues:StringEquals", "aws:TagKeys"),
                            Some(json!([TAG_MANAGED, TAG_VM, "Name"])),
                            "{}: a new group carries jitvm's tags only",
                            s.name
                        );
                    } else {
                        // The VPC the group goes into is the other resource
                        // of the call; it exists already, so has no request tag.
                        assert!(
                            s.resources.iter().all(|r| r.contains(":vpc/")),
                            "{}: CreateSecurityGroup without the request tag may name VPCs only",
                            s.name
                        );
                    }
                }
                "ec2:DeleteSecurityGroup" => assert!(
                    groups && !rules && tagged,
                    "{}: DeleteSecurityGroup only on groups tagged {TAG_MANAGED}=true",
                    s.name
                ),
                // Attaching a group rewrites the interface's whole list of
                // groups, the customer's included, so no tag can narrow it
                // (README.md, "What IAM cannot narrow").
                "ec2:ModifyNetworkInterfaceAttribute" => {
                    for r in &s.resources {
                        assert!(
                            [
                                ":network-interface/",
                                ":security-group/",
                                ":instance/",
                                ":subnet/"
                            ]
                            .iter()
                            .any(|kind| r.contains(kind)),
                            "{}: ModifyNetworkInterfaceAttribute on {r}",
                            s.name
                        );
                    }
                }
                other => panic!(
                    "{}: {other} is not an EC2 write jitvm makes; add its rule here",
                    s.name
                ),
            }
        }
    }
    for action in [
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupEgress",
        "ec2:CreateTags",
        "ec2:CreateSecurityGroup",
    ] {
        assert!(seen.contains(action), "no statement grants {action}");
    }
}

#[test]
fn each_function_may_do_exactly_what_its_code_calls() {
    let code = source_text(&root().join("shared/src"));
    let transformed = resources(&templates().transformed);
    for (id, function) in template_functions() {
        let allowed = allowed_actions(&function.dir);
        for action in &allowed {
            if PLATFORM.contains(action) {
                continue;
            }
            let call = format!(
                ".{}(",
                snake_case(action.split(':').nth(1).unwrap_or_default())
            );
            assert!(
                code.contains(&call),
                "{action} is allowed to {id}, but nothing in shared/src calls `{call}`: drop it from allowed_actions"
            );
        }
        let statements: Vec<Statement> =
            statements_of(&function.role, &transformed[function.role.as_str()]);
        let granted: BTreeSet<&str> = statements
            .iter()
            .flat_map(|s| s.actions.iter().map(String::as_str))
            .collect();
        let extra: Vec<&&str> = granted.difference(&allowed).collect();
        assert!(
            extra.is_empty(),
            "{id} (functions/{}) may call {extra:?}, which its code does not",
            function.dir
        );
        let missing: Vec<&&str> = allowed.difference(&granted).collect();
        assert!(
            missing.is_empty(),
            "{id} (functions/{}) calls {missing:?}, which its role does not allow",
            function.dir
        );
        for s in &statements {
            check_resources(&id, &function, s);
        }
        let queried: BTreeSet<String> = statements
            .iter()
            .filter(|s| s.actions.iter().any(|a| a == "dynamodb:Query"))
            .flat_map(|s| s.resources.iter().cloned())
            .collect();
        let expected: BTreeSet<String> = allowed_indexes(&function.dir)
            .into_iter()
            .map(|index| format!("${{RequestsTable.Arn}}/index/{index}"))
            .collect();
        assert_eq!(
            queried, expected,
            "{id} (functions/{}): the indexes it may query",
            function.dir
        );
    }
}

#[test]
fn tables_match_the_local_schema_and_are_kept() {
    let source = resources(&templates().source);
    let expected = [
        (
            "PoliciesTable",
            json!([{"AttributeName": "vm", "AttributeType": "S"}]),
            json!([{"AttributeName": "vm", "KeyType": "HASH"}]),
        ),
        (
            "RequestsTable",
            json!([{"AttributeName": "id", "AttributeType": "S"},
                   {"AttributeName": "vm", "AttributeType": "S"},
                   {"AttributeName": "createdAt", "AttributeType": "S"},
                   {"AttributeName": "requestor", "AttributeType": "S"},
                   {"AttributeName": "day", "AttributeType": "S"},
                   {"AttributeName": "pending", "AttributeType": "S"}]),
            json!([{"AttributeName": "id", "KeyType": "HASH"}]),
        ),
    ];
    for (id, attributes, key) in expected {
        let table = &source[id];
        assert_eq!(table["Type"], "AWS::DynamoDB::Table", "{id}");
        assert_eq!(table["DeletionPolicy"], "Retain", "{id}: DeletionPolicy");
        assert_eq!(
            table["UpdateReplacePolicy"], "Retain",
            "{id}: UpdateReplacePolicy"
        );
        let p = &table["Properties"];
        assert_eq!(p["BillingMode"], "PAY_PER_REQUEST", "{id}: on-demand");
        assert_eq!(p["AttributeDefinitions"], attributes, "{id}: attributes");
        assert_eq!(p["KeySchema"], key, "{id}: key");
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
            "{id}: point-in-time recovery"
        );
        assert_eq!(
            p["SSESpecification"]["SSEEnabled"], true,
            "{id}: encryption"
        );
        assert_eq!(
            p["DeletionProtectionEnabled"],
            json!({"Fn::If": ["ProtectTables", true, false]}),
            "{id}: deletion protection by parameter"
        );
    }
    let indexes: Vec<Value> = REQUEST_INDEXES
        .iter()
        .map(|(name, hash)| {
            json!({"IndexName": name,
                   "KeySchema": [{"AttributeName": hash, "KeyType": "HASH"},
                                 {"AttributeName": REQUESTS_RANGE_KEY, "KeyType": "RANGE"}],
                   "Projection": {"ProjectionType": "ALL"}})
        })
        .collect();
    assert_eq!(
        source["RequestsTable"]["Properties"]["GlobalSecondaryIndexes"],
        Value::Array(indexes),
        "RequestsTable: the indexes shared/src/aws/dynamo.rs makes and queries"
    );
    // Every key attribute of the table and its indexes is defined, and no
    // other (CloudFormation refuses both).
    let defined: BTreeSet<&str> = source["RequestsTable"]["Properties"]["AttributeDefinitions"]
        .as_array()
        .expect("attribute definitions")
        .iter()
        .filter_map(|a| a["AttributeName"].as_str())
        .collect();
    let keys: BTreeSet<&str> = REQUEST_INDEXES
        .iter()
        .map(|(_, hash)| *hash)
        .chain(["id", REQUESTS_RANGE_KEY])
        .collect();
    assert_eq!(defined, keys, "RequestsTable: attribute definitions");
}

/// The event source mapping reading `queue`.
fn mapping_of<'a>(transformed: &'a serde_json::Map<String, Value>, queue: &str) -> &'a Value {
    transformed
        .values()
        .find(|r| {
            r["Type"] == "AWS::Lambda::EventSourceMapping"
                && r["Properties"]["EventSourceArn"] == json!({"Fn::GetAtt": [queue, "Arn"]})
        })
        .unwrap_or_else(|| panic!("no event source mapping reads {queue}"))
}

#[test]
fn each_grant_timer_waits_on_a_standard_queue_read_by_the_expire_function() {
    let transformed = resources(&templates().transformed);
    let queue = &transformed["ExpiryQueue"]["Properties"];
    assert!(
        queue.get("FifoQueue").is_none(),
        "a standard queue: FIFO queues refuse per-message delays"
    );
    assert_eq!(queue["SqsManagedSseEnabled"], true, "encrypted at rest");
    assert_eq!(
        queue["RedrivePolicy"],
        json!({"deadLetterTargetArn": {"Fn::GetAtt": ["ExpiryDeadLetterQueue", "Arn"]},
               "maxReceiveCount": jitvm_core::aws::sqs::TIMER_MAX_RECEIVE_COUNT}),
        "the redrive policy of shared/src/aws/sqs.rs"
    );
    let functions = template_functions();
    let expire = functions
        .values()
        .find(|f| f.dir == "expire")
        .expect("an expire function");
    let timeout = expire.lambda["Properties"]["Timeout"].as_u64().unwrap_or(0);
    let visibility = queue["VisibilityTimeout"].as_u64().unwrap_or(0);
    assert!(
        visibility >= 6 * timeout,
        "visibility timeout {visibility} s is under six times the expire function's {timeout} s"
    );
    let p = &mapping_of(transformed, "ExpiryQueue")["Properties"];
    assert_eq!(p["FunctionName"], json!({"Ref": expire.id}));
    assert_eq!(
        p["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"]),
        "a timer that cannot be set again is delivered again, alone"
    );
    assert_eq!(
        p["MaximumBatchingWindowInSeconds"], 0,
        "a timer going off is not held back to fill a batch"
    );
}

#[test]
fn every_write_to_a_request_reaches_the_notify_function_and_its_retries_wait_on_a_standard_queue() {
    let transformed = resources(&templates().transformed);
    assert_eq!(
        transformed["RequestsTable"]["Properties"]["StreamSpecification"],
        json!({"StreamViewType": "NEW_AND_OLD_IMAGES"}),
        "the notify function compares each record before and after a write"
    );
    let functions = template_functions();
    let notify = functions
        .values()
        .find(|f| f.dir == "notify")
        .expect("a notify function");
    let stream = transformed
        .values()
        .find(|r| {
            r["Type"] == "AWS::Lambda::EventSourceMapping"
                && r["Properties"]["EventSourceArn"]
                    == json!({"Fn::GetAtt": ["RequestsTable", "StreamArn"]})
        })
        .expect("an event source mapping reads the requests table's stream");
    let p = &stream["Properties"];
    assert_eq!(p["FunctionName"], json!({"Ref": notify.id}));
    assert_eq!(
        p["BisectBatchOnFunctionError"], true,
        "a failing write is found alone"
    );
    assert_eq!(
        p["DestinationConfig"]["OnFailure"]["Destination"],
        json!({"Fn::GetAtt": ["NotifyDeadLetterQueue", "Arn"]}),
        "a batch that keeps failing is kept, not dropped"
    );
    assert!(p["MaximumRetryAttempts"].as_u64().is_some_and(|n| n > 0));

    let queue = &transformed["NotifyQueue"]["Properties"];
    assert!(
        queue.get("FifoQueue").is_none(),
        "retries and reminders carry their own delays"
    );
    assert_eq!(queue["SqsManagedSseEnabled"], true, "encrypted at rest");
    assert_eq!(
        queue["RedrivePolicy"]["deadLetterTargetArn"],
        json!({"Fn::GetAtt": ["NotifyDeadLetterQueue", "Arn"]})
    );
    let timeout = notify.lambda["Properties"]["Timeout"].as_u64().unwrap_or(0);
    let visibility = queue["VisibilityTimeout"].as_u64().unwrap_or(0);
    assert!(
        visibility >= 6 * timeout,
        "visibility timeout {visibility} s is under six times the notify function's {timeout} s"
    );
    let p = &mapping_of(transformed, "NotifyQueue")["Properties"];
    assert_eq!(p["FunctionName"], json!({"Ref": notify.id}));
    assert_eq!(
        p["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );

    let variables = &notify.lambda["Properties"]["Environment"]["Variables"];
    assert_eq!(variables["JITVM_EVENT_BUS"], json!({"Ref": "EventBusName"}));
    assert_eq!(
        variables["JITVM_NOTIFY_QUEUE_URL"],
        json!({"Ref": "NotifyQueue"})
    );
    let source = &templates().source;
    assert_eq!(source["Parameters"]["EventBusName"]["Default"], "default");
    for (id, function) in &functions {
        let variables = function.lambda["Properties"]["Environment"]["Variables"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if function.dir != "notify" {
            assert!(
                !variables.contains_key("JITVM_SLACK_BOT_TOKEN_ARN"),
                "{id}: only the notify function has the bot token"
            );
        }
    }
}

#[test]
fn requests_flow_through_a_fifo_queue_with_a_dead_letter_queue() {
    let transformed = resources(&templates().transformed);
    let queue = &transformed["RequestQueue"]["Properties"];
    assert_eq!(queue["FifoQueue"], true, "FIFO: one message group per VM");
    assert_eq!(
        queue["ContentBasedDeduplication"], false,
        "the request id is the deduplication id"
    );
    assert_eq!(queue["SqsManagedSseEnabled"], true, "encrypted at rest");
    assert_eq!(
        queue["RedrivePolicy"],
        json!({"deadLetterTargetArn": {"Fn::GetAtt": ["RequestDeadLetterQueue", "Arn"]},
               "maxReceiveCount": MAX_RECEIVE_COUNT}),
        "the redrive policy of shared/src/aws/sqs.rs"
    );
    let dead = &transformed["RequestDeadLetterQueue"]["Properties"];
    assert_eq!(
        dead["FifoQueue"], true,
        "a FIFO queue's dead-letter queue is FIFO"
    );
    assert_eq!(dead["SqsManagedSseEnabled"], true, "encrypted at rest");

    let functions = template_functions();
    let grant = functions
        .values()
        .find(|f| f.dir == "grant")
        .expect("a grant function");
    let grant_timeout = grant.lambda["Properties"]["Timeout"].as_u64().unwrap_or(0);
    let visibility = queue["VisibilityTimeout"].as_u64().unwrap_or(0);
    assert!(
        visibility >= 6 * grant_timeout,
        "visibility timeout {visibility} s is under six times the grant function's {grant_timeout} s"
    );
    let p = &mapping_of(transformed, "RequestQueue")["Properties"];
    assert_eq!(p["FunctionName"], json!({"Ref": grant.id}));
    assert_eq!(
        p["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"]),
        "partial batch failures"
    );

    let expire = functions
        .values()
        .find(|f| f.dir == "expire")
        .expect("an expire function");
    let rule = transformed
        .values()
        .find(|r| r["Type"] == "AWS::Events::Rule")
        .expect("the sweep's schedule");
    assert_eq!(rule["Properties"]["ScheduleExpression"], "rate(1 minute)");
    assert_eq!(
        rule["Properties"]["Targets"][0]["Arn"],
        json!({"Fn::GetAtt": [expire.id, "Arn"]})
    );
}

#[test]
fn routes_need_api_gateway_authorization() {
    let policy = [
        "PUT /v1/policies/{vm+}",
        "GET /v1/policies/{vm+}",
        "DELETE /v1/policies/{vm+}",
        "GET /v1/vms",
    ];
    let request = [
        "POST /v1/requests",
        "GET /v1/requests",
        "GET /v1/requests/{id}",
        "POST /v1/requests/{id}/approve",
        "POST /v1/requests/{id}/deny",
        "POST /v1/requests/{id}/revoke",
        "GET /v1/audit.csv",
        "GET /v1/whoami",
    ];
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for (routes, dir) in [(&policy[..], "policy"), (&request[..], "request")] {
        let function = template_functions()
            .into_values()
            .find(|f| f.dir == dir)
            .expect("the function");
        for route in routes {
            expected.insert((*route).to_owned(), function.id.clone());
        }
    }
    let transformed = resources(&templates().transformed);
    let apis: Vec<(&String, &Value)> = transformed
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::ApiGatewayV2::Api")
        .collect();
    for (id, authorizer) in [("Api", "AWS_IAM"), ("SsoApi", "Sso")] {
        assert!(
            apis.iter().any(|(api, _)| api.as_str() == id),
            "no HTTP API {id}"
        );
        let api = &transformed[id];
        let (open, routes): (Vec<_>, Vec<_>) = routes_of(&api["Properties"]["Body"])
            .into_iter()
            .partition(|r| {
                SELF_VERIFYING_ROUTES.contains(&r.key.as_str())
                    || CONSOLE_ROUTES.contains(&r.key.as_str())
            });
        let found: BTreeMap<String, String> = routes
            .iter()
            .map(|r| (r.key.clone(), r.function.clone()))
            .collect();
        assert_eq!(found, expected, "{id}: routes and their functions");
        // Slack reaches the IAM API's two Slack routes, unauthenticated,
        // and nothing else; single sign-on has no reason to carry them. A
        // browser cannot sign with SigV4, so the console is on the
        // single-sign-on API only.
        let request_function = &expected["POST /v1/requests"];
        let slack: BTreeMap<String, String> = open
            .iter()
            .map(|r| (r.key.clone(), r.function.clone()))
            .collect();
        let public = if id == "Api" {
            SELF_VERIFYING_ROUTES
        } else {
            CONSOLE_ROUTES
        };
        let want: BTreeMap<String, String> = public
            .iter()
            .map(|k| ((*k).to_owned(), request_function.clone()))
            .collect();
        assert_eq!(slack, want, "{id}: the routes without authorization");
        // The console exists only when it is configured.
        for r in open
            .iter()
            .filter(|r| CONSOLE_ROUTES.contains(&r.key.as_str()))
        {
            assert_eq!(
                r.condition.as_deref(),
                Some("UseConsole"),
                "{id}: {}",
                r.key
            );
        }
        for r in &open {
            // SAM writes `Authorizer: NONE` as the security requirement
            // `NONE`, which API Gateway reads as no authorization.
            assert_eq!(
                r.security,
                json!([{"NONE": []}]),
                "{id}: {} is authenticated by Slack's signature, not by API Gateway",
                r.key
            );
        }
        for r in &routes {
            assert_eq!(
                r.security,
                json!([{authorizer: []}]),
                "{id}: {} must use {authorizer}",
                r.key
            );
            assert_eq!(r.payload_format, "2.0", "{id}: {}: payload format", r.key);
        }
    }
    // Whatever API exists, only a self-verifying route goes without auth.
    for (id, api) in apis {
        for r in routes_of(&api["Properties"]["Body"]) {
            let open = r.security.as_array().is_none_or(|s| s.is_empty())
                || r.security == json!([{"NONE": []}]);
            let public = SELF_VERIFYING_ROUTES.contains(&r.key.as_str())
                || (id == "SsoApi" && CONSOLE_ROUTES.contains(&r.key.as_str()));
            assert!(!open || public, "{id}: {} has no authorization", r.key);
        }
    }
    assert_eq!(
        transformed["SsoApi"]["Condition"], "UseJwt",
        "the single-sign-on API exists only with a JWT issuer"
    );
}

#[test]
fn cfn_lint_finds_nothing() {
    let out = run(Command::new(venv_tool("cfn-lint")).arg("template.yaml"));
    assert_clean("cfn-lint template.yaml", &out);
}

#[test]
fn sam_validate_lint_passes() {
    let out = run(Command::new(venv_tool("sam")).args(["validate", "--lint"]));
    assert_clean("sam validate --lint", &out);
}

#[test]
fn sam_validate_passes() {
    let out = run(Command::new(venv_tool("sam")).args(["validate", "--region", "us-east-1"]));
    assert_clean("sam validate --region us-east-1", &out);
}

// ----------------------------------------------------------------- helpers

fn assert_clean(what: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{what}` failed ({}):\n{stdout}{stderr}",
        out.status
    );
    if what.starts_with("cfn-lint") {
        assert!(
            stdout.trim().is_empty(),
            "`{what}` reported:\n{stdout}{stderr}"
        );
    }
}

/// A crate under `functions/`.
struct Crate {
    dir: String,
    package: String,
    bins: Vec<String>,
}

fn function_crates() -> Vec<Crate> {
    let dir = root().join("functions");
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("functions/ is readable") {
        let path = entry.expect("a directory entry").path();
        let manifest = path.join("Cargo.toml");
        if !manifest.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest).expect("Cargo.toml is readable");
        let (package, bins) = names_in_manifest(&text);
        crates.push(Crate {
            dir: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            package: package.unwrap_or_else(|| panic!("{} names no package", manifest.display())),
            bins,
        });
    }
    crates
}

/// The `[package]` name and the `[[bin]]` names of a manifest. The
/// workspace writes them as `name = "..."`, one per line.
fn names_in_manifest(text: &str) -> (Option<String>, Vec<String>) {
    let mut section = "";
    let mut package = None;
    let mut bins = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "name" {
            continue;
        }
        let value = value.trim().trim_matches('"').to_owned();
        match section {
            "[package]" => package = Some(value),
            "[[bin]]" => bins.push(value),
            _ => {}
        }
    }
    (package, bins)
}

/// A Lambda function of the template.
struct Function {
    /// Its logical id.
    id: String,
    /// Its crate's directory under `functions/`.
    dir: String,
    /// The logical id of its role.
    role: String,
    /// The log group it logs to (logical id).
    log_group: Option<String>,
    /// The transformed `AWS::Lambda::Function`.
    lambda: Value,
}

/// The template's functions by logical id.
fn template_functions() -> BTreeMap<String, Function> {
    let source = resources(&templates().source);
    let transformed = resources(&templates().transformed);
    let mut functions = BTreeMap::new();
    for (id, resource) in source {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let code = resource["Properties"]["CodeUri"]
            .as_str()
            .unwrap_or_default();
        let dir = code
            .trim_end_matches('/')
            .strip_prefix("functions/")
            .filter(|d| !d.is_empty() && !d.contains('/'))
            .unwrap_or_else(|| panic!("{id}: CodeUri {code:?} is not functions/<crate>"));
        let lambda = transformed[id.as_str()].clone();
        assert_eq!(lambda["Type"], "AWS::Lambda::Function", "{id}");
        let role = match &lambda["Properties"]["Role"] {
            Value::Object(o) => o
                .get("Fn::GetAtt")
                .and_then(|a| a[0].as_str())
                .map(str::to_owned),
            _ => None,
        }
        .unwrap_or_else(|| panic!("{id}: Role must be !GetAtt <a role of this template>.Arn"));
        assert_eq!(
            transformed[role.as_str()]["Type"],
            "AWS::IAM::Role",
            "{id}: its role {role}"
        );
        let log_group = lambda["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            .as_str()
            .map(str::to_owned);
        functions.insert(
            id.clone(),
            Function {
                id: id.clone(),
                dir: dir.to_owned(),
                role,
                log_group,
                lambda,
            },
        );
    }
    functions
}

/// One IAM statement as it would be deployed under some combination of
/// the template's conditions.
struct Statement {
    /// Where it is, for messages.
    name: String,
    sid: Option<String>,
    /// The template conditions it sits under (`!Name` when negated).
    conditions: Vec<String>,
    actions: Vec<String>,
    /// Each resource as text: ARN patterns as written in `Fn::Sub`,
    /// `GetAtt:<id>.<attribute>`, `Ref:<id>`.
    resources: Vec<String>,
    body: Value,
}

impl Statement {
    /// The value of `key` in the statement's condition block `operator`.
    fn condition(&self, operator: &str, key: &str) -> Option<Value> {
        self.body["Condition"][operator].get(key).cloned()
    }

    fn string_equals(&self, key: &str) -> Option<Value> {
        self.condition("StringEquals", key)
    }
}

/// Every statement of every policy document in the transformed template.
fn all_statements() -> Vec<Statement> {
    let mut out = Vec::new();
    for (id, resource) in resources(&templates().transformed) {
        out.extend(statements_of(id, resource));
    }
    out
}

/// The statements of the policy documents of one resource (identity
/// policies only: a role's trust policy is checked on its own).
fn statements_of(id: &str, resource: &Value) -> Vec<Statement> {
    let mut docs = Vec::new();
    collect_documents(&resource["Properties"], id, &mut docs);
    let mut out = Vec::new();
    for (path, doc) in docs {
        for (conditions, body) in expand(&doc["Statement"], &[]) {
            for (i, (more, statement)) in expand_list(&body).into_iter().enumerate() {
                let conditions: Vec<String> = conditions.iter().chain(&more).cloned().collect();
                let sid = statement["Sid"].as_str().map(str::to_owned);
                out.push(Statement {
                    name: format!(
                        "{path} statement {}",
                        sid.clone().unwrap_or_else(|| format!("#{i}"))
                    ),
                    sid,
                    conditions,
                    actions: strings(&statement["Action"]),
                    resources: strings(&statement["Resource"]),
                    body: statement,
                });
            }
        }
    }
    out
}

/// Policy documents (objects with `Statement`) under `value`, except trust
/// policies.
fn collect_documents(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(o) => {
            if o.contains_key("Statement") && o.contains_key("Version") {
                out.push((path.to_owned(), value.clone()));
                return;
            }
            for (k, v) in o {
                if k != "AssumeRolePolicyDocument" {
                    collect_documents(v, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_documents(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The values `value` can take, with the conditions of each: both branches
/// of `Fn::If`, dropping `AWS::NoValue`.
fn expand(value: &Value, conditions: &[String]) -> Vec<(Vec<String>, Value)> {
    if let Some([name, yes, no]) = value
        .get("Fn::If")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        let name = name.as_str().unwrap_or_default();
        let mut out = Vec::new();
        for (branch, label) in [(yes, name.to_owned()), (no, format!("!{name}"))] {
            if branch.get("Ref").and_then(Value::as_str) == Some("AWS::NoValue") {
                continue;
            }
            let mut inner = conditions.to_vec();
            inner.push(label);
            out.extend(expand(branch, &inner));
        }
        return out;
    }
    vec![(conditions.to_vec(), value.clone())]
}

/// The elements of a statement list (or one statement), each expanded.
fn expand_list(value: &Value) -> Vec<(Vec<String>, Value)> {
    match value {
        Value::Array(items) => items.iter().flat_map(|i| expand(i, &[])).collect(),
        other => vec![(Vec::new(), other.clone())],
    }
}

/// Strings of an `Action` or `Resource` (one or a list; intrinsics as text).
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(o) => {
            if let Some(Value::String(s)) = o.get("Fn::Sub") {
                vec![s.clone()]
            } else if let Some(Value::Array(a)) = o.get("Fn::GetAtt") {
                vec![format!(
                    "GetAtt:{}.{}",
                    a.first().and_then(Value::as_str).unwrap_or_default(),
                    a.get(1).and_then(Value::as_str).unwrap_or_default()
                )]
            } else if let Some(Value::String(r)) = o.get("Ref") {
                vec![format!("Ref:{r}")]
            } else {
                panic!("unexpected intrinsic in a statement: {value}")
            }
        }
        other => panic!("unexpected value in a statement: {other}"),
    }
}

/// The queues a function may call `action` on: the request function sends
/// to both queues (a request; a revoke handed to a timer), the grant
/// function consumes the request queue and sets timers, the expire function
/// consumes the expiry queue and sets timers again.
fn queue_access(function: &str, action: &str) -> Option<&'static [&'static str]> {
    let consume = matches!(
        action,
        "sqs:ReceiveMessage" | "sqs:DeleteMessage" | "sqs:GetQueueAttributes"
    );
    match (function, action) {
        ("request", "sqs:SendMessage") => Some(&["RequestQueue", "ExpiryQueue"]),
        ("grant", "sqs:SendMessage") | ("expire", _) => Some(&["ExpiryQueue"]),
        ("grant", _) if consume => Some(&["RequestQueue"]),
        ("notify", "sqs:SendMessage") => Some(&["NotifyQueue", "NotifyDeadLetterQueue"]),
        ("notify", _) if consume => Some(&["NotifyQueue"]),
        _ => None,
    }
}

/// The stream reads Lambda makes for a DynamoDB event source.
const STREAM_READS: &[&str] = &[
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
];

/// Resources a function's statements may name, by service.
fn check_resources(id: &str, function: &Function, s: &Statement) {
    for action in &s.actions {
        let service = action.split(':').next().unwrap_or_default();
        for r in &s.resources {
            let ok = match service {
                "logs" => function
                    .log_group
                    .as_ref()
                    .is_some_and(|g| *r == format!("GetAtt:{g}.Arn")),
                "dynamodb" if STREAM_READS.contains(&action.as_str()) => {
                    function.dir == "notify" && r == "${RequestsTable.Arn}/stream/*"
                }
                "dynamodb" => {
                    matches!(
                        r.as_str(),
                        "GetAtt:PoliciesTable.Arn" | "GetAtt:RequestsTable.Arn"
                    ) || (action == "dynamodb:Query"
                        && allowed_indexes(&function.dir)
                            .iter()
                            .any(|index| *r == format!("${{RequestsTable.Arn}}/index/{index}")))
                }
                "sqs" => queue_access(&function.dir, action)
                    .is_some_and(|queues| queues.iter().any(|q| *r == format!("GetAtt:{q}.Arn"))),
                "secretsmanager" => {
                    matches!(
                        r.as_str(),
                        "Ref:AzureClientSecretArn"
                            | "Ref:SlackSigningSecretArn"
                            | "Ref:SlackBotTokenSecretArn"
                            | "Ref:TeamsWebhooksSecretArn"
                    )
                }
                "events" => {
                    function.dir == "notify"
                        && r == "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}"
                }
                "ec2" => {
                    r == "*" || r.starts_with("arn:${AWS::Partition}:ec2:*:${AWS::AccountId}:")
                }
                "xray" => r == "*",
                _ => false,
            };
            assert!(
                ok,
                "{id}: {}: {action} on {r}, which is not this function's",
                s.name
            );
        }
    }
    let secret = s
        .resources
        .iter()
        .find(|r| r.starts_with("Ref:") && r.ends_with("SecretArn"));
    if let Some(secret) = secret {
        let condition = match secret.as_str() {
            "Ref:AzureClientSecretArn" => "ReadAzureSecret",
            "Ref:SlackBotTokenSecretArn" => "ReadSlackBotToken",
            "Ref:TeamsWebhooksSecretArn" => "ReadTeamsWebhooks",
            _ => "ReadSlackSecret",
        };
        assert!(
            s.conditions.iter().any(|c| c.as_str() == condition),
            "{id}: {} reads {secret} even when it is not given (condition {condition})",
            s.name
        );
        if secret == "Ref:SlackSigningSecretArn" {
            assert_eq!(
                function.dir, "request",
                "{id}: only the request function reads the Slack secret"
            );
        }
        if secret == "Ref:SlackBotTokenSecretArn" {
            assert_eq!(
                function.dir, "notify",
                "{id}: only the notify function reads the Slack bot token"
            );
        }
        if secret == "Ref:TeamsWebhooksSecretArn" {
            assert!(
                matches!(function.dir.as_str(), "notify" | "policy"),
                "{id}: only the notify function (which posts) and the policy function (which checks names) read the Teams webhooks"
            );
        }
    }
}

/// The `JITVM_*` names the code reads.
fn variables_in_code() -> BTreeSet<String> {
    let text = source_text(&root().join("shared/src"));
    // Every string literal that is a whole `JITVM_*` name (found by its
    // opening quote, so an escaped quote elsewhere cannot shift the count).
    text.match_indices("\"JITVM_")
        .filter_map(|(at, _)| {
            let rest = &text[at + 1..];
            let end = rest.find('"')?;
            let name = &rest[..end];
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                .then(|| name.to_owned())
        })
        .collect()
}

/// Every `.rs` file under `dir`, concatenated.
fn source_text(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&path).expect("a readable source file"));
                text.push('\n');
            }
        }
    }
    text
}

/// `DescribeSecurityGroupRules` → `describe_security_group_rules`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

//! `template.yaml` as CloudFormation would deploy it: read by the pinned SAM
//! translator from `.venv` (the code `sam deploy` runs), both as written and
//! transformed, and the values it gives a function once its parameters and
//! resources are known.
//!
//! The template test checks the template itself; the Lambda binary tests
//! (`functions/*/tests/bootstrap.rs`) start each function with exactly the
//! environment this module resolves for it, and route events by the HTTP
//! API's routes as written here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

use crate::{SETUP_COMMAND, root};

/// Prints `{"source": <template as written>, "transformed": <after the SAM
/// transform>}` as JSON. As `sam validate` does, a local `CodeUri` stands
/// for an object in S3, since nothing is uploaded.
const DECODE: &str = r#"
import copy, json, sys
from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

class NoManagedPolicies:
    def load(self):
        raise SystemExit("template.yaml names a managed policy; resolving it would call IAM, and the checks allow none")

with open(sys.argv[1], encoding="utf-8") as f:
    source = yaml_parse(f.read())
fragment = copy.deepcopy(source)
for resource in fragment.get("Resources", {}).values():
    props = resource.get("Properties") or {}
    if resource.get("Type") == "AWS::Serverless::Function" and not str(props.get("CodeUri", "")).startswith("s3://"):
        props["CodeUri"] = "s3://bucket/value"
json.dump({"source": source, "transformed": transform(fragment, {}, NoManagedPolicies())}, sys.stdout)
"#;

pub struct Templates {
    pub source: Value,
    pub transformed: Value,
}

/// The template as written and as transformed, read once per test binary.
pub fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let out = run(Command::new(venv_tool("python")).args(["-c", DECODE, "template.yaml"]));
        assert!(
            out.status.success(),
            "the SAM translator could not read template.yaml ({}):\n{}{}\nIs .venv complete? Run `{SETUP_COMMAND}`.",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut both: Value =
            serde_json::from_slice(&out.stdout).expect("the translator prints JSON");
        Templates {
            source: both["source"].take(),
            transformed: both["transformed"].take(),
        }
    })
}

/// A template's `Resources`.
pub fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"]
        .as_object()
        .expect("the template has Resources")
}

/// A tool from the project's virtual environment; fails, naming the set-up
/// command, when it is missing.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "these tests need {name} from the project's virtual environment, and {} is missing. Run `{SETUP_COMMAND}` from the project root first.",
        path.display()
    );
    path
}

/// Runs `command` from the project root with no AWS account: dummy
/// credentials, a fixed region, no profile, no telemetry.
pub fn run(command: &mut Command) -> Output {
    command
        .current_dir(root())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("SAM_CLI_TELEMETRY", "0")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL");
    let program = command.get_program().to_string_lossy().into_owned();
    command.output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e}. Run `{SETUP_COMMAND}` from the project root first.")
    })
}

/// One route of an HTTP API, as the transformed template's OpenAPI body
/// gives it.
#[derive(Debug, Clone)]
pub struct Route {
    /// `METHOD /path/{param}`, API Gateway's route key.
    pub key: String,
    /// The logical id of the function it invokes.
    pub function: String,
    pub security: Value,
    pub payload_format: String,
    /// The template condition the route exists under (a path written as
    /// `Fn::If: [condition, methods, AWS::NoValue]`), if any.
    pub condition: Option<String>,
}

impl Route {
    pub fn method(&self) -> &str {
        self.key.split_once(' ').map_or("", |(m, _)| m)
    }

    pub fn path(&self) -> &str {
        self.key.split_once(' ').map_or("", |(_, p)| p)
    }
}

/// The routes of an HTTP API's OpenAPI body.
pub fn routes_of(body: &Value) -> Vec<Route> {
    let mut out = Vec::new();
    let Some(paths) = body["paths"].as_object() else {
        return out;
    };
    for (path, methods) in paths {
        // A path that exists only under a condition.
        let (condition, methods) = match methods["Fn::If"].as_array() {
            Some(branches) => (
                branches.first().and_then(Value::as_str).map(str::to_owned),
                branches.get(1).unwrap_or(&Value::Null),
            ),
            None => (None, methods),
        };
        let Some(methods) = methods.as_object() else {
            continue;
        };
        for (method, operation) in methods {
            let integration = &operation["x-amazon-apigateway-integration"];
            let uri = match &integration["uri"] {
                Value::String(s) => s.clone(),
                other => other["Fn::Sub"].as_str().unwrap_or_default().to_owned(),
            };
            // `...functions/${PolicyFunction.Arn}/invocations` → `PolicyFunction`.
            let function = uri
                .split_once(".Arn}")
                .and_then(|(head, _)| head.rsplit_once("${"))
                .map(|(_, f)| f.to_owned())
                .unwrap_or(uri);
            out.push(Route {
                key: format!("{} {path}", method.to_ascii_uppercase()),
                function,
                security: operation["security"].clone(),
                payload_format: integration["payloadFormatVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                condition: condition.clone(),
            });
        }
    }
    out
}

/// The routes of the HTTP API with logical id `api` (`Api`, `SsoApi`).
pub fn api_routes(api: &str) -> Vec<Route> {
    let transformed = resources(&templates().transformed);
    let resource = transformed
        .get(api)
        .unwrap_or_else(|| panic!("template.yaml has no HTTP API {api}"));
    routes_of(&resource["Properties"]["Body"])
}

/// A deployment of the template: its parameters, and what CloudFormation
/// would have made of its resources (physical ids and attributes).
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    pub region: String,
    pub account: String,
    /// Parameter values given; the others take the template's defaults.
    pub parameters: BTreeMap<String, String>,
    /// `Ref` of a resource (`PoliciesTable`) and `Fn::GetAtt` of one
    /// (`RequestQueue.QueueName`).
    pub resources: BTreeMap<String, String>,
}

impl Deployment {
    /// The environment the template gives the function with logical id
    /// `function`: its own variables and the `Globals`, as the SAM transform
    /// merges them, with every intrinsic resolved.
    pub fn environment(&self, function: &str) -> BTreeMap<String, String> {
        let transformed = resources(&templates().transformed);
        let variables =
            transformed
                .get(function)
                .unwrap_or_else(|| panic!("template.yaml has no function {function}"))["Properties"]
                ["Environment"]["Variables"]
                .as_object()
                .cloned()
                .unwrap_or_default();
        variables
            .into_iter()
            .filter_map(|(name, value)| match self.resolve(&value) {
                Resolved::NoValue => None,
                resolved => Some((name, resolved.text())),
            })
            .collect()
    }

    /// The function's `Properties` in the transformed template.
    pub fn function_properties(&self, function: &str) -> Value {
        resources(&templates().transformed)[function]["Properties"].clone()
    }

    fn parameter(&self, name: &str) -> Resolved {
        let declared = &templates().source["Parameters"][name];
        assert!(
            !declared.is_null(),
            "template.yaml refers to a parameter {name} it does not declare"
        );
        let text = self
            .parameters
            .get(name)
            .cloned()
            .or_else(|| match &declared["Default"] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("parameter {name} has no default: give it a value"));
        if declared["Type"] == "CommaDelimitedList" {
            Resolved::List(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        } else {
            Resolved::Text(text)
        }
    }

    fn reference(&self, name: &str) -> Resolved {
        match name {
            "AWS::Region" => Resolved::Text(self.region.clone()),
            "AWS::AccountId" => Resolved::Text(self.account.clone()),
            "AWS::Partition" => Resolved::Text("aws".into()),
            "AWS::URLSuffix" => Resolved::Text("amazonaws.com".into()),
            "AWS::NoValue" => Resolved::NoValue,
            _ if templates().source["Parameters"].get(name).is_some() => self.parameter(name),
            _ => {
                Resolved::Text(self.resources.get(name).cloned().unwrap_or_else(|| {
                    panic!("the deployment does not say what resource {name} is")
                }))
            }
        }
    }

    fn condition(&self, name: &str) -> bool {
        let condition = &templates().transformed["Conditions"][name];
        assert!(!condition.is_null(), "no condition {name}");
        self.truth(condition)
    }

    fn truth(&self, value: &Value) -> bool {
        let (function, args) = intrinsic(value);
        match function {
            "Fn::Equals" => self.resolve(&args[0]).text() == self.resolve(&args[1]).text(),
            "Fn::Not" => !self.truth(&args[0]),
            "Fn::And" => list(args).iter().all(|a| self.truth(a)),
            "Fn::Or" => list(args).iter().any(|a| self.truth(a)),
            "Condition" => self.condition(args.as_str().unwrap_or_default()),
            other => panic!("{other} is not a condition function: {value}"),
        }
    }

    /// A value with its intrinsics worked out. Panics on one this resolver
    /// does not know, so a template that grows one fails loudly here.
    fn resolve(&self, value: &Value) -> Resolved {
        match value {
            Value::String(s) => return Resolved::Text(s.clone()),
            Value::Number(n) => return Resolved::Text(n.to_string()),
            Value::Bool(b) => return Resolved::Text(b.to_string()),
            _ => {}
        }
        let (function, args) = intrinsic(value);
        match function {
            "Ref" => self.reference(args.as_str().unwrap_or_default()),
            "Fn::GetAtt" => {
                let key = match args {
                    Value::String(s) => s.clone(),
                    _ => format!(
                        "{}.{}",
                        args[0].as_str().unwrap_or_default(),
                        args[1].as_str().unwrap_or_default()
                    ),
                };
                self.reference(&key)
            }
            "Fn::If" => {
                let branch = if self.condition(args[0].as_str().unwrap_or_default()) {
                    &args[1]
                } else {
                    &args[2]
                };
                self.resolve(branch)
            }
            "Fn::Join" => {
                let separator = args[0].as_str().unwrap_or_default();
                let parts: Vec<String> = match self.resolve_list(&args[1]) {
                    Resolved::List(items) => items,
                    other => vec![other.text()],
                };
                Resolved::Text(parts.join(separator))
            }
            // The one-argument form: `${Name}` is a parameter, a pseudo
            // parameter or a resource; `${Name.Attribute}` an attribute.
            "Fn::Sub" if args.is_string() => {
                let mut text = args.as_str().unwrap_or_default();
                let mut out = String::new();
                while let Some((before, rest)) = text.split_once("${") {
                    let (name, after) = rest
                        .split_once('}')
                        .unwrap_or_else(|| panic!("an unclosed ${{ in {value}"));
                    out.push_str(before);
                    out.push_str(&self.reference(name).text());
                    text = after;
                }
                out.push_str(text);
                Resolved::Text(out)
            }
            other => panic!("tests/src/template.rs cannot resolve {other} yet: {value}"),
        }
    }

    fn resolve_list(&self, value: &Value) -> Resolved {
        match value {
            Value::Array(items) => Resolved::List(
                items
                    .iter()
                    .flat_map(|item| match self.resolve(item) {
                        Resolved::List(inner) => inner,
                        Resolved::Text(t) => vec![t],
                        Resolved::NoValue => Vec::new(),
                    })
                    .collect(),
            ),
            other => self.resolve(other),
        }
    }
}

/// What an intrinsic gives: text, a list (of a `CommaDelimitedList`), or
/// `AWS::NoValue` (the property is left out).
enum Resolved {
    Text(String),
    List(Vec<String>),
    NoValue,
}

impl Resolved {
    fn text(self) -> String {
        match self {
            Resolved::Text(t) => t,
            Resolved::List(items) => items.join(","),
            Resolved::NoValue => String::new(),
        }
    }
}

/// The one `Fn::...`, `Ref` or `Condition` key of an intrinsic and its
/// arguments.
fn intrinsic(value: &Value) -> (&str, &Value) {
    match value.as_object() {
        Some(map) if map.len() == 1 => map
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v))
            .unwrap_or(("", &Value::Null)),
        _ => panic!("not an intrinsic function: {value}"),
    }
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

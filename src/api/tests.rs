//! Serde defaults and round trips of the CRD types, and the shape of the generated schemas.
//! What the API server does with the schemas is tested in `tests/crd_apiserver.rs`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::*;

fn schema_of(crd: &CustomResourceDefinition) -> &JSONSchemaProps {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has an openAPIV3Schema")
}

fn prop<'a>(schema: &'a JSONSchemaProps, path: &[&str]) -> &'a JSONSchemaProps {
    path.iter().fold(schema, |s, name| {
        s.properties
            .as_ref()
            .and_then(|p| p.get(*name))
            .unwrap_or_else(|| panic!("no property {name} in {path:?}"))
    })
}

fn rules(schema: &JSONSchemaProps) -> Vec<(String, String)> {
    schema
        .x_kubernetes_validations
        .iter()
        .flatten()
        .map(|r| (r.rule.clone(), r.message.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn minimal_process_spec_takes_the_defaults() {
    let spec: SandboxProcessSpec = serde_json::from_value(json!({
        "sandbox": {"podName": "box-0"},
        "command": "/bin/true",
    }))
    .unwrap();
    assert_eq!(
        spec,
        SandboxProcessSpec::new(SandboxTarget::pod("box-0"), "/bin/true")
    );
    assert_eq!(spec.sandbox.port, 9501);
    assert_eq!(spec.stdin, StdinMode::Closed);
    assert_eq!(spec.output, OutputMode::Capture);
    assert_eq!(spec.restart_policy, RestartPolicy::Never);
    assert_eq!(spec.state, DesiredState::Running);
    assert_eq!(spec.stop_signal, "SIGTERM");
    assert_eq!(spec.termination_grace_period_seconds, 30);
    assert!(spec.attach.is_none() && spec.timeout_seconds.is_none());
}

#[test]
fn minimal_pty_spec_takes_the_defaults() {
    let spec: PtySessionSpec =
        serde_json::from_value(json!({"sandbox": {"serviceName": "box"}})).unwrap();
    assert_eq!(spec, PtySessionSpec::new(SandboxTarget::service("box")));
    assert_eq!(spec.command, "/bin/sh");
    assert_eq!((spec.rows, spec.cols), (24, 80));
    assert_eq!(spec.idle_timeout_seconds, 300);
    assert_eq!(spec.ttl_seconds, None);
}

#[test]
fn process_round_trips_with_kubernetes_field_names() {
    let mut spec = SandboxProcessSpec::new(SandboxTarget::endpoint("http://127.0.0.1:9501"), "sh");
    spec.args = vec!["-c".into(), "exit 3".into()];
    spec.env = vec![
        EnvVar::value("A", "1"),
        EnvVar::secret(
            "TOKEN",
            SecretKeySelector {
                name: "s".into(),
                key: "k".into(),
            },
        ),
    ];
    spec.stdin = StdinMode::Pipe;
    spec.restart_policy = RestartPolicy::OnFailure;
    spec.state = DesiredState::Stopped;
    spec.ttl_seconds_after_finished = Some(0);
    let mut obj = SandboxProcess::new("p", spec);
    obj.status = Some(SandboxProcessStatus {
        phase: Some(ProcessPhase::Failed),
        process_status: Some(DaemonProcessStatus::OomKilled),
        target: Some(ResolvedTarget {
            pod_uid: Some("u".into()),
            ..Default::default()
        }),
        ..Default::default()
    });

    let value = serde_json::to_value(&obj).unwrap();
    assert_eq!(value["apiVersion"], "sandboxes.dev/v1alpha1");
    assert_eq!(value["kind"], "SandboxProcess");
    let spec = &value["spec"];
    assert_eq!(spec["sandbox"]["endpoint"], "http://127.0.0.1:9501");
    assert_eq!(spec["stdin"], "Pipe");
    assert_eq!(spec["restartPolicy"], "OnFailure");
    assert_eq!(spec["state"], "Stopped");
    assert_eq!(spec["ttlSecondsAfterFinished"], 0);
    assert_eq!(spec["env"][1]["valueFrom"]["secretKeyRef"]["key"], "k");
    let status = &value["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["processStatus"], "oom_killed");
    assert_eq!(status["target"]["podUID"], "u");

    let back: SandboxProcess = serde_json::from_value(value).unwrap();
    assert_eq!(back, obj);
}

#[test]
fn unset_fields_are_left_out_not_null() {
    // Server-side apply takes a field that is present (even as null) as "owned by me", so an
    // unset field must be absent from what the operator sends.
    let status = serde_json::to_value(SandboxProcessStatus {
        pid: Some(7),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(status, json!({"pid": 7}));
    let spec = serde_json::to_value(SandboxProcessSpec::new(SandboxTarget::pod("b"), "x")).unwrap();
    assert_eq!(
        spec,
        json!({
            "sandbox": {"podName": "b", "port": 9501},
            "command": "x",
            "stdin": "Closed",
            "output": "Capture",
            "restartPolicy": "Never",
            "state": "Running",
            "stopSignal": "SIGTERM",
            "terminationGracePeriodSeconds": 30,
        })
    );
}

#[test]
fn pty_round_trips() {
    let mut obj = PtySession::new("t", PtySessionSpec::new(SandboxTarget::pod("b")));
    obj.spec.rows = 50;
    obj.status = Some(PtySessionStatus {
        phase: Some(PtyPhase::Expired),
        client_count: Some(2),
        token_secret_name: Some("t-token".into()),
        ..Default::default()
    });
    let value = serde_json::to_value(&obj).unwrap();
    assert_eq!(value["kind"], "PtySession");
    assert_eq!(value["spec"]["rows"], 50);
    assert_eq!(value["status"]["phase"], "Expired");
    assert_eq!(value["status"]["clientCount"], 2);
    assert_eq!(value["status"]["tokenSecretName"], "t-token");
    assert_eq!(serde_json::from_value::<PtySession>(value).unwrap(), obj);
}

#[test]
fn unknown_enum_values_do_not_deserialize() {
    let err = serde_json::from_value::<SandboxProcessSpec>(json!({
        "sandbox": {"podName": "b"}, "command": "x", "stdin": "Open",
    }))
    .unwrap_err();
    assert!(err.to_string().contains("Open"), "{err}");
}

#[test]
fn crd_names_columns_and_scope() {
    let process = SandboxProcess::crd();
    assert_eq!(
        process.metadata.name.as_deref(),
        Some("sandboxprocesses.sandboxes.dev")
    );
    assert_eq!(process.spec.scope, "Namespaced");
    let names = &process.spec.names;
    assert_eq!(names.short_names, Some(vec!["sbp".into(), "sbproc".into()]));
    assert_eq!(names.categories, Some(vec!["sandboxes".into()]));
    let version = &process.spec.versions[0];
    assert_eq!(version.name, VERSION);
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.priority.unwrap_or(0)))
        .collect();
    assert_eq!(
        columns,
        [
            ("Phase", 0),
            ("PID", 0),
            ("Exit", 0),
            ("Target", 0),
            ("Age", 0),
            ("Reason", 1),
            ("Restarts", 1),
            ("Pod", 1)
        ]
    );

    let pty = PtySession::crd();
    assert_eq!(
        pty.metadata.name.as_deref(),
        Some("ptysessions.sandboxes.dev")
    );
    assert_eq!(
        pty.spec.names.short_names,
        Some(vec!["ptys".into(), "sbpty".into()])
    );
    let columns: Vec<_> = pty.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Phase", "Size", "Clients", "Age"]);
}

#[test]
fn schema_carries_defaults_enums_and_ranges() {
    let process = SandboxProcess::crd();
    let spec = prop(schema_of(&process), &["spec"]);
    assert_eq!(spec.required, Some(vec!["sandbox".into()]));
    let stdin = prop(spec, &["stdin"]);
    assert_eq!(stdin.default.as_ref().map(|d| &d.0), Some(&json!("Closed")));
    assert_eq!(
        stdin
            .enum_
            .as_ref()
            .map(|e| e.iter().map(|v| v.0.clone()).collect::<Vec<_>>()),
        Some(vec![json!("Closed"), json!("Pipe")])
    );
    let port = prop(spec, &["sandbox", "port"]);
    assert_eq!(port.default.as_ref().map(|d| &d.0), Some(&json!(9501)));
    assert_eq!((port.minimum, port.maximum), (Some(1.0), Some(65535.0)));
    let grace = prop(spec, &["terminationGracePeriodSeconds"]);
    assert_eq!((grace.minimum, grace.maximum), (Some(0.0), Some(3600.0)));
    assert_eq!(prop(spec, &["command"]).min_length, Some(1));
    let tail = prop(schema_of(&process), &["status", "outputTail"]);
    assert_eq!(tail.max_items, Some(OUTPUT_TAIL_MAX_LINES_I64));

    let pty = PtySession::crd();
    let rows = prop(schema_of(&pty), &["spec", "rows"]);
    assert_eq!((rows.minimum, rows.maximum), (Some(1.0), Some(500.0)));
    assert_eq!(rows.default.as_ref().map(|d| &d.0), Some(&json!(24)));
    let cols = prop(schema_of(&pty), &["spec", "cols"]);
    assert_eq!((cols.minimum, cols.maximum), (Some(1.0), Some(1000.0)));
}

const OUTPUT_TAIL_MAX_LINES_I64: i64 = process::OUTPUT_TAIL_MAX_LINES as i64;

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    for crd in crds() {
        let conditions = prop(schema_of(&crd), &["status", "conditions"]);
        assert_eq!(conditions.x_kubernetes_list_type.as_deref(), Some("map"));
        assert_eq!(
            conditions.x_kubernetes_list_map_keys,
            Some(vec!["type".into()])
        );
        let items = match conditions.items.as_ref() {
            Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s)) => s,
            other => panic!("conditions items: {other:?}"),
        };
        assert!(items.required.iter().flatten().any(|r| r == "type"));
    }
}

#[test]
fn cel_rules_have_messages() {
    let process = SandboxProcess::crd();
    let spec = prop(schema_of(&process), &["spec"]);
    let spec_rules = rules(spec);
    for field in [
        "sandbox",
        "command",
        "args",
        "env",
        "workingDir",
        "user",
        "attach",
    ] {
        let message = format!("spec.{field} is immutable");
        assert!(
            spec_rules
                .iter()
                .any(|(rule, m)| *m == message && rule.contains("oldSelf")),
            "no immutability rule for {field}: {spec_rules:#?}"
        );
    }
    for mutable in ["state", "ttlSecondsAfterFinished", "stopSignal"] {
        assert!(
            !spec_rules.iter().any(|(rule, _)| rule.contains(mutable)),
            "{mutable} must stay mutable"
        );
    }
    let target = rules(prop(spec, &["sandbox"]));
    assert_eq!(target.len(), 1);
    assert!(
        target[0]
            .1
            .contains("exactly one of podName, serviceName or endpoint")
    );

    let pty = PtySession::crd();
    let pty_rules = rules(prop(schema_of(&pty), &["spec"]));
    assert!(
        pty_rules
            .iter()
            .any(|(_, m)| m == "spec.command is immutable")
    );
    assert!(
        !pty_rules
            .iter()
            .any(|(rule, _)| rule.contains("rows") || rule.contains("cols"))
    );
}

/// Kubernetes demands structural schemas: no `oneOf`/`anyOf`/`allOf` that would introduce
/// types, every object with properties (or explicitly free-form). Walk the raw JSON so nothing
/// escapes because the typed struct does not model it.
#[test]
fn schemas_are_structural() {
    fn walk(path: &str, v: &Value) {
        let Some(obj) = v.as_object() else { return };
        for key in [
            "oneOf",
            "anyOf",
            "allOf",
            "not",
            "$ref",
            "definitions",
            "$defs",
        ] {
            assert!(!obj.contains_key(key), "{path} has {key}");
        }
        if obj.get("type") == Some(&json!("object")) {
            assert!(
                obj.contains_key("properties")
                    || obj.contains_key("additionalProperties")
                    || obj.contains_key("x-kubernetes-preserve-unknown-fields"),
                "{path} is an object without properties"
            );
        }
        if obj.contains_key("properties") || obj.contains_key("items") {
            assert!(obj.contains_key("type"), "{path} has no type");
        }
        for (k, child) in obj {
            match child {
                Value::Object(_) => walk(&format!("{path}.{k}"), child),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(&format!("{path}.{k}[{i}]"), item);
                    }
                }
                _ => {}
            }
        }
    }
    for crd in crds() {
        let schema = serde_json::to_value(schema_of(&crd)).unwrap();
        walk(crd.metadata.name.as_deref().unwrap(), &schema);
    }
}

#[test]
fn every_field_has_a_description() {
    fn walk(path: &str, s: &JSONSchemaProps) {
        for (name, child) in s.properties.iter().flatten() {
            let here = format!("{path}.{name}");
            // apiVersion/kind/metadata are Kubernetes' own; kubectl explain fills them in.
            let ours = !matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
            if ours {
                assert!(
                    child.description.as_deref().is_some_and(|d| !d.is_empty()),
                    "{here} has no description"
                );
            }
            walk(&here, child);
            if let Some(
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items),
            ) = &child.items
            {
                walk(&format!("{here}[]"), items);
            }
        }
    }
    for crd in crds() {
        walk(crd.spec.names.kind.as_str(), schema_of(&crd));
    }
}

#[test]
fn yaml_output_parses_back_to_the_same_crds() {
    let parsed: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&crds_yaml().unwrap()).expect("crds_yaml() is valid YAML");
    assert_eq!(parsed, crds());
    for crd in crds() {
        let one: CustomResourceDefinition =
            serde_saphyr::from_str(&crd_yaml(&crd).unwrap()).unwrap();
        assert_eq!(one, crd);
    }
    assert_eq!(
        crds().iter().map(crd_file_name).collect::<Vec<_>>(),
        [
            "sandboxes.dev_sandboxprocesses.yaml",
            "sandboxes.dev_ptysessions.yaml"
        ]
    );
}

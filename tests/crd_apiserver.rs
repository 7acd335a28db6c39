//! The generated CRDs against the REAL API server (`scripts/control-plane.sh`: etcd + the
//! apiextensions-apiserver): they install and become Established, defaults are filled in,
//! invalid objects are rejected with readable messages, immutable fields stay immutable,
//! status merges conditions by type under server-side apply, and server-side printing shows
//! the printer columns.
//!
//! The control plane is started by the first test that needs it (`start` is a no-op when it is
//! already up, and the script serializes concurrent starts with its own lock file, so parallel
//! test processes are safe). It is left running for the next test process; stop it with
//! `scripts/control-plane.sh stop`. If it cannot be started the tests FAIL with the script's
//! output: they never skip.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use sandbox_operator::api::{
    self, DesiredState, OutputMode, PtySession, PtySessionSpec, RestartPolicy, SandboxProcess,
    SandboxProcessSpec, SandboxTarget, StdinMode,
};
use serde_json::{Value, json};

const MANAGER: &str = "sandbox-operator-crd-tests";

#[path = "common/control_plane.rs"]
mod control_plane;

use control_plane::{client, namespace};

fn dynamic<K: kube::Resource<DynamicType = ()>>(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()))
}

fn process_object(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "sandboxes.dev/v1alpha1",
        "kind": "SandboxProcess",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn pty_object(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "sandboxes.dev/v1alpha1",
        "kind": "PtySession",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// The API server's message for a request that must fail validation (HTTP 422), checked to
/// contain `want`.
fn rejected<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>, want: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 422,
                "{what}: expected 422 Invalid, got {status:?}"
            );
            assert!(
                status.message.contains(want),
                "{what}: message does not contain {want:?}:\n{}",
                status.message
            );
            eprintln!("rejected {what}: {}", status.message);
            status.message
        }
        Err(other) => panic!("{what}: expected a 422 from the API server, got {other}"),
        Ok(obj) => panic!("{what}: the API server accepted it: {obj:?}"),
    }
}

/// A JSON merge patch of `spec`, as `kubectl patch --type merge` or an edit would send it.
async fn merge_spec<K>(api: &Api<K>, name: &str, spec: Value) -> Result<K, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
}

// ----------------------------------------------------------------------------------- tests

#[tokio::test]
async fn valid_process_is_accepted_and_defaulted() {
    let client = client().await;
    let ns = namespace("valid");
    let created = dynamic::<SandboxProcess>(&client, &ns)
        .create(
            &PostParams::default(),
            &process_object(
                "minimal",
                json!({"sandbox": {"podName": "box-0"}, "command": "/bin/true"}),
            ),
        )
        .await
        .expect("a minimal SandboxProcess is valid");
    // Read it back typed: what the operator will see.
    let obj: SandboxProcess = serde_json::from_value(serde_json::to_value(created).unwrap())
        .expect("the stored object deserializes into SandboxProcess");
    let spec = &obj.spec;
    assert_eq!(spec.sandbox.port, 9501);
    assert_eq!(spec.stdin, StdinMode::Closed);
    assert_eq!(spec.output, OutputMode::Capture);
    assert_eq!(spec.restart_policy, RestartPolicy::Never);
    assert_eq!(spec.state, DesiredState::Running);
    assert_eq!(spec.stop_signal, "SIGTERM");
    assert_eq!(spec.termination_grace_period_seconds, 30);
    assert_eq!(obj.metadata.generation, Some(1));

    // The typed constructors produce valid objects too, for every target kind and with attach.
    let processes: Api<SandboxProcess> = Api::namespaced(client.clone(), &ns);
    let mut full = SandboxProcessSpec::new(
        SandboxTarget::endpoint("https://sandbox.example:9501/base"),
        "sh",
    );
    full.args = vec!["-c".into(), "echo hi".into()];
    full.env = vec![
        api::EnvVar::value("A", ""),
        api::EnvVar::secret(
            "B",
            api::SecretKeySelector {
                name: "creds".into(),
                key: "token.txt".into(),
            },
        ),
    ];
    full.stdin = StdinMode::Pipe;
    full.timeout_seconds = Some(60);
    full.restart_policy = RestartPolicy::OnFailure;
    full.stop_signal = "SIGRTMIN+2".into();
    full.ttl_seconds_after_finished = Some(0);
    full.labels.insert("team".into(), "a".into());
    let mut adopt = SandboxProcessSpec::new(SandboxTarget::service("sandbox-svc"), "unused");
    adopt.command = None;
    adopt.attach = Some(api::AttachTarget {
        pid: Some(1),
        name: None,
    });
    for (name, spec) in [("full", full), ("adopt", adopt)] {
        let stored = processes
            .create(
                &PostParams::default(),
                &SandboxProcess::new(name, spec.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(stored.spec, spec, "{name} is stored as sent");
    }

    let ptys = dynamic::<PtySession>(&client, &ns);
    let created = ptys
        .create(
            &PostParams::default(),
            &pty_object(
                "shell",
                json!({"sandbox": {"endpoint": "http://127.0.0.1:9501"}}),
            ),
        )
        .await
        .expect("a minimal PtySession is valid");
    let pty: PtySession = serde_json::from_value(serde_json::to_value(created).unwrap()).unwrap();
    assert_eq!(pty.spec.command, "/bin/sh");
    assert_eq!((pty.spec.rows, pty.spec.cols), (24, 80));
    assert_eq!(pty.spec.idle_timeout_seconds, 300);
}

#[tokio::test]
async fn invalid_processes_are_rejected_with_readable_messages() {
    let client = client().await;
    let ns = namespace("invalid");
    let api = dynamic::<SandboxProcess>(&client, &ns);
    let endpoint = json!({"endpoint": "http://127.0.0.1:9501"});
    let cases = [
        (
            "two targets",
            json!({"sandbox": {"podName": "a", "endpoint": "http://127.0.0.1:9501"}, "command": "x"}),
            "exactly one of podName, serviceName or endpoint must be set",
        ),
        (
            "no target",
            json!({"sandbox": {}, "command": "x"}),
            "exactly one of podName, serviceName or endpoint must be set",
        ),
        (
            "no sandbox",
            json!({"command": "x"}),
            "spec.sandbox: Required value",
        ),
        (
            "no command and no attach",
            json!({"sandbox": endpoint}),
            "spec.command is required unless spec.attach is set",
        ),
        (
            "empty command",
            json!({"sandbox": endpoint, "command": ""}),
            "spec.command: Invalid value: \"\": spec.command in body should be at least 1 chars long",
        ),
        (
            "command with attach",
            json!({"sandbox": endpoint, "command": "x", "attach": {"pid": 5}}),
            "spec.command must not be set together with spec.attach",
        ),
        (
            "attach with pid and name",
            json!({"sandbox": endpoint, "attach": {"pid": 5, "name": "web"}}),
            "exactly one of attach.pid or attach.name must be set",
        ),
        (
            "attach with neither",
            json!({"sandbox": endpoint, "attach": {}}),
            "exactly one of attach.pid or attach.name must be set",
        ),
        (
            "bad stdin enum",
            json!({"sandbox": endpoint, "command": "x", "stdin": "Open"}),
            "spec.stdin: Unsupported value: \"Open\": supported values: \"Closed\", \"Pipe\"",
        ),
        (
            "bad restartPolicy enum",
            json!({"sandbox": endpoint, "command": "x", "restartPolicy": "never"}),
            "spec.restartPolicy: Unsupported value: \"never\"",
        ),
        (
            "env with value and valueFrom",
            json!({"sandbox": endpoint, "command": "x", "env": [
                {"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]}),
            "exactly one of value or valueFrom must be set",
        ),
        (
            "env with neither value nor valueFrom",
            json!({"sandbox": endpoint, "command": "x", "env": [{"name": "A"}]}),
            "exactly one of value or valueFrom must be set",
        ),
        (
            "duplicate env names",
            json!({"sandbox": endpoint, "command": "x", "env": [
                {"name": "A", "value": "1"}, {"name": "A", "value": "2"}
            ]}),
            "Duplicate value",
        ),
        (
            "relative endpoint",
            json!({"sandbox": {"endpoint": "/daemon"}, "command": "x"}),
            "endpoint must be an absolute http:// or https:// URL",
        ),
        (
            "ftp endpoint",
            json!({"sandbox": {"endpoint": "ftp://127.0.0.1/"}, "command": "x"}),
            "endpoint must be an absolute http:// or https:// URL",
        ),
        (
            "port 0",
            json!({"sandbox": {"podName": "a", "port": 0}, "command": "x"}),
            "should be greater than or equal to 1",
        ),
        (
            "port 70000",
            json!({"sandbox": {"podName": "a", "port": 70000}, "command": "x"}),
            "should be less than or equal to 65535",
        ),
        (
            "pod name with capitals",
            json!({"sandbox": {"podName": "Box"}, "command": "x"}),
            "spec.sandbox.podName: Invalid value: \"Box\"",
        ),
        (
            "timeoutSeconds 0",
            json!({"sandbox": endpoint, "command": "x", "timeoutSeconds": 0}),
            "spec.timeoutSeconds: Invalid value: 0: spec.timeoutSeconds in body should be greater than or equal to 1",
        ),
        (
            "memoryLimitBytes under 1 MiB",
            json!({"sandbox": endpoint, "command": "x", "memoryLimitBytes": 4096}),
            "spec.memoryLimitBytes in body should be greater than or equal to 1048576",
        ),
        (
            "grace period 3601",
            json!({"sandbox": endpoint, "command": "x", "terminationGracePeriodSeconds": 3601}),
            "should be less than or equal to 3600",
        ),
        (
            "bad stop signal",
            json!({"sandbox": endpoint, "command": "x", "stopSignal": "kill -9"}),
            "spec.stopSignal: Invalid value: \"kill -9\"",
        ),
    ];
    for (i, (what, spec, want)) in cases.into_iter().enumerate() {
        let result = api
            .create(
                &PostParams::default(),
                &process_object(&format!("bad-{i}"), spec),
            )
            .await;
        rejected(what, result, want);
    }
}

#[tokio::test]
async fn invalid_pty_sessions_are_rejected() {
    let client = client().await;
    let ns = namespace("ptyinvalid");
    let api = dynamic::<PtySession>(&client, &ns);
    let endpoint = json!({"endpoint": "http://127.0.0.1:9501"});
    let cases = [
        (
            "rows 0",
            json!({"sandbox": endpoint, "rows": 0}),
            "spec.rows: Invalid value: 0: spec.rows in body should be greater than or equal to 1",
        ),
        (
            "cols 5000",
            json!({"sandbox": endpoint, "cols": 5000}),
            "spec.cols: Invalid value: 5000: spec.cols in body should be less than or equal to 1000",
        ),
        (
            "rows 501",
            json!({"sandbox": endpoint, "rows": 501}),
            "should be less than or equal to 500",
        ),
        (
            "negative idle timeout",
            json!({"sandbox": endpoint, "idleTimeoutSeconds": -1}),
            "should be greater than or equal to 0",
        ),
        (
            "two targets",
            json!({"sandbox": {"podName": "a", "serviceName": "b"}}),
            "exactly one of podName, serviceName or endpoint must be set",
        ),
        (
            "empty command",
            json!({"sandbox": endpoint, "command": ""}),
            "should be at least 1 chars long",
        ),
    ];
    for (i, (what, spec, want)) in cases.into_iter().enumerate() {
        let result = api
            .create(
                &PostParams::default(),
                &pty_object(&format!("bad-{i}"), spec),
            )
            .await;
        rejected(what, result, want);
    }
}

#[tokio::test]
async fn process_spec_is_immutable_except_lifecycle_fields() {
    let client = client().await;
    let ns = namespace("immutable");
    let api: Api<SandboxProcess> = Api::namespaced(client.clone(), &ns);
    let spec = SandboxProcessSpec::new(
        SandboxTarget::endpoint("http://127.0.0.1:9501"),
        "/bin/sleep",
    );
    api.create(&PostParams::default(), &SandboxProcess::new("p", spec))
        .await
        .unwrap();
    let patch = |v: Value| merge_spec(&api, "p", v);

    let changes = [
        ("command", json!({"command": "/bin/false"})),
        ("args", json!({"args": ["10"]})),
        ("env", json!({"env": [{"name": "A", "value": "1"}]})),
        ("workingDir", json!({"workingDir": "/tmp"})),
        ("user", json!({"user": "1000"})),
        (
            "sandbox",
            json!({"sandbox": {"endpoint": "http://127.0.0.1:9502"}}),
        ),
        ("stdin", json!({"stdin": "Pipe"})),
        ("restartPolicy", json!({"restartPolicy": "Always"})),
        ("timeoutSeconds", json!({"timeoutSeconds": 5})),
        ("memoryLimitBytes", json!({"memoryLimitBytes": 1 << 30})),
        ("labels", json!({"labels": {"a": "b"}})),
    ];
    for (field, change) in changes {
        let message = rejected(
            &format!("changing spec.{field}"),
            patch(change).await,
            &format!("spec.{field} is immutable"),
        );
        assert!(
            message.contains(&format!("spec.{field}: Invalid value")),
            "the error names the field: {message}"
        );
    }
    // Adopting a different process after the fact is both immutable and contradictory.
    rejected(
        "adding spec.attach",
        patch(json!({"attach": {"pid": 1}})).await,
        "spec.attach is immutable",
    );

    // Lifecycle fields change freely; each change is a new generation for the operator to act on.
    let stopped = patch(json!({"state": "Stopped", "stopSignal": "SIGINT", "terminationGracePeriodSeconds": 5, "ttlSecondsAfterFinished": 60}))
        .await
        .expect("lifecycle fields are mutable");
    assert_eq!(stopped.spec.state, DesiredState::Stopped);
    assert_eq!(stopped.spec.stop_signal, "SIGINT");
    assert_eq!(stopped.spec.ttl_seconds_after_finished, Some(60));
    assert_eq!(stopped.metadata.generation, Some(2));
}

#[tokio::test]
async fn pty_resizes_but_keeps_its_command() {
    let client = client().await;
    let ns = namespace("ptyresize");
    let api: Api<PtySession> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &PtySession::new("t", PtySessionSpec::new(SandboxTarget::pod("box"))),
    )
    .await
    .unwrap();
    let patch = |v: Value| merge_spec(&api, "t", v);
    let resized =
        patch(json!({"rows": 50, "cols": 200, "idleTimeoutSeconds": 0, "ttlSeconds": 3600}))
            .await
            .expect("rows, cols and the timeouts are mutable");
    assert_eq!((resized.spec.rows, resized.spec.cols), (50, 200));
    rejected(
        "pty rows 0",
        patch(json!({"rows": 0})).await,
        "greater than or equal to 1",
    );
    for (field, change) in [
        ("command", json!({"command": "/bin/bash"})),
        ("args", json!({"args": ["-l"]})),
        ("env", json!({"env": [{"name": "A", "value": "1"}]})),
        ("workingDir", json!({"workingDir": "/"})),
        ("user", json!({"user": "root"})),
        ("sandbox", json!({"sandbox": {"podName": "other"}})),
    ] {
        rejected(
            &format!("changing pty spec.{field}"),
            patch(change).await,
            &format!("spec.{field} is immutable"),
        );
    }
}

#[tokio::test]
async fn status_is_server_side_applied_and_conditions_merge_by_type() {
    let client = client().await;
    let ns = namespace("status");
    let api: Api<SandboxProcess> = Api::namespaced(client.clone(), &ns);
    let spec = SandboxProcessSpec::new(
        SandboxTarget::endpoint("http://127.0.0.1:9501"),
        "/bin/true",
    );
    api.create(&PostParams::default(), &SandboxProcess::new("s", spec))
        .await
        .unwrap();

    let condition = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": "",
               "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1})
    };
    let apply = |manager: &'static str, status: Value| {
        let api = api.clone();
        async move {
            api.patch_status(
                "s",
                &PatchParams::apply(manager).force(),
                &Patch::Apply(json!({
                    "apiVersion": "sandboxes.dev/v1alpha1",
                    "kind": "SandboxProcess",
                    "status": status,
                })),
            )
            .await
        }
    };

    apply(
        "operator",
        json!({"phase": "Running", "pid": 4242, "handle": 7, "processStatus": "running",
               "startedAt": "2026-01-02T03:04:05Z", "observedGeneration": 1,
               "target": {"endpoint": "http://127.0.0.1:9501", "bootId": "b1"},
               "outputTail": ["hello"],
               "conditions": [condition("Ready", "True", "Running")]}),
    )
    .await
    .expect("status apply by the operator");
    apply(
        "other-controller",
        json!({"conditions": [condition("Reconciling", "False", "Idle")]}),
    )
    .await
    .expect("status apply by a second field manager");
    let got = apply(
        "operator",
        json!({"phase": "Running", "pid": 4242, "handle": 7, "processStatus": "running",
               "startedAt": "2026-01-02T03:04:05Z", "observedGeneration": 1,
               "target": {"endpoint": "http://127.0.0.1:9501", "bootId": "b1"},
               "outputTail": ["hello"],
               "conditions": [condition("Ready", "False", "Exited")]}),
    )
    .await
    .expect("the operator re-applies its own condition");

    let status = got.status.expect("status is stored");
    let conditions: Vec<(&str, &str)> = status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(
        conditions,
        [("Ready", "False"), ("Reconciling", "False")],
        "each manager's condition survives the other's apply"
    );
    assert_eq!(status.pid, Some(4242));
    assert_eq!(status.phase, Some(api::ProcessPhase::Running));
    assert_eq!(
        got.metadata.generation,
        Some(1),
        "status writes never bump the generation"
    );

    // The status subresource ignores spec changes, and status has a schema of its own.
    rejected(
        "an outputTail of 21 lines",
        apply("operator", json!({"outputTail": vec!["x"; 21]})).await,
        "status.outputTail: Too many: 21: must have at most 20 items",
    );
    let message = rejected(
        "an unknown phase",
        apply("operator", json!({"phase": "Sleeping"})).await,
        "status.phase: Unsupported value: \"Sleeping\": supported values: \"Pending\", \"Running\"",
    );
    assert!(!message.contains("\"null\""), "null is no phase: {message}");
    // (A condition without `type` never reaches validation: server-side apply refuses a list-map
    // element without its key with a 500, so check another required field.)
    rejected(
        "a condition without lastTransitionTime",
        apply(
            "operator",
            json!({"conditions": [{"type": "Ready", "status": "True", "reason": "R", "message": ""}]}),
        )
        .await,
        "status.conditions[0].lastTransitionTime: Required value",
    );
}

#[tokio::test]
async fn server_side_printing_shows_the_printer_columns() {
    let client = client().await;
    let ns = namespace("print");
    let api: Api<SandboxProcess> = Api::namespaced(client.clone(), &ns);
    let spec = SandboxProcessSpec::new(SandboxTarget::pod("box-0"), "/bin/false");
    api.create(&PostParams::default(), &SandboxProcess::new("exited", spec))
        .await
        .unwrap();
    api.patch_status(
        "exited",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": "sandboxes.dev/v1alpha1", "kind": "SandboxProcess",
            "status": {"phase": "Failed", "pid": 99, "exitCode": 1, "exitReason": "exited",
                       "restartCount": 0, "target": {"podName": "box-0", "endpoint": "http://10.0.0.7:9501"}},
        })),
    )
    .await
    .unwrap();

    // What `kubectl get sbp` asks for: the server renders the table from additionalPrinterColumns.
    let request = http::Request::get(format!(
        "/apis/sandboxes.dev/v1alpha1/namespaces/{ns}/sandboxprocesses?includeObject=None"
    ))
    .header(
        http::header::ACCEPT,
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .body(Vec::new())
    .unwrap();
    let table: Value = client.request(request).await.expect("a Table");
    assert_eq!(table["kind"], "Table", "{table}");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name", "Phase", "PID", "Exit", "Target", "Age", "Reason", "Restarts", "Pod"
        ]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "exited");
    assert_eq!(cells[1], "Failed");
    assert_eq!(cells[2], 99);
    assert_eq!(cells[3], 1);
    assert_eq!(cells[4], "http://10.0.0.7:9501");
    assert_eq!(cells[6], "exited");
    assert_eq!(cells[8], "box-0");

    // Short names and the category are what `kubectl get sbp` / `kubectl get sandboxes` resolve.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (name, short) in [
        ("sandboxprocesses.sandboxes.dev", ["sbp", "sbproc"]),
        ("ptysessions.sandboxes.dev", ["ptys", "sbpty"]),
    ] {
        let crd = crds.get(name).await.unwrap();
        let names = crd
            .status
            .and_then(|s| s.accepted_names)
            .expect("accepted names");
        assert_eq!(names.short_names, Some(short.map(String::from).to_vec()));
        assert_eq!(names.categories, Some(vec!["sandboxes".to_string()]));
    }
}

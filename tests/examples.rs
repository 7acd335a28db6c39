//! Every SandboxProcess and PtySession in `examples/` is accepted by the REAL API server
//! (`scripts/control-plane.sh`: etcd + the apiextensions-apiserver) with the generated CRDs:
//! each is created with server-side dry-run (`dryRun=All`), so the OpenAPI schema, the defaults
//! and the CEL rules are all applied, and nothing is stored. The other manifests (Pod, Secret,
//! NetworkPolicy) are validated by `kubernetes-validate` in scripts/chart-check.sh.
//!
//! If the control plane cannot be started the tests FAIL with the script's output: they never
//! skip.

use std::path::Path;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use sandbox_operator::api::{PtySession, SandboxProcess};
use serde_json::Value;

#[path = "common/control_plane.rs"]
mod control_plane;

use control_plane::{client, namespace};

/// Kinds that are not custom resources and may appear in `examples/`.
const OTHER_KINDS: &[&str] = &["Pod", "Secret", "NetworkPolicy", "Service"];

/// Every YAML document in `examples/`, as `(file, document)`.
fn example_documents() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("examples/{name} is not valid YAML: {e}"));
        for doc in parsed.into_iter().filter(|d| !d.is_null()) {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn api_for(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let resource = match kind {
        "SandboxProcess" => ApiResource::erase::<SandboxProcess>(&()),
        "PtySession" => ApiResource::erase::<PtySession>(&()),
        other => panic!("no custom resource kind {other}"),
    };
    Api::namespaced_with(client.clone(), ns, &resource)
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

async fn dry_run_create(client: &Client, ns: &str, file: &str, doc: &Value) -> DynamicObject {
    let kind = doc["kind"].as_str().unwrap();
    let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_string();
    let obj: DynamicObject = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("examples/{file}: {kind} {name} is not an object: {e}"));
    api_for(client, ns, kind)
        .create(&dry_run(), &obj)
        .await
        .unwrap_or_else(|e| {
            panic!("examples/{file}: the API server rejected {kind} {name} (dry run): {e}")
        })
}

#[tokio::test]
async fn every_custom_resource_example_passes_server_side_dry_run() {
    let client = client().await;
    let ns = namespace("examples");
    let docs = example_documents();
    assert!(!docs.is_empty(), "examples/ holds no manifest");

    let mut created = Vec::new();
    for (file, doc) in &docs {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        if api_version != "sandboxes.dev/v1alpha1" {
            assert!(
                OTHER_KINDS.contains(&kind),
                "examples/{file}: unexpected {api_version} {kind}: add it to OTHER_KINDS and to \
                 the kubernetes-validate step of scripts/chart-check.sh"
            );
            continue;
        }
        assert!(
            doc["metadata"]["namespace"].is_null(),
            "examples/{file}: examples carry no namespace (kubectl -n picks it)"
        );
        let obj = dry_run_create(&client, &ns, file, doc).await;
        // The answer is the object as it would be stored: defaults filled in by the schema,
        // and no uid from etcd is needed to tell it was a dry run.
        let spec = &obj.data["spec"];
        assert_eq!(
            spec["sandbox"]["port"], 9501,
            "examples/{file}: schema defaults were not applied: {spec}"
        );
        if kind == "SandboxProcess" {
            assert!(
                spec["stopSignal"].is_string() && spec["state"].is_string(),
                "examples/{file}: SandboxProcess defaults missing: {spec}"
            );
        }
        created.push((kind.to_string(), spec.clone()));
    }

    // The examples the README promises.
    let has = |kind: &str, pred: &dyn Fn(&Value) -> bool| {
        created.iter().any(|(k, s)| k == kind && pred(s))
    };
    assert!(
        has("SandboxProcess", &|s| s["restartPolicy"] == "Always"),
        "no SandboxProcess example with restartPolicy Always (the web server)"
    );
    assert!(
        has("SandboxProcess", &|s| s["restartPolicy"] == "Never"
            && s["command"].is_string()
            && s["state"] == "Running"),
        "no one-shot SandboxProcess example"
    );
    assert!(
        has("SandboxProcess", &|s| s["state"] == "Stopped"),
        "no SandboxProcess example with state Stopped"
    );
    assert!(
        has("SandboxProcess", &|s| s["attach"].is_object()),
        "no inspect-only (attach) SandboxProcess example"
    );
    assert!(has("PtySession", &|_| true), "no PtySession example");

    // Nothing was stored: it was a dry run.
    for kind in ["SandboxProcess", "PtySession"] {
        let list = api_for(&client, &ns, kind)
            .list(&Default::default())
            .await
            .unwrap();
        assert!(
            list.items.is_empty(),
            "a dry run stored {kind} objects: {:?}",
            list.items
                .iter()
                .map(|o| &o.metadata.name)
                .collect::<Vec<_>>()
        );
    }
}

/// The dry runs above would prove little if a dry run skipped validation: the same path rejects
/// an example broken against a CEL rule and against the OpenAPI schema.
#[tokio::test]
async fn dry_run_rejects_broken_examples() {
    let client = client().await;
    let ns = namespace("examples-broken");
    let docs = example_documents();
    let (file, web) = docs
        .iter()
        .find(|(_, d)| d["kind"] == "SandboxProcess" && d["spec"]["command"].is_string())
        .expect("a SandboxProcess example with a command");

    // CEL: command and attach together.
    let mut both = web.clone();
    both["spec"]["attach"] = serde_json::json!({"name": "agent"});
    let obj: DynamicObject = serde_json::from_value(both).unwrap();
    let err = api_for(&client, &ns, "SandboxProcess")
        .create(&dry_run(), &obj)
        .await
        .expect_err("command + attach must be rejected");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err}")
    };
    assert_eq!(status.code, 422, "{file}: {status:?}");

    // Schema: an enum value that does not exist.
    let mut bad_enum = web.clone();
    bad_enum["spec"]["restartPolicy"] = "Sometimes".into();
    let obj: DynamicObject = serde_json::from_value(bad_enum).unwrap();
    let err = api_for(&client, &ns, "SandboxProcess")
        .create(&dry_run(), &obj)
        .await
        .expect_err("restartPolicy Sometimes must be rejected");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err}")
    };
    assert_eq!(status.code, 422, "{file}: {status:?}");
    assert!(
        status.message.contains("restartPolicy"),
        "{file}: {}",
        status.message
    );
}

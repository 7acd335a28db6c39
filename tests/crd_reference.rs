//! `docs/crd-reference.md` must be exactly what `src/api` renders, and the renderer must not
//! silently drop fields: every leaf of every schema has to show up as a row.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use sandbox_operator::api;
use sandbox_operator::api::reference::{kind_markdown, reference_markdown};

#[path = "common/drift.rs"]
mod drift;

const REGENERATE: &str = "regenerate with `cargo run --bin sandbox-operator -- crd --reference > docs/crd-reference.md` and commit the result";

#[test]
fn committed_reference_matches_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/crd-reference.md");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGENERATE}", path.display()));
    drift::assert_same(
        "docs/crd-reference.md is out of date",
        committed.as_bytes(),
        reference_markdown().as_bytes(),
        REGENERATE,
    );
}

/// The section of one kind, so a row found in the other kind's section does not count.
fn section(kind: &str) -> String {
    let crd = api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    kind_markdown(&crd)
}

/// The table row of `path`, which must exist.
fn row<'a>(md: &'a str, path: &str) -> &'a str {
    let start = format!("| `{path}` |");
    md.lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no row for {path}"))
}

#[test]
fn known_rows_are_rendered() {
    let process = section("SandboxProcess");
    let pty = section("PtySession");

    let memory = row(&process, "spec.memoryLimitBytes");
    assert!(memory.contains("minimum: 1048576"), "{memory}");
    assert!(memory.contains("format: int64"), "{memory}");
    assert!(memory.contains("A memory limit in bytes"), "{memory}");

    let restart = row(&process, "spec.restartPolicy");
    for value in ["`Never`", "`OnFailure`", "`Always`"] {
        assert!(restart.contains(value), "{restart}");
    }
    assert!(
        restart.contains("| `\"Never\"` |"),
        "default missing: {restart}"
    );

    let grace = row(&process, "spec.terminationGracePeriodSeconds");
    assert!(grace.contains("| `30` |"), "{grace}");
    assert!(grace.contains("maximum: 3600"), "{grace}");

    let phase = row(&pty, "status.phase");
    for value in ["Pending", "Active", "Exited", "Expired", "Lost"] {
        assert!(phase.contains(&format!("`{value}`")), "{phase}");
    }

    let secret = row(&process, "spec.sandbox.tokenSecretRef.name");
    assert!(secret.contains("string"), "{secret}");
    let env_name = row(&pty, "spec.env[].name");
    assert!(env_name.contains("string"), "{env_name}");
    let args = row(&pty, "spec.args");
    assert!(args.contains("array of string"), "{args}");
    assert!(args.contains("items: maxLength: 32768"), "{args}");

    // CEL rules with their messages and field paths; `||` must be escaped for the table.
    assert!(process.contains("spec.command is required unless spec.attach is set"));
    assert!(process.contains("has(self.command) \\|\\| has(self.attach)"));
    assert!(process.contains("| spec.memoryLimitBytes is immutable | `.memoryLimitBytes` |"));
    assert!(pty.contains("exactly one of podName, serviceName or endpoint must be set"));

    // Identity and printer columns.
    assert!(pty.contains("- Short names: `ptys`, `sbpty`"));
    assert!(process.contains("| Phase | string | `.status.phase` | 0 |"));
}

/// Every leaf property path under `schema`: a property with no properties of its own (a list
/// of objects counts through its items, as `path[].field`).
fn leaves(path: &str, schema: &JSONSchemaProps, out: &mut Vec<String>) {
    let mut has_children = false;
    for (name, child) in schema.properties.iter().flatten() {
        has_children = true;
        leaves(&format!("{path}.{name}"), child, out);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items
        && items.properties.is_some()
    {
        has_children = true;
        leaves(&format!("{path}[]"), items, out);
    }
    // The `[]` step of a list of objects is not a field itself, only its properties are.
    if !has_children && !path.ends_with("[]") {
        out.push(path.to_owned());
    }
}

fn schema_leaves(crd: &CustomResourceDefinition) -> Vec<String> {
    let root = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has an OpenAPI v3 schema");
    let mut out = Vec::new();
    for top in ["spec", "status"] {
        let schema = root
            .properties
            .as_ref()
            .and_then(|p| p.get(top))
            .unwrap_or_else(|| panic!("{} has no {top}", crd.spec.names.kind));
        leaves(top, schema, &mut out);
    }
    out
}

#[test]
fn every_leaf_property_has_a_row() {
    for crd in api::crds() {
        let md = kind_markdown(&crd);
        let all = schema_leaves(&crd);
        assert!(all.len() > 20, "suspiciously few leaves: {all:?}");
        let missing: Vec<&String> = all
            .iter()
            .filter(|p| !md.contains(&format!("| `{p}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: fields without a row in the reference: {missing:?}",
            crd.spec.names.kind
        );
    }
}

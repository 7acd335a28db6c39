//! The committed `crds/*.yaml` must be exactly what `src/api` generates, so a schema change can
//! never ship without its CRDs (and a hand edit of a CRD never survives).

use std::collections::BTreeSet;
use std::path::Path;

use sandbox_operator::api;

#[path = "common/drift.rs"]
mod drift;

const REGENERATE: &str = "regenerate with `cargo run --bin sandbox-operator -- crd --out-dir crds` and commit the result";

#[test]
fn committed_crds_match_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut expected = BTreeSet::new();
    for crd in api::crds() {
        let name = api::crd_file_name(&crd);
        let path = dir.join(&name);
        let generated = api::crd_yaml(&crd).expect("CRD serializes to YAML");
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGENERATE}", path.display()));
        drift::assert_same(
            &format!("crds/{name} is out of date"),
            committed.as_bytes(),
            generated.as_bytes(),
            REGENERATE,
        );
        expected.insert(name);
    }

    // A CRD file left over from a renamed or removed kind would still be installed by
    // `kubectl apply -f crds/`.
    let stray: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| {
            e.expect("readable crds/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .filter(|n| !expected.contains(n))
        .collect();
    assert!(
        stray.is_empty(),
        "crds/ holds files the code does not generate: {stray:?}; delete them, then {REGENERATE}"
    );
}

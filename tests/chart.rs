//! The Helm chart ships the CRDs as copies of `crds/` (`charts/sandbox-operator/files/crds/`,
//! rendered by `templates/crds.yaml`), so a CRD change can never ship in `crds/` without the
//! chart, and a hand edit of the chart's copy never survives. `crds/` itself is checked against
//! the code by tests/crd_drift.rs.

use std::collections::BTreeSet;
use std::path::Path;

#[path = "common/drift.rs"]
mod drift;

const RESYNC: &str = "re-sync the chart with `cp crds/*.yaml charts/sandbox-operator/files/crds/` \
     (after regenerating crds/ with `cargo run --bin sandbox-operator -- crd --out-dir crds`) \
     and commit the result";

fn yaml_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {RESYNC}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect()
}

#[test]
fn chart_crds_are_byte_identical_to_crds_dir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = root.join("crds");
    let chart = root.join("charts/sandbox-operator/files/crds");

    let want = yaml_files(&source);
    let have = yaml_files(&chart);
    assert!(!want.is_empty(), "crds/ holds no CRD");
    assert_eq!(
        have, want,
        "charts/sandbox-operator/files/crds/ does not hold the same files as crds/; {RESYNC}"
    );

    for name in &want {
        let expected = std::fs::read(source.join(name)).unwrap();
        let actual = std::fs::read(chart.join(name)).unwrap();
        drift::assert_same(
            &format!("charts/sandbox-operator/files/crds/{name} differs from crds/{name}"),
            &actual,
            &expected,
            RESYNC,
        );
    }
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart_yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sandbox-operator/Chart.yaml"),
    )
    .expect("charts/sandbox-operator/Chart.yaml");
    let app_version = chart_yaml
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("Chart.yaml has an appVersion");
    assert_eq!(
        app_version,
        env!("CARGO_PKG_VERSION"),
        "charts/sandbox-operator/Chart.yaml appVersion must be the crate's version (the default \
         image tag): set it to \"{}\"",
        env!("CARGO_PKG_VERSION")
    );
}

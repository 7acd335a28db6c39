//! The real local control plane (`scripts/control-plane.sh`: etcd + the
//! apiextensions-apiserver) for tests: started once per test process (the script serializes
//! concurrent starts), left running for the next one; a failure to start FAILS the test.
//! Shared by tests that need it through `#[path = "common/control_plane.rs"] mod control_plane;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use sandbox_operator::api::{self, PtySession, SandboxProcess};

const MANAGER: &str = "sandbox-operator-tests";

/// The kubeconfig of the running control plane, starting it once per test process.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh");
        let run = |cmd: &str| {
            Command::new("bash")
                .arg(&script)
                .arg(cmd)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {} {cmd}: {e}", script.display()))
        };
        if !run("status").status.success() {
            let started = Instant::now();
            let out = run("start");
            assert!(
                out.status.success(),
                "`scripts/control-plane.sh start` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("control plane started in {:.1?}", started.elapsed());
        }
        let out = run("env");
        assert!(
            out.status.success(),
            "`scripts/control-plane.sh env` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Lines are `export NAME=VALUE` with VALUE shell-quoted by printf %q; the paths the
        // script uses need no quoting, and a quoted one would fail loudly below.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .map(PathBuf::from)
            .expect("`control-plane.sh env` prints KUBECONFIG")
    })
}

/// A client of the control plane with both CRDs applied and served. Every test makes its own:
/// a kube `Client` belongs to the tokio runtime that created it, and each test has one.
pub async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig()).expect("readable kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    let client = Client::try_from(config).expect("client from kubeconfig");
    install_crds(&client).await;
    client
}

/// Server-side apply of both CRDs (idempotent, so every test may do it), then wait until each is
/// Established and its objects can be listed.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server rejected CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30 s"))
        .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
    }
    // Established can precede the moment the new resource's handler serves requests.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ns = "default";
    let processes = Api::<SandboxProcess>::namespaced(client.clone(), ns);
    let ptys = Api::<PtySession>::namespaced(client.clone(), ns);
    loop {
        let params = Default::default();
        match (processes.list(&params).await, ptys.list(&params).await) {
            (Ok(_), Ok(_)) => return,
            (a, b) if Instant::now() > deadline => {
                panic!("custom resources not served: {:?} / {:?}", a.err(), b.err())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A namespace of its own for each test (the API server accepts any namespace name), so tests
/// and repeated runs against a long-lived control plane never see each other's objects.
pub fn namespace(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{test}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

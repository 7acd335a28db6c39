//! PtySession benchmark against the real local control plane, the real release
//! `sandbox-daemon` (endpoint target, real PTYs) and the real `sandbox-operator run` binary.
//! Prints one JSON document.
//!
//! Latencies are what a user sees through a watch on the objects: create -> `Active` with a
//! pid, and a `spec.rows/cols` patch -> the observed size in status. The floor is a bare
//! create + get of a PtySession in a namespace no operator watches (one API round trip each).
//! Run: `cargo bench --bench operator_pty` (add `-- --quick` for a short smoke run).

#[path = "../tests/common/control_plane.rs"]
mod control_plane;
#[path = "common/operator.rs"]
mod harness;

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use sandbox_operator::api::{PtyPhase, PtySession, PtySessionSpec, SandboxTarget};
use serde_json::json;

use harness::{TOKEN, ms, rss_kib, start_daemon, start_operator, stats, until};

/// What the watch last saw of each object: when it first was Active with a pid, and the
/// observed size with the instant it was first seen.
#[derive(Default, Clone)]
struct Seen {
    active_at: Option<Instant>,
    size: Option<(i32, i32)>,
    size_at: Option<Instant>,
}

type Board = harness::Board<Seen>;

fn watch(api: Api<PtySession>) -> Board {
    harness::watch_board(api, |obj: &PtySession, seen: &mut Seen, now| {
        let Some(st) = obj.status.as_ref() else {
            return;
        };
        if seen.active_at.is_none() && st.phase == Some(PtyPhase::Active) && st.pid.is_some() {
            seen.active_at = Some(now);
        }
        if let (Some(rows), Some(cols)) = (st.rows, st.cols)
            && seen.size != Some((rows, cols))
        {
            seen.size = Some((rows, cols));
            seen.size_at = Some(now);
        }
    })
}

fn session(name: &str, endpoint: &str) -> PtySession {
    let mut spec = PtySessionSpec::new(SandboxTarget::endpoint(endpoint));
    spec.idle_timeout_seconds = 0;
    PtySession::new(name, spec)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (creates, resizes) = if quick { (5, 5) } else { (50, 50) };
    let kube = control_plane::client().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let (_daemon, base) = start_daemon(dir.path());
    let pp = PostParams::default();

    // Floor: a bare create + get of the same kind, no operator involved.
    let floor_api: Api<PtySession> =
        Api::namespaced(kube.clone(), &control_plane::namespace("bench-pty-floor"));
    let mut floor = Vec::new();
    for i in 0..20 {
        let name = format!("f{i}");
        let t = Instant::now();
        floor_api.create(&pp, &session(&name, &base)).await.unwrap();
        floor_api.get(&name).await.unwrap();
        floor.push(ms(t.elapsed()));
    }

    let ns = control_plane::namespace("bench-pty");
    let api: Api<PtySession> = Api::namespaced(kube.clone(), &ns);
    let board = watch(api.clone());
    let operator = start_operator(&ns, dir.path());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. Create -> Active with a pid, one at a time.
    let mut create_active = Vec::new();
    for i in 0..creates {
        let name = format!("s{i}");
        let t = Instant::now();
        api.create(&pp, &session(&name, &base)).await.unwrap();
        let ok = until(Duration::from_secs(10), || {
            board
                .lock()
                .unwrap()
                .get(&name)
                .is_some_and(|s| s.active_at.is_some())
        })
        .await;
        assert!(ok, "{name}: not Active within 10 s");
        let at = board.lock().unwrap()[&name].active_at.unwrap();
        create_active.push(ms(at - t));
    }

    // 2. Resize -> observed size, alternating sizes on one live session.
    let mut resize_observed = Vec::new();
    for i in 0..resizes {
        let (rows, cols) = if i % 2 == 0 { (40, 120) } else { (24, 80) };
        let t = Instant::now();
        api.patch(
            "s0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rows": rows, "cols": cols}})),
        )
        .await
        .unwrap();
        let ok = until(Duration::from_secs(10), || {
            board.lock().unwrap()["s0"].size == Some((rows, cols))
        })
        .await;
        assert!(ok, "resize {i} to {rows}x{cols} not observed within 10 s");
        let at = board.lock().unwrap()["s0"].size_at.unwrap();
        resize_observed.push(ms(at - t));
    }

    let rss = rss_kib(operator.0.id());
    let report = json!({
        "bench": "operator_pty",
        "quick": quick,
        "floor_create_get": stats(floor),
        "create_to_active_with_pid": stats(create_active),
        "resize_to_observed_size": stats(resize_observed),
        "operator_rss_kib": rss,
        "targets": {
            "create_to_active_p50_ms": 100,
            "resize_to_observed_p50_ms": 100,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    drop(operator);
}

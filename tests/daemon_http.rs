//! Authentication, files, error bodies and process-level behaviour of the daemon binary.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, TOKEN, cmd, eventually, listening_url, sh, zombie_children};
use sandbox_operator::client::{Client, OutputStream};
use sandbox_operator::wire::{ErrorBody, ErrorCode};

async fn error_of(response: reqwest::Response) -> (u16, ErrorBody) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an error body ({e}): {text}"));
    (status, body)
}

#[tokio::test]
async fn requests_without_the_token_are_refused_but_health_is_open() {
    let d = Daemon::start();
    let http = d.http();
    let (status, body) = error_of(http.get(d.url("/api/v1/processes")).send().await.unwrap()).await;
    assert_eq!((status, body.code), (401, ErrorCode::Unauthorized));
    let wrong = http
        .get(d.url("/api/v1/info"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    let (status, body) = error_of(wrong).await;
    assert_eq!((status, body.code), (401, ErrorCode::Unauthorized));
    let anon = Client::new(&d.base, None).unwrap();
    assert!(anon.health().await.unwrap().healthy);
    assert_eq!(
        anon.start(&cmd("true", &[])).await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
    let doc = http.get(d.url("/openapi.json")).send().await.unwrap();
    assert_eq!(doc.status(), 200);
}

#[test]
fn the_daemon_refuses_to_start_without_a_token_or_insecurely_on_a_public_address() {
    let bin = env!("CARGO_BIN_EXE_sandbox-daemon");
    let out = Command::new(bin)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_remove("SANDBOX_DAEMON_TOKEN")
        .env_remove("SANDBOX_DAEMON_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no token configured") && err.contains("--token-file"),
        "{err}"
    );
    let out = Command::new(bin)
        .args(["--insecure-no-auth", "--listen", "0.0.0.0:0"])
        .env_remove("SANDBOX_DAEMON_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[tokio::test]
async fn insecure_mode_serves_loopback_without_auth() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox-daemon"))
        .args(["--insecure-no-auth", "--listen", "127.0.0.1:0"])
        .env_remove("SANDBOX_DAEMON_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let client = Client::new(&listening_url(&mut child), None).unwrap();
    assert!(client.list(&[]).await.unwrap().is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn children_never_inherit_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox-daemon"))
        .args(["--listen", "127.0.0.1:0", "--no-cgroups"])
        .env("SANDBOX_DAEMON_TOKEN", TOKEN)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let client = Client::new(&listening_url(&mut child), Some(TOKEN.into())).unwrap();
    let p = client.start(&cmd("env", &[])).await.unwrap();
    client
        .wait(&p.pid.to_string(), Duration::from_secs(10))
        .await
        .unwrap();
    let out = eventually(Duration::from_secs(5), "env output", || async {
        let out = client
            .output(&p.pid.to_string(), OutputStream::Stdout)
            .await
            .unwrap();
        (!out.lines.is_empty() && out.lines.iter().any(|l| l.starts_with("PATH="))).then_some(out)
    })
    .await;
    assert!(
        out.lines.iter().all(|l| !l.contains(TOKEN)),
        "token leaked into a child's environment"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(!log.is_empty());
    assert!(!log.contains(TOKEN), "token leaked into the log");
}

#[tokio::test]
async fn every_error_has_the_documented_body_and_status() {
    let d = Daemon::start();
    // No connection reuse: the daemon closes a connection whose body it refused unread.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let authed = |m: reqwest::Method, path: &str| http.request(m, d.url(path)).bearer_auth(TOKEN);
    let cases: Vec<(reqwest::RequestBuilder, u16, ErrorCode)> = vec![
        (
            authed(reqwest::Method::GET, "/api/v1/processes/999999"),
            404,
            ErrorCode::NotFound,
        ),
        (
            authed(reqwest::Method::GET, "/api/v1/processes/no-such-name"),
            404,
            ErrorCode::NotFound,
        ),
        (
            authed(reqwest::Method::POST, "/api/v1/processes").body("{not json"),
            400,
            ErrorCode::InvalidRequest,
        ),
        (
            authed(reqwest::Method::POST, "/api/v1/processes").body(""),
            400,
            ErrorCode::InvalidRequest,
        ),
        (
            authed(reqwest::Method::POST, "/api/v1/processes").body(r#"{"args":[]}"#),
            400,
            ErrorCode::InvalidRequest,
        ),
        (
            authed(reqwest::Method::POST, "/api/v1/processes").body(r#"{"command":""}"#),
            400,
            ErrorCode::InvalidRequest,
        ),
        (
            authed(reqwest::Method::POST, "/api/v1/processes")
                .body(r#"{"command":"/no/such/program"}"#),
            400,
            ErrorCode::SpawnFailed,
        ),
        (
            authed(reqwest::Method::POST, "/api/v1/processes")
                .body(r#"{"command":"true","user":"no-such-user-x"}"#),
            400,
            ErrorCode::SpawnFailed,
        ),
        (
            authed(reqwest::Method::POST, "/api/v1/processes")
                .body(r#"{"command":"true","working_dir":"/no/such/dir"}"#),
            400,
            ErrorCode::SpawnFailed,
        ),
        (
            authed(reqwest::Method::POST, "/api/v1/processes").body(format!(
                r#"{{"command":"true","args":["{}"]}}"#,
                "x".repeat(2 << 20)
            )),
            413,
            ErrorCode::PayloadTooLarge,
        ),
        (
            authed(reqwest::Method::GET, "/api/v1/processes/1/follow"),
            404,
            ErrorCode::NotFound,
        ),
        (
            authed(reqwest::Method::GET, "/api/v1/nope"),
            404,
            ErrorCode::NotFound,
        ),
        (
            authed(reqwest::Method::PATCH, "/api/v1/processes"),
            405,
            ErrorCode::MethodNotAllowed,
        ),
        (
            authed(
                reqwest::Method::DELETE,
                "/api/v1/processes/123?grace_ms=abc",
            ),
            400,
            ErrorCode::InvalidRequest,
        ),
        (
            authed(reqwest::Method::GET, "/api/v1/files"),
            400,
            ErrorCode::InvalidRequest,
        ),
        (
            authed(reqwest::Method::GET, "/api/v1/files?path=../etc/passwd"),
            403,
            ErrorCode::PathTraversal,
        ),
        (
            authed(reqwest::Method::PUT, "/api/v1/files?path=/a/../../x").body("x"),
            403,
            ErrorCode::PathTraversal,
        ),
        (
            authed(reqwest::Method::DELETE, "/api/v1/files?path=..").body("x"),
            403,
            ErrorCode::PathTraversal,
        ),
        (
            authed(reqwest::Method::GET, "/api/v1/files/list?path=/x/../.."),
            403,
            ErrorCode::PathTraversal,
        ),
        (
            authed(reqwest::Method::GET, "/api/v1/files?path=/missing"),
            404,
            ErrorCode::NotFound,
        ),
        (
            authed(reqwest::Method::GET, "/api/v1/files?path=/"),
            400,
            ErrorCode::IsDirectory,
        ),
        (
            authed(reqwest::Method::POST, "/api/v1/processes")
                .header("idempotency-key", "")
                .body(r#"{"command":"true"}"#),
            400,
            ErrorCode::InvalidRequest,
        ),
    ];
    for (request, status, code) in cases {
        let built = request.build().unwrap();
        let what = format!("{} {}", built.method(), built.url());
        let (got_status, body) = error_of(http.execute(built).await.unwrap()).await;
        assert_eq!(
            (got_status, body.code),
            (status, code),
            "{what}: {}",
            body.error
        );
        assert!(!body.error.is_empty());
    }
}

#[tokio::test]
async fn files_round_trip_atomically_and_list_sorted() {
    let d = Daemon::start();
    let c = &d.client;
    c.write_file("/work/deep/a.txt", "hello").await.unwrap();
    c.write_file("/work/b.bin", vec![0u8, 255, 1])
        .await
        .unwrap();
    c.write_file("/work/deep/a.txt", "hello again")
        .await
        .unwrap();
    assert_eq!(
        c.read_file("/work/deep/a.txt").await.unwrap(),
        "hello again"
    );
    assert_eq!(
        c.read_file("work/b.bin").await.unwrap().to_vec(),
        vec![0u8, 255, 1]
    );
    assert!(
        d.files_root().join("work/deep/a.txt").exists(),
        "paths resolve under --files-root"
    );
    let list = c.list_files("/work").await.unwrap();
    let names: Vec<(&str, bool)> = list
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.is_dir))
        .collect();
    assert_eq!(names, vec![("deep", true), ("b.bin", false)]);
    assert_eq!(list.entries[1].size, Some(3));
    assert_eq!(list.entries[0].size, None);
    assert!(list.entries[1].modified_at.unwrap() > 1_600_000_000_000);
    // No temp files left behind by the atomic writes.
    let deep = c.list_files("/work/deep").await.unwrap();
    assert_eq!(deep.entries.len(), 1);
    let err = c.list_files("/work/b.bin").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotADirectory));
    let err = c.delete_file("/work/deep").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::IsDirectory));
    let err = c.write_file("/work/deep", "x").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::IsDirectory));
    c.delete_file("/work/b.bin").await.unwrap();
    assert_eq!(
        c.read_file("/work/b.bin").await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(
        c.delete_file("/work/b.bin").await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    // A symlink out of the root is refused.
    std::os::unix::fs::symlink("/etc", d.files_root().join("etc-link")).unwrap();
    assert_eq!(
        c.read_file("/etc-link/hostname").await.unwrap_err().code(),
        Some(ErrorCode::PathTraversal)
    );
}

#[tokio::test]
async fn file_uploads_over_the_limit_are_refused_and_leave_nothing() {
    let d = Daemon::start_with(&["--max-file-bytes", "1000"]);
    let err = d
        .client
        .write_file("/big", vec![b'x'; 5000])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PayloadTooLarge));
    assert_eq!(std::fs::read_dir(d.files_root()).unwrap().count(), 0);
    d.client
        .write_file("/small", vec![b'x'; 1000])
        .await
        .unwrap();
}

#[tokio::test]
async fn info_reports_counts_capabilities_and_a_boot_id_that_changes() {
    let mut d = Daemon::start();
    let p = d.start_cmd("sleep", &["5"]).await;
    let info = d.client.info().await.unwrap();
    assert_eq!((info.running_processes, info.total_processes), (1, 1));
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(
        info.capabilities.persistence && info.capabilities.idempotency && info.capabilities.events
    );
    assert!(!info.capabilities.pid1);
    d.client.kill(&p.pid.to_string(), None).await.unwrap();
    d.restart(libc::SIGTERM);
    let again = d.client.info().await.unwrap();
    assert_ne!(again.boot_id, info.boot_id);
    assert_eq!((again.running_processes, again.total_processes), (0, 1));
}

#[tokio::test]
async fn openapi_document_is_served_and_matches_the_committed_copy() {
    let d = Daemon::start();
    let served = d.client.openapi().await.unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    assert!(served["paths"]["/api/v1/processes"]["post"].is_object());
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/openapi/sandbox-daemon.json"
        ))
        .expect("openapi/sandbox-daemon.json is committed"),
    )
    .unwrap();
    assert!(
        served == committed,
        "openapi/sandbox-daemon.json is stale: regenerate with `cargo run --bin sandbox-daemon -- --print-openapi > openapi/sandbox-daemon.json`"
    );
}

/// The daemon as PID 1 of a fresh PID namespace (as in a container) reaps orphaned grandchildren.
#[tokio::test]
async fn as_pid_1_it_reaps_orphaned_grandchildren() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_sandbox-daemon"))
        .args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(dir.path().join("token"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is needed for this test: apt-get install util-linux");
    let client = Client::new(&listening_url(&mut child), Some(TOKEN.into())).unwrap();
    assert!(client.info().await.unwrap().capabilities.pid1);
    // Find the daemon's host pid: the child of `unshare`.
    let daemon_pid = eventually(Duration::from_secs(5), "daemon pid", || async {
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id()))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<i32>().ok())
            })
    })
    .await;
    for _ in 0..20 {
        let p = client
            .start(&sh("(sleep 0.1; exit 3) & (sleep 0.1) & exit 0"))
            .await
            .unwrap();
        let info = client
            .wait(&p.pid.to_string(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(info.exit_code, Some(0));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    eventually(Duration::from_secs(5), "no zombies under PID 1", || async {
        zombie_children(daemon_pid).is_empty().then_some(())
    })
    .await;
    // `unshare` ignores SIGTERM while it waits: stop the daemon itself, as a container runtime would.
    unsafe { libc::kill(daemon_pid, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "daemon as PID 1 did not shut down cleanly: {status:?}"
    );
}

/// The client retries connection errors with backoff: a daemon that comes up a little late is
/// still reached; an answered error is not retried.
#[tokio::test]
async fn client_retries_connection_errors_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let token_file = dir.path().join("token");
    let client = Client::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN.into())).unwrap();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        Command::new(env!("CARGO_BIN_EXE_sandbox-daemon"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--token-file"])
            .arg(&token_file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    });
    let started = std::time::Instant::now();
    let info = client
        .info()
        .await
        .expect("retried until the daemon was up");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    let mut daemon = late.join().unwrap();
    // 404 is an answer: one request, no retry loop (fast), typed error.
    let t = std::time::Instant::now();
    let err = client.get("999999").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    assert!(t.elapsed() < Duration::from_millis(200));
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // Nothing listening at all: gives up with a connection error after its attempts. (A fresh
    // client: a pooled keep-alive connection that died is *not* retried, since the request may
    // already have been sent.)
    let fresh = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let err = fresh.health().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
}

//! What the operator benchmarks share: the real daemon and operator binaries as child
//! processes, RSS from /proc, and latency statistics.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use serde_json::{Value, json};

use super::control_plane;

/// What a watch saw of each object, by name.
pub type Board<S> = Arc<Mutex<HashMap<String, S>>>;

/// One watch over `api` that hands every applied object, its name's entry on the board and
/// the instant it arrived to `record`.
pub fn watch_board<K, S>(
    api: Api<K>,
    mut record: impl FnMut(&K, &mut S, Instant) + Send + 'static,
) -> Board<S>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    S: Default + Send + 'static,
{
    let board: Board<S> = Arc::default();
    let b = board.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(obj)) = stream.next().await {
            let now = Instant::now();
            let name = obj.meta().name.clone().unwrap_or_default();
            let mut board = b.lock().unwrap();
            record(&obj, board.entry(name).or_default(), now);
        }
    });
    board
}

/// The daemons' bearer token in every operator benchmark.
pub const TOKEN: &str = "bench-token";

/// A child process killed on drop, so a panicking bench leaves nothing behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    /// SIGTERM first: a daemon stops its processes on SIGTERM (a SIGKILLed one would leave the
    /// benchmark's 1000 `sleep`s behind), the operator shuts down; SIGKILL after 15 s.
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_daemon(dir: &std::path::Path) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox-daemon"))
        .args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(dir.join("token"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = format!("http://{}", line.trim().rsplit(' ').next().unwrap());
    (Proc(child), base)
}

pub fn start_operator(namespace: &str, dir: &std::path::Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(control_plane::kubeconfig())
            .args(["--namespace", namespace, "--concurrency", "64"])
            .arg("--daemon-token-file")
            .arg(dir.join("token"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub async fn until<F: FnMut() -> bool>(limit: Duration, mut done: F) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// p50/p99/max in milliseconds.
pub fn stats(mut ms: Vec<f64>) -> Value {
    if ms.is_empty() {
        return Value::Null;
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    json!({ "n": ms.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0) })
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

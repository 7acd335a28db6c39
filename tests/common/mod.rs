//! Test harness: the real `sandbox-daemon` binary on a random loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_operator::api::PtySessionStatus;
use sandbox_operator::client::Client;
use sandbox_operator::controller::daemons::OWNER_UID_LABEL;
use sandbox_operator::wire::{ProcessInfo, PtySessionInfo, StartProcessRequest};

pub const TOKEN: &str = "test-token-0123456789";

/// A running daemon and a client for it.
pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub extra_args: Vec<String>,
}

impl Daemon {
    /// A daemon with a token, a state dir and a files root in a fresh temp dir.
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        std::fs::create_dir_all(dir.path().join("files")).unwrap();
        let extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, base) = spawn_daemon(dir.path(), &extra_args, None);
        let client = Client::new(&base, Some(TOKEN.into())).unwrap();
        Daemon {
            child,
            base,
            client,
            dir,
            extra_args,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn files_root(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the daemon and waits for it to exit; returns its exit status.
    pub fn stop(&mut self, signal: i32) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.child.wait().unwrap()
    }

    /// Starts the daemon again on the same state dir (and port).
    pub fn restart(&mut self, signal: i32) {
        self.stop(signal);
        let port = self.base.rsplit(':').next().unwrap().to_string();
        let (child, base) = spawn_daemon(self.dir.path(), &self.extra_args, Some(&port));
        self.child = child;
        self.base = base;
        self.client = Client::new(&self.base, Some(TOKEN.into())).unwrap();
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The PTY sessions the operator created for the object with `uid` (its owner label).
    pub async fn owned_sessions(&self, uid: &str) -> Vec<PtySessionInfo> {
        self.client
            .list_ptys()
            .await
            .expect("list sessions")
            .into_iter()
            .filter(|s| s.labels.get(OWNER_UID_LABEL).map(String::as_str) == Some(uid))
            .collect()
    }

    /// Starts `command args...` and returns its info.
    pub async fn start_cmd(&self, command: &str, args: &[&str]) -> ProcessInfo {
        self.client.start(&cmd(command, args)).await.expect("start")
    }

    /// Waits for the process to end (at most 20 s).
    pub async fn wait_end(&self, pid: i32) -> ProcessInfo {
        let info = self
            .client
            .wait(&pid.to_string(), Duration::from_secs(20))
            .await
            .unwrap();
        assert!(
            !info.is_running(),
            "process {pid} still running after 20 s: {info:?}"
        );
        info
    }
}

impl Drop for Daemon {
    /// SIGTERM first, so that the daemon stops what it started (a SIGKILLed daemon leaves its
    /// processes behind for the rest of the test run); SIGKILL if that takes over 2 s.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_daemon(dir: &Path, extra: &[String], port: Option<&str>) -> (Child, String) {
    let listen = format!("127.0.0.1:{}", port.unwrap_or("0"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox-daemon"))
        .arg("--listen")
        .arg(&listen)
        .arg("--token-file")
        .arg(dir.join("token"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--files-root")
        .arg(dir.join("files"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sandbox-daemon");
    let base = listening_url(&mut child);
    (child, base)
}

/// The `http://ADDR` a daemon spawned with piped stdout reports on its first line.
pub fn listening_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("the daemon's stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read daemon stdout");
    let addr = line
        .trim()
        .strip_prefix("sandbox-daemon listening on ")
        .unwrap_or_else(|| panic!("daemon did not report its address: {line:?}"));
    format!("http://{addr}")
}

/// A start request for `command args...`.
pub fn cmd(command: &str, args: &[&str]) -> StartProcessRequest {
    StartProcessRequest {
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// `sh -c script`.
pub fn sh(script: &str) -> StartProcessRequest {
    cmd("sh", &["-c", script])
}

/// Polls `check` every 20 ms until it returns Some, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// `(pid, state, ppid, pgrp)` of every process in /proc.
fn proc_stats() -> Vec<(i32, String, i32, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the `(comm)` field: state, ppid, pgrp, ...
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<i32>().ok())
                .unwrap_or(-1)
        };
        if let Some(state) = fields.first() {
            out.push((pid, state.to_string(), num(1), num(2)));
        }
    }
    out
}

/// Pids whose process group is `pgid` (zombies excluded).
pub fn group_members(pgid: i32) -> Vec<i32> {
    proc_stats()
        .into_iter()
        .filter(|(_, st, _, pg)| *pg == pgid && st != "Z")
        .map(|(p, ..)| p)
        .collect()
}

/// Children of `ppid` in state Z (unreaped).
pub fn zombie_children(ppid: i32) -> Vec<i32> {
    proc_stats()
        .into_iter()
        .filter(|(_, st, pp, _)| *pp == ppid && st == "Z")
        .map(|(p, ..)| p)
        .collect()
}

/// A PtySession condition's (status, reason); empty when it is absent.
pub fn pty_condition<'a>(s: &'a PtySessionStatus, type_: &str) -> (&'a str, &'a str) {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
        .unwrap_or_default()
}

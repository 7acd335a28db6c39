//! Process-API benchmark of the real `sandbox-daemon` binary. Prints one JSON document.
//!
//! Every figure is put beside a floor measured in the same run on the same machine: a plain
//! spawn+wait of `/bin/true` and a loopback HTTP round trip with keep-alive.
//!
//! The start figures are measured by a lean load generator, not by this process: the bench
//! re-executes itself (`BENCH_DAEMON_ROLE`) as a small child that speaks HTTP/1.1 keep-alive
//! over `std::net::TcpStream`, one OS thread per client. A reqwest + tokio client in the bench
//! process would compete with the daemon for the same cores and measure itself. The spawn floor
//! comes from such a small child too: spawn cost grows with the spawning process's size, and
//! the floor should be what a minimal program pays. Floor and daemon runs are interleaved in
//! rounds, so background load on a shared machine hits both alike. The daemon's CPU time per
//! start (utime+stime from /proc, before and after a batch) is reported too: it barely moves
//! when other work competes for the cores, unlike wall-clock latency.
//!
//! Run: `cargo bench --bench daemon` (add `-- --quick` for a short smoke run). Environment:
//! `BENCH_DAEMON_ARGS` adds daemon flags, `BENCH_DAEMON_BIN` benchmarks another daemon binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sandbox_operator::client::Client;
use sandbox_operator::wire::StartProcessRequest;
use serde_json::json;

const TOKEN: &str = "bench-token";

struct Daemon {
    child: Child,
    client: Client,
    base: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        // BENCH_DAEMON_BIN runs another build of the daemon (e.g. a saved copy of the previous
        // version) under the same bench, for before/after figures from the same conditions.
        let bin = std::env::var("BENCH_DAEMON_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sandbox-daemon").to_string());
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--token-file"])
            .arg(dir.path().join("token"))
            .args(extra)
            .args(
                std::env::var("BENCH_DAEMON_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = format!("http://{}", line.trim().rsplit(' ').next().unwrap());
        let client = Client::new(&base, Some(TOKEN.into())).unwrap();
        Daemon {
            child,
            client,
            base,
            _dir: dir,
        }
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for Daemon {
    /// SIGTERM first: a daemon stopped that way removes its pool of cgroup leaves, one killed
    /// with SIGKILL leaves them behind in the shared parent cgroup. SIGKILL after 5 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// p50/p99/mean of durations, in microseconds.
fn stats(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let us = |d: Duration| (d.as_secs_f64() * 1e6 * 10.0).round() / 10.0;
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    json!({ "n": samples.len(), "p50_us": us(pick(0.5)), "p99_us": us(pick(0.99)), "mean_us": us(mean) })
}

fn p50(v: &serde_json::Value) -> f64 {
    v["p50_us"].as_f64().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The lean load generator and the spawn floor, run as child processes of the bench.
// ---------------------------------------------------------------------------------------------

/// Selects what a re-executed bench process does instead of the benchmark.
const ROLE_ENV: &str = "BENCH_DAEMON_ROLE";

/// A minimal HTTP/1.1 keep-alive client: one connection, one request at a time. Understands
/// only what the daemon sends back to these requests (a Content-Length body).
struct LeanClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl LeanClient {
    fn connect(addr: &str) -> LeanClient {
        let stream = TcpStream::connect(addr).unwrap();
        // A request is one write and the answer is awaited: Nagle would only add delay.
        stream.set_nodelay(true).unwrap();
        LeanClient {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one prepared request; returns the status code and the body.
    fn call(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        self.stream.write_all(request).unwrap();
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill();
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).unwrap();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
        while self.buf.len() < head_end + length {
            self.fill();
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        (status, body)
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the daemon closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// The requests the load generator can send.
fn lean_request(kind: &str, addr: &str) -> Vec<u8> {
    match kind {
        "start" => {
            let body = r#"{"command":"/bin/true"}"#;
            format!(
                "POST /api/v1/processes HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
        "health" => format!("GET /api/v1/health HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        other => panic!("unknown request kind {other}"),
    }
    .into_bytes()
}

/// Checks an answer: 201 with a real pid for a start, 200 for health.
fn check_answer(kind: &str, status: u16, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    if kind == "health" {
        assert_eq!(status, 200, "health answered {status}: {text}");
        return;
    }
    assert_eq!(status, 201, "start answered {status}: {text}");
    let pid: i64 = text
        .split_once("\"pid\":")
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .unwrap_or(0);
    assert!(pid > 0, "start answer without a pid: {text}");
}

fn env_usize(name: &str) -> usize {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} not set"))
        .parse()
        .unwrap()
}

/// This process's own CPU time and that of its reaped children, in microseconds.
fn rusage_us(who: i32) -> u64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Role `spawn-floor`: `BENCH_N` plain spawn+wait of `/bin/true` from this small,
/// single-threaded process (std uses posix_spawn here, as the daemon does).
fn role_spawn_floor() {
    let n = env_usize("BENCH_N");
    Command::new("/bin/true").status().unwrap();
    let cpu_before = rusage_us(libc::RUSAGE_SELF);
    let children_before = rusage_us(libc::RUSAGE_CHILDREN);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let status = Command::new("/bin/true").status().unwrap();
        samples.push(t.elapsed().as_nanos() as u64);
        assert!(status.success());
    }
    let cpu = rusage_us(libc::RUSAGE_SELF) - cpu_before;
    let children = rusage_us(libc::RUSAGE_CHILDREN) - children_before;
    println!(
        "{}",
        json!({ "samples_ns": samples, "cpu_us": cpu, "children_cpu_us": children })
    );
}

/// Role `spawn-floor-concurrent`: `BENCH_THREADS` threads, each doing `BENCH_N` spawn+wait
/// of `/bin/true`: how many starts per second this machine manages with no daemon at all, the
/// floor of the 16-client throughput.
fn role_spawn_floor_concurrent() {
    let threads = env_usize("BENCH_THREADS");
    let n = env_usize("BENCH_N");
    Command::new("/bin/true").status().unwrap();
    let t = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..n {
                    assert!(Command::new("/bin/true").status().unwrap().success());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({ "spawns": threads * n, "elapsed_s": elapsed, "per_sec": (threads * n) as f64 / elapsed })
    );
}

/// Role `http-load`: `BENCH_CLIENTS` threads, each with its own keep-alive connection to
/// `BENCH_ADDR`, send `BENCH_N` requests of kind `BENCH_KIND` one after another. The clock
/// starts once every client is connected and warmed up.
fn role_http_load() {
    let addr = std::env::var("BENCH_ADDR").unwrap();
    let kind = std::env::var("BENCH_KIND").unwrap();
    let clients = env_usize("BENCH_CLIENTS");
    let per_client = env_usize("BENCH_N");
    let request = std::sync::Arc::new(lean_request(&kind, &addr));
    let ready = std::sync::Arc::new(std::sync::Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, kind, request, ready) =
                (addr.clone(), kind.clone(), request.clone(), ready.clone());
            std::thread::spawn(move || {
                let mut client = LeanClient::connect(&addr);
                // Health needs no auth and starts nothing: a harmless warm-up of the connection.
                let warm = lean_request("health", &addr);
                let (status, body) = client.call(&warm);
                check_answer("health", status, &body);
                ready.wait();
                let mut samples = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    let (status, body) = client.call(&request);
                    samples.push(t.elapsed().as_nanos() as u64);
                    check_answer(&kind, status, &body);
                }
                samples
            })
        })
        .collect();
    ready.wait();
    let t = Instant::now();
    let mut samples = Vec::with_capacity(clients * per_client);
    for thread in threads {
        samples.extend(thread.join().unwrap());
    }
    let elapsed = t.elapsed().as_secs_f64();
    println!("{}", json!({ "samples_ns": samples, "elapsed_s": elapsed }));
}

/// Runs this bench binary again in `role`, with `env`; returns the JSON line it printed.
fn run_role(role: &str, env: &[(&str, String)]) -> serde_json::Value {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, role)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "role {role} failed: {:?}", out.status);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn samples_of(v: &serde_json::Value) -> Vec<Duration> {
    v["samples_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| Duration::from_nanos(n.as_u64().unwrap()))
        .collect()
}

/// utime+stime of process `pid` (all its threads, living and ended), in microseconds.
fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    ticks * 1_000_000 / hz
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Starts `cat file` and follows `/output/follow` to its end; payload MB/s and peak RSS.
async fn follow_run(
    d: &Daemon,
    http: &reqwest::Client,
    file: &std::path::Path,
    limit: Option<u64>,
) -> serde_json::Value {
    let size = std::fs::metadata(file).unwrap().len();
    let req = StartProcessRequest {
        command: "cat".into(),
        args: vec![file.to_string_lossy().into()],
        output_limit_bytes: limit,
        ..Default::default()
    };
    let rss_before = d.rss_kib();
    let pid = d.child.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let t = Instant::now();
    let p = d.client.start(&req).await.unwrap();
    let url = format!("{}/api/v1/processes/{}/output/follow", d.base, p.pid);
    let mut stream = http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut sse_bytes = 0u64;
    let mut lines_delivered = 0u64;
    let mut border: Vec<u8> = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        sse_bytes += chunk.len() as u64;
        // Count across chunk borders: the marker (9 bytes) can be split between two chunks.
        let mut window = std::mem::take(&mut border);
        window.extend_from_slice(&chunk);
        lines_delivered += memchr::memmem::find_iter(&window, b"\ndata: {").count() as u64;
        border = window[window.len().saturating_sub(8)..].to_vec();
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(64)..]);
        if tail.len() > 256 {
            tail.drain(..tail.len() - 128);
        }
        if tail.windows(10).any(|w| w == b"event: eof") {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    sampler.abort();
    let info = d.client.get(&p.pid.to_string()).await.unwrap();
    // Every 77-byte line travels in one SSE event; count the events to know what arrived.
    let lines_total = size / 77;
    let delivered_payload = lines_delivered * 77;
    json!({
        "output_limit_bytes": limit,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "lines_delivered": lines_delivered,
        "delivered_payload_mb_per_sec": ((delivered_payload as f64 / 1e6 / secs) * 10.0).round() / 10.0,
        "sse_bytes": sse_bytes,
        "sse_mb_per_sec": ((sse_bytes as f64 / 1e6 / secs) * 10.0).round() / 10.0,
        "lines_total": lines_total,
        "retention_truncated": info.output.truncated,
        "rss_before_kib": rss_before,
        "rss_peak_kib": peak.load(std::sync::atomic::Ordering::Relaxed),
    })
}

fn main() {
    match std::env::var(ROLE_ENV).ok().as_deref() {
        None => {}
        Some("spawn-floor") => return role_spawn_floor(),
        Some("spawn-floor-concurrent") => return role_spawn_floor_concurrent(),
        Some("http-load") => return role_http_load(),
        Some(other) => panic!("unknown {ROLE_ENV} {other}"),
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

async fn bench() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let mut report = serde_json::Map::new();
    report.insert(
        "machine".into(),
        json!({ "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) }),
    );

    let d = Daemon::start(&[]);
    let http = reqwest::Client::new();
    let addr = d.base.trim_start_matches("http://").to_string();

    // ---- idle RSS ----
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = d.rss_kib();

    // ---- floors and sequential start latency, interleaved in rounds ----
    let n = 1000 / scale;
    let rounds = 4;
    let per_round = n / rounds;
    let load = |kind: &str, clients: usize, per_client: usize| {
        run_role(
            "http-load",
            &[
                ("BENCH_ADDR", addr.clone()),
                ("BENCH_KIND", kind.into()),
                ("BENCH_CLIENTS", clients.to_string()),
                ("BENCH_N", per_client.to_string()),
            ],
        )
    };
    // Warm-up: the daemon's first starts fill its cgroup leaf pool and fault in its code.
    load("start", 1, 20);
    let (mut spawn_samples, mut rtt_samples, mut start_samples) = (vec![], vec![], vec![]);
    let (mut floor_cpu, mut floor_children_cpu, mut daemon_cpu) = (0, 0, 0);
    for _ in 0..rounds {
        let floor = run_role("spawn-floor", &[("BENCH_N", per_round.to_string())]);
        spawn_samples.extend(samples_of(&floor));
        floor_cpu += floor["cpu_us"].as_u64().unwrap();
        floor_children_cpu += floor["children_cpu_us"].as_u64().unwrap();
        rtt_samples.extend(samples_of(&load("health", 1, per_round)));
        let before = cpu_us(d.child.id());
        start_samples.extend(samples_of(&load("start", 1, per_round)));
        daemon_cpu += cpu_us(d.child.id()) - before;
    }
    let starts_done = (rounds * per_round) as f64;
    // The old floor, for comparison: spawn+wait from this (large, multi-threaded) process.
    let mut in_bench = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        Command::new("/bin/true").status().unwrap();
        in_bench.push(t.elapsed());
    }
    let floor_spawn = stats(spawn_samples);
    let floor_http = stats(rtt_samples);
    let start = stats(start_samples);
    report.insert(
        "floor".into(),
        json!({
            "spawn_wait_bin_true": floor_spawn,
            // CPU of the spawning process alone, and of /bin/true itself (exec, exit).
            "spawn_wait_cpu_us_per_spawn": round1(floor_cpu as f64 / starts_done),
            "bin_true_cpu_us_per_run": round1(floor_children_cpu as f64 / starts_done),
            "http_roundtrip_keepalive": floor_http,
            "spawn_wait_bin_true_from_bench_process": stats(in_bench),
        }),
    );
    let spawn_ratio = p50(&start) / p50(&floor_spawn);
    let both_ratio = p50(&start) / (p50(&floor_spawn) + p50(&floor_http));
    report.insert(
        "start_latency_bin_true".into(),
        json!({
            "stats": start,
            "rounds": rounds,
            "daemon_cpu_us_per_start": round1(daemon_cpu as f64 / starts_done),
            "p50_ratio_to_spawn_wait_floor": (spawn_ratio * 100.0).round() / 100.0,
            "p50_ratio_to_spawn_plus_http_floor": (both_ratio * 100.0).round() / 100.0,
            "target_ratio": 1.2,
        }),
    );

    // ---- list of ~1000 ----
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list_url = format!("{}/api/v1/processes", d.base);
    let list_at = |count: usize| {
        let http = http.clone();
        let url = list_url.clone();
        async move {
            let mut v = Vec::new();
            let mut len = 0;
            for _ in 0..(50 / scale).max(5) {
                let t = Instant::now();
                let body = http
                    .get(&url)
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                v.push(t.elapsed());
                len = body.len();
            }
            json!({ "tracked": count, "response_bytes": len, "stats": stats(v) })
        }
    };
    let tracked = d.client.list(&[]).await.unwrap().len();
    report.insert("list_1000".into(), list_at(tracked).await);

    // ---- start throughput, 16 clients, filling up to ~10000 tracked ----
    let total = (10_000 - tracked.min(10_000)) / scale;
    let per_client = total / 16;
    // The floor: the same number of spawns by 16 threads of a small process, no daemon; before
    // and after the daemon run, so both see the same machine.
    let concurrent_floor = || {
        run_role(
            "spawn-floor-concurrent",
            &[
                ("BENCH_THREADS", "16".into()),
                ("BENCH_N", (per_client / 2).max(1).to_string()),
            ],
        )["per_sec"]
            .as_f64()
            .unwrap()
    };
    let floor_before = concurrent_floor();
    let before = cpu_us(d.child.id());
    let run = load("start", 16, per_client);
    let cpu = cpu_us(d.child.id()) - before;
    let floor_after = concurrent_floor();
    let floor_per_sec = (floor_before + floor_after) / 2.0;
    let starts = per_client * 16;
    let starts_per_sec = starts as f64 / run["elapsed_s"].as_f64().unwrap();
    report.insert(
        "start_throughput_16_clients".into(),
        json!({
            "starts": starts,
            "per_sec": starts_per_sec.round(),
            "floor_16_threads_spawn_wait_per_sec": floor_per_sec.round(),
            "ratio_to_floor": (starts_per_sec / floor_per_sec * 100.0).round() / 100.0,
            "latency": stats(samples_of(&run)),
            "daemon_cpu_us_per_start": round1(cpu as f64 / starts as f64),
            "target_per_sec": 1500,
        }),
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let tracked = d.client.list(&[]).await.unwrap().len();
    report.insert("list_10000".into(), list_at(tracked).await);
    let rss_after = d.rss_kib();
    report.insert(
        "rss".into(),
        json!({
            "idle_kib": idle_rss,
            "after_exited_kib": rss_after,
            "exited_records": tracked,
            "per_exited_record_bytes": ((rss_after.saturating_sub(idle_rss)) * 1024) / tracked.max(1) as u64,
            "targets": { "idle_kib": 15 * 1024, "per_record_bytes": 8192 },
        }),
    );
    drop(d);

    // ---- exit statuses are never lost ----
    let d = Daemon::start(&[]);
    let count = 10_000 / scale;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let client = d.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut started = Vec::new();
            for i in (c..count).step_by(16) {
                let code = (i % 256) as i32;
                let req = StartProcessRequest {
                    command: "/bin/sh".into(),
                    args: vec!["-c".into(), format!("exit {code}")],
                    ..Default::default()
                };
                let p = client.start(&req).await.unwrap();
                started.push((p.pid, code));
            }
            started
        }));
    }
    let mut expected = std::collections::HashMap::new();
    for task in tasks {
        for (pid, code) in task.await.unwrap() {
            expected.insert(pid, code);
        }
    }
    let (wrong, still_running) = loop {
        let all = d.client.list(&[]).await.unwrap();
        let running = all.iter().filter(|p| p.is_running()).count();
        if running == 0 {
            let wrong = all
                .iter()
                .filter(|p| p.exit_code != expected.get(&p.pid).copied())
                .count();
            break (wrong, 0);
        }
        if t.elapsed() > Duration::from_secs(120) {
            break (0, running);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report.insert("exit_status_check".into(), json!({ "starts": count, "wrong_exit_codes": wrong, "never_ended": still_running, "seconds": t.elapsed().as_secs_f64() }));
    drop(d);

    // ---- follow throughput of 200 MB of base64 lines ----
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.b64");
    let target_bytes: usize = 200_000_000 / scale;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut line = [0u8; 77];
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut written = 0;
        while written < target_bytes {
            for b in line.iter_mut().take(76) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = alphabet[(x & 63) as usize];
            }
            line[76] = b'\n';
            f.write_all(&line).unwrap();
            written += 77;
        }
    }
    let size = std::fs::metadata(&file).unwrap().len();
    // Memory first (records keep their retained output, so the order matters): the default
    // retention; a follower slower than `cat` skips lines (the child is never blocked), and RSS
    // stays bounded by the limit.
    let bounded = follow_run(&d, &http, &file, None).await;
    // Throughput: retention big enough that the follower never loses lines to the limit.
    let big = follow_run(&d, &http, &file, Some(size * 3)).await;
    report.insert(
        "follow_throughput".into(),
        json!({
            "payload_bytes": size,
            "line_bytes": 77,
            "target_mb_per_sec": 200,
            "unbounded_retention": big,
            "default_retention_4mib": bounded,
        }),
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(report)).unwrap()
    );
}

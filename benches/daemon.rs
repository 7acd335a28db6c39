//! Process-API benchmark of the real `sandbox-daemon` binary. Prints one JSON document.
//!
//! Every figure is put beside a floor measured in the same run on the same machine: a plain
//! spawn+wait of `/bin/true` (std, posix_spawn) and a loopback HTTP round trip with keep-alive.
//! Run: `cargo bench --bench daemon` (add `-- --quick` for a short smoke run).

use std::io::{BufRead, BufReader, Write};
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox-daemon"))
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
    fn drop(&mut self) {
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

fn true_req() -> StartProcessRequest {
    StartProcessRequest {
        command: "/bin/true".into(),
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let mut report = serde_json::Map::new();
    report.insert(
        "machine".into(),
        json!({ "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) }),
    );

    // ---- floors ----
    let n = 1000 / scale;
    let mut spawn_wait = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        Command::new("/bin/true").status().unwrap();
        spawn_wait.push(t.elapsed());
    }
    let floor_spawn = stats(spawn_wait);

    let d = Daemon::start(&[]);
    let http = reqwest::Client::new();
    let health = format!("{}/api/v1/health", d.base);
    http.get(&health).send().await.unwrap();
    let mut rtt = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        http.get(&health)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        rtt.push(t.elapsed());
    }
    let floor_http = stats(rtt);
    report.insert(
        "floor".into(),
        json!({ "spawn_wait_bin_true": floor_spawn, "http_roundtrip_keepalive": floor_http }),
    );

    // ---- idle RSS ----
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = d.rss_kib();

    // ---- start latency, sequential ----
    let req = true_req();
    d.client.start(&req).await.unwrap();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        d.client.start(&req).await.unwrap();
        lat.push(t.elapsed());
    }
    let start = stats(lat);
    let ratio = p50(&start) / p50(&floor_spawn);
    report.insert("start_latency_bin_true".into(), json!({ "stats": start, "p50_ratio_to_spawn_wait_floor": (ratio * 100.0).round() / 100.0, "target_ratio": 1.2 }));

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
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = d.client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_client {
                client.start(&true_req()).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = t.elapsed();
    let starts_per_sec = (per_client * 16) as f64 / elapsed.as_secs_f64();
    report.insert("start_throughput_16_clients".into(), json!({ "starts": per_client * 16, "per_sec": starts_per_sec.round(), "target_per_sec": 1500 }));

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

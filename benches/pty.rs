//! PTY benchmark against the real daemon (release build): keystroke round trip over the
//! WebSocket versus the same round trip on a bare PTY pair (the floor), output throughput over
//! one WebSocket (against a bare PTY read and against a one-thread relay of it over loopback
//! TCP), and daemon memory per idle session. Prints one JSON object.
//!
//! `cargo bench --bench pty` (`PTY_BENCH_RUNS`: repetitions; `PTY_BENCH_DAEMON`: another
//! daemon binary to measure; `PTY_BENCH_ONLY`: `round_trip`, `throughput` or `memory` alone)

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_operator::client::{Client, PtyAttach, PtyEvent};
use sandbox_operator::wire::CreatePtyRequest;
use serde_json::json;

const ROUND_TRIPS: usize = 1000;
const WARMUP: usize = 100;
const THROUGHPUT_BYTES: usize = 50 * 1000 * 1000;
const IDLE_SESSIONS: usize = 50;
/// Raw mode: every byte reaches `cat` at once and comes back untranslated, without echo.
const RAW_CAT: &str = "stty raw -echo; printf R; exec cat";

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let result = runtime.block_on(run(&daemon));
    daemon.stop();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
}

/// Each measurement is repeated (the machine is shared and noisy); `PTY_BENCH_RUNS` overrides.
fn runs() -> usize {
    std::env::var("PTY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// The run whose `key` is the median.
fn median_by(
    mut results: Vec<serde_json::Value>,
    key: impl Fn(&serde_json::Value) -> f64,
) -> serde_json::Value {
    results.sort_by(|a, b| key(a).total_cmp(&key(b)));
    results.swap_remove(results.len() / 2)
}

async fn run(daemon: &Daemon) -> serde_json::Value {
    let client = Client::new(&daemon.base, Some(TOKEN.into())).unwrap();
    let pid = daemon.pid();
    // `PTY_BENCH_ONLY=round_trip|throughput|memory` measures one part alone (quicker A/Bs).
    let only = std::env::var("PTY_BENCH_ONLY").ok();
    let wanted = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let (mut ws, mut floor) = (vec![], vec![]);
    let (mut ws_tp, mut floor_tp, mut relay_tp) = (vec![], vec![], vec![]);
    for _ in 0..runs() {
        // Interleaved, so that both sides of each comparison see the same machine.
        if wanted("round_trip") {
            floor.push(
                tokio::task::spawn_blocking(floor_round_trips)
                    .await
                    .unwrap(),
            );
            ws.push(ws_round_trips(&client, pid).await);
        }
        if wanted("throughput") {
            floor_tp.push(tokio::task::spawn_blocking(floor_throughput).await.unwrap());
            relay_tp.push(tokio::task::spawn_blocking(relay_throughput).await.unwrap());
            ws_tp.push(ws_throughput(&client, pid).await);
        }
    }
    let mut result = json!({
        "runs": runs(),
        "targets": {"p50_round_trip_us": 80, "throughput_mb_s": 200, "idle_session_kib": 1536},
    });
    if wanted("round_trip") {
        let p50 = |v: &serde_json::Value| v["p50"].as_f64().unwrap_or(f64::MAX);
        result["round_trip_us"] = json!({
            "websocket": median_by(ws.clone(), p50),
            "bare_pty_floor": median_by(floor.clone(), p50),
            "websocket_p50_each_run": ws.iter().map(p50).collect::<Vec<_>>(),
            "bare_pty_floor_p50_each_run": floor.iter().map(p50).collect::<Vec<_>>(),
        });
    }
    if wanted("throughput") {
        let mb_s_of = |v: &serde_json::Value| v["mb_s"].as_f64().unwrap_or(0.0);
        let ws_each: Vec<f64> = ws_tp.iter().map(mb_s_of).collect();
        // The machine's speed swings between runs by more than the differences measured, so
        // each run is compared with the relay floor measured just before it.
        let ratios: Vec<f64> = ws_each
            .iter()
            .zip(&relay_tp)
            .map(|(ws, relay)| (ws / relay * 100.0).round() / 100.0)
            .collect();
        result["throughput_mb_s"] = json!({
            "websocket": median_by(ws_tp.clone(), mb_s_of),
            "bare_pty_floor": median(floor_tp.clone()),
            "relay_floor": median(relay_tp.clone()),
            "websocket_over_relay_floor": median(ratios.clone()),
            "websocket_each_run": ws_each,
            "bare_pty_floor_each_run": floor_tp,
            "relay_floor_each_run": relay_tp,
            "websocket_over_relay_floor_each_run": ratios,
            "bytes": THROUGHPUT_BYTES,
        });
    }
    if wanted("memory") {
        result["idle_session_memory"] = idle_memory(&client, pid).await;
    }
    result
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

// ---- round trips ----

fn percentiles(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        (samples[i].as_nanos() as f64 / 100.0).round() / 10.0
    };
    json!({"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": at(1.0), "n": samples.len()})
}

async fn ws_round_trips(client: &Client, daemon_pid: i32) -> serde_json::Value {
    let created = client.create_pty(&sh(RAW_CAT)).await.unwrap();
    let mut attach = client
        .attach_pty(&created.session_id, &created.token)
        .await
        .unwrap();
    read_exact(&mut attach, 1).await;
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    let mut cpu = None;
    for i in 0..WARMUP + ROUND_TRIPS {
        if i == WARMUP {
            cpu = Some(CpuClock::start(daemon_pid));
        }
        let start = Instant::now();
        attach.send_input([b'a' + (i % 26) as u8]).await.unwrap();
        read_exact(&mut attach, 1).await;
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    let (daemon_us, bench_us) = cpu.unwrap().per_op_us(ROUND_TRIPS);
    client.kill_pty(&created.session_id).await.unwrap();
    let mut result = percentiles(samples);
    result["daemon_cpu_us_per_op"] = json!(daemon_us);
    result["bench_cpu_us_per_op"] = json!(bench_us);
    result
}

async fn read_exact(attach: &mut PtyAttach, n: usize) {
    let mut got = 0;
    while got < n {
        match attach.read().await.unwrap() {
            PtyEvent::Output(bytes) => got += bytes.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The same round trip on a PTY pair owned by this process: write a byte to the master, read
/// the byte `cat` writes back.
fn floor_round_trips() -> serde_json::Value {
    let (master, _child) = bare_pty(RAW_CAT);
    let mut byte = [0u8; 1];
    read_blocking(&master, &mut byte);
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let start = Instant::now();
        write_blocking(&master, &[b'a' + (i % 26) as u8]);
        read_blocking(&master, &mut byte);
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    percentiles(samples)
}

// ---- throughput ----

fn flood_script() -> String {
    format!("stty raw -echo; printf R; read x; head -c {THROUGHPUT_BYTES} /dev/zero")
}

async fn ws_throughput(client: &Client, daemon_pid: i32) -> serde_json::Value {
    let created = client.create_pty(&sh(&flood_script())).await.unwrap();
    let mut attach = client
        .attach_pty(&created.session_id, &created.token)
        .await
        .unwrap();
    read_exact(&mut attach, 1).await;
    let cpu = CpuClock::start(daemon_pid);
    let start = Instant::now();
    attach.send_input("\n").await.unwrap();
    let mut bytes = 0usize;
    let mut frames = 0usize;
    // Stopped at the last byte, as the floors are; the exit and the close come after.
    let mut elapsed = None;
    let close = loop {
        match attach.read().await.unwrap() {
            PtyEvent::Output(chunk) => {
                bytes += chunk.len();
                frames += 1;
                if bytes >= THROUGHPUT_BYTES && elapsed.is_none() {
                    elapsed = Some(start.elapsed());
                }
            }
            PtyEvent::Exit(_) => {}
            PtyEvent::Closed(close) => break close,
        }
    };
    let to_close = start.elapsed();
    let elapsed = elapsed.unwrap_or(to_close);
    // CPU per MB (1e6 bytes): robust against other load on the machine, unlike MB/s.
    let (daemon_us, bench_us) = cpu.per_op_us((bytes / 1_000_000).max(1));
    json!({
        "daemon_cpu_us_per_mb": daemon_us,
        "bench_cpu_us_per_mb": bench_us,
        "mb_s": mb_s(bytes, elapsed),
        "received_bytes": bytes,
        "frames": frames,
        "seconds": elapsed.as_secs_f64(),
        "seconds_to_close": to_close.as_secs_f64(),
        "close": format!("{:?} {}", close.code, close.reason),
    })
}

fn floor_throughput() -> f64 {
    let (total, start) = read_flood(|_| {});
    mb_s(total, start.elapsed())
}

/// The reads of [`floor_throughput`], each relayed at once over one loopback TCP connection
/// to a reader thread: the least any daemon that forwards terminal output over a socket must
/// do (one thread, no framing, no copies, no other work).
fn relay_throughput() -> f64 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0usize;
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break total;
            }
            total += n;
        }
    });
    let mut out = std::net::TcpStream::connect(addr).unwrap();
    let (total, start) = read_flood(|chunk| out.write_all(chunk).unwrap());
    drop(out);
    let received = reader.join().unwrap();
    assert_eq!(received, total);
    mb_s(total, start.elapsed())
}

/// Runs [`flood_script`] on a bare PTY and reads its output with blocking reads of up to
/// 64 KiB, handing each to `forward`; returns the bytes read and when the flood was started.
fn read_flood(mut forward: impl FnMut(&[u8])) -> (usize, Instant) {
    let (master, _child) = bare_pty(&flood_script());
    let mut buf = vec![0u8; 64 << 10];
    read_blocking(&master, &mut buf[..1]);
    let start = Instant::now();
    write_blocking(&master, b"\n");
    let mut total = 0usize;
    while total < THROUGHPUT_BYTES {
        // SAFETY: read(2) into a valid buffer.
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        forward(&buf[..n as usize]);
        total += n as usize;
    }
    (total, start)
}

/// MB (1e6 bytes) per second, to one decimal.
fn mb_s(bytes: usize, elapsed: Duration) -> f64 {
    (bytes as f64 / 1e6 / elapsed.as_secs_f64() * 10.0).round() / 10.0
}

// ---- CPU time ----

/// CPU time of the daemon and of this process over a measurement.
struct CpuClock {
    daemon_pid: i32,
    daemon: u64,
    bench: u64,
}

impl CpuClock {
    fn start(daemon_pid: i32) -> CpuClock {
        CpuClock {
            daemon_pid,
            daemon: cpu_ns(&daemon_pid.to_string()),
            bench: cpu_ns("self"),
        }
    }

    /// (daemon, bench) CPU microseconds per operation since `start`.
    fn per_op_us(&self, ops: usize) -> (f64, f64) {
        let per = |ns: u64| (ns as f64 / 1e3 / ops as f64 * 10.0).round() / 10.0;
        (
            per(cpu_ns(&self.daemon_pid.to_string()).saturating_sub(self.daemon)),
            per(cpu_ns("self").saturating_sub(self.bench)),
        )
    }
}

/// On-CPU nanoseconds of every live thread of a process (/proc/<pid>/task/*/schedstat), which
/// is far finer than the clock ticks of /proc/<pid>/stat.
fn cpu_ns(pid: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

// ---- memory ----

async fn idle_memory(client: &Client, daemon_pid: i32) -> serde_json::Value {
    // One session first, so one-time allocations (runtime, journal, cgroup probing) are not
    // charged to the sessions.
    let warm = client.create_pty(&bash()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.kill_pty(&warm.session_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(daemon_pid);
    let mut ids = Vec::new();
    for _ in 0..IDLE_SESSIONS {
        ids.push(client.create_pty(&bash()).await.unwrap().session_id);
    }
    // Let every shell print its prompt.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(daemon_pid);
    for id in &ids {
        client.kill_pty(id).await.unwrap();
    }
    let per = (after as f64 - before as f64) / IDLE_SESSIONS as f64;
    json!({
        "sessions": IDLE_SESSIONS,
        "daemon_rss_before_kib": before,
        "daemon_rss_after_kib": after,
        "per_session_kib": (per * 10.0).round() / 10.0,
    })
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// ---- helpers ----

fn sh(script: &str) -> CreatePtyRequest {
    CreatePtyRequest {
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        idle_timeout_secs: Some(0),
        ..Default::default()
    }
}

fn bash() -> CreatePtyRequest {
    let mut req = CreatePtyRequest {
        command: "bash".into(),
        args: vec!["--norc".into(), "--noprofile".into(), "-i".into()],
        idle_timeout_secs: Some(0),
        ..Default::default()
    };
    req.env.insert("PS1".into(), "$ ".into());
    req
}

/// A PTY pair with `sh -c script` on the slave (blocking master).
fn bare_pty(script: &str) -> (OwnedFd, Child) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the out-pointers.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: fresh fds from openpty.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let fd = master.as_raw_fd();
    // SAFETY: async-signal-safe calls only.
    unsafe {
        cmd.pre_exec(move || {
            libc::close(fd);
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        })
    };
    let child = cmd.spawn().unwrap();
    drop(cmd);
    (master, child)
}

fn read_blocking(fd: &OwnedFd, buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: read(2) into a valid buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        assert!(n > 0, "read: {}", std::io::Error::last_os_error());
        got += n as usize;
    }
}

fn write_blocking(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: write(2) from a valid buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

// ---- the daemon ----

const TOKEN: &str = "bench-token-0123456789";

struct Daemon {
    child: Child,
    base: String,
}

impl Daemon {
    fn start(dir: &std::path::Path) -> Daemon {
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        // `PTY_BENCH_DAEMON` runs another build (say, the previous commit's) under the same
        // client, for A/B comparisons.
        let binary = std::env::var("PTY_BENCH_DAEMON")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sandbox-daemon").to_owned());
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--token-file"])
            .arg(dir.join("token"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--files-root")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sandbox-daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("sandbox-daemon listening on ")
            .unwrap_or_else(|| panic!("no address from the daemon: {line:?}"))
            .to_owned();
        Daemon {
            child,
            base: format!("http://{addr}"),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stop(&mut self) {
        // SAFETY: kill(2).
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

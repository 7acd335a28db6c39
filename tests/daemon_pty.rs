//! PTY sessions against the real daemon: real pseudo-terminals, a real WebSocket client.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, TOKEN, eventually};
use futures_util::{SinkExt, StreamExt};
use sandbox_operator::client::{ClientError, EventItem, PtyAttach, PtyEvent};
use sandbox_operator::wire::pty::frame;
use sandbox_operator::wire::{
    CreatePtyRequest, CreatePtyResponse, ErrorCode, EventKind, PtyEndReason, PtySessionInfo,
};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

const LIMIT: Duration = Duration::from_secs(15);

fn pty(command: &str, args: &[&str]) -> CreatePtyRequest {
    CreatePtyRequest {
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// An interactive bash without user rc files and with a fixed prompt.
fn bash() -> CreatePtyRequest {
    let mut req = pty("bash", &["--norc", "--noprofile", "-i"]);
    req.env.insert("PS1".into(), "$ ".into());
    req
}

fn sh(script: &str) -> CreatePtyRequest {
    pty("sh", &["-c", script])
}

/// Reads output until it contains `needle`; returns everything read.
async fn read_until(attach: &mut PtyAttach, needle: &str) -> String {
    let mut seen = Vec::new();
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, attach.read())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within {LIMIT:?}; output so far: {:?}",
                    String::from_utf8_lossy(&seen)
                )
            })
            .unwrap();
        match event {
            PtyEvent::Output(bytes) => {
                seen.extend_from_slice(&bytes);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    return String::from_utf8_lossy(&seen).into_owned();
                }
            }
            other => panic!(
                "{other:?} before {needle:?}; output so far: {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

/// Reads until the close; returns (output, exit frame code, close code, close reason).
async fn read_to_close(attach: &mut PtyAttach) -> (Vec<u8>, Option<i32>, Option<u16>, String) {
    let mut output = Vec::new();
    let mut exit = None;
    loop {
        let event = tokio::time::timeout(LIMIT, attach.read())
            .await
            .expect("the connection did not close")
            .unwrap();
        match event {
            PtyEvent::Output(bytes) => output.extend_from_slice(&bytes),
            PtyEvent::Exit(code) => exit = Some(code),
            PtyEvent::Closed(close) => return (output, exit, close.code, close.reason),
        }
    }
}

/// Creates a session and attaches to it (READY sent).
async fn create_attached(d: &Daemon, req: &CreatePtyRequest) -> (CreatePtyResponse, PtyAttach) {
    let created = d.client.create_pty(req).await.unwrap();
    let attach = d
        .client
        .attach_pty(&created.session_id, &created.token)
        .await
        .unwrap();
    (created, attach)
}

async fn wait_ended(d: &Daemon, id: &str) -> PtySessionInfo {
    eventually(LIMIT, "the session to end", || async {
        let info = d.client.get_pty(id).await.unwrap();
        (!info.is_alive).then_some(info)
    })
    .await
}

fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A raw WebSocket request to `/pty/{id}/ws`, for the token variants the client never sends.
async fn raw_attach(
    d: &Daemon,
    id: &str,
    query_token: Option<&str>,
    header_token: Option<&str>,
    bearer: bool,
) -> Result<(), (u16, String)> {
    let mut url = format!("{}/api/v1/pty/{id}/ws", d.base.replace("http://", "ws://"));
    if let Some(t) = query_token {
        url.push_str(&format!("?token={t}"));
    }
    let mut request = url.into_client_request().unwrap();
    if let Some(t) = header_token {
        request
            .headers_mut()
            .insert("x-pty-token", t.parse().unwrap());
    }
    if bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, _)) => {
            let _ = socket.close(None).await;
            Ok(())
        }
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            Err((
                response.status().as_u16(),
                json["code"].as_str().unwrap().to_owned(),
            ))
        }
        Err(e) => panic!("unexpected handshake failure: {e}"),
    }
}

#[tokio::test]
async fn typed_input_is_echoed_and_exit_code_arrives_as_frame_and_close_reason() {
    let d = Daemon::start();
    let created = d.client.create_pty(&bash()).await.unwrap();
    assert!(!created.session_id.is_empty() && created.token.len() >= 32);
    let mut a = d
        .client
        .attach_pty(&created.session_id, &created.token)
        .await
        .unwrap();
    read_until(&mut a, "$ ").await;
    a.send_input("echo hi-$((6*7))\r").await.unwrap();
    // The typed line is echoed by the terminal, the result is computed by the shell.
    let out = read_until(&mut a, "hi-42").await;
    assert!(out.contains("echo hi-$((6*7))"), "{out:?}");
    a.send_input("exit 7\r").await.unwrap();
    let (_, exit, code, reason) = read_to_close(&mut a).await;
    assert_eq!(exit, Some(7));
    assert_eq!(code, Some(1000));
    assert_eq!(reason, "exit:7");
    let info = wait_ended(&d, &created.session_id).await;
    assert_eq!(info.exit_code, Some(7));
    assert_eq!(info.end_reason, Some(PtyEndReason::Exited));
    assert!(info.ended_at.unwrap() >= info.created_at);
    assert!(!info.oom_killed);
    assert!(info.input_count >= 2, "{info:?}");
}

#[tokio::test]
async fn stty_size_follows_create_http_resize_and_ws_resize() {
    let d = Daemon::start();
    let mut req = bash();
    req.rows = Some(30);
    req.cols = Some(100);
    let created = d.client.create_pty(&req).await.unwrap();
    let id = &created.session_id;
    let mut a = d.client.attach_pty(id, &created.token).await.unwrap();
    read_until(&mut a, "$ ").await;
    a.send_input("stty size\r").await.unwrap();
    read_until(&mut a, "30 100").await;

    d.client.resize_pty(id, 40, 120).await.unwrap();
    let info = d.client.get_pty(id).await.unwrap();
    assert_eq!((info.rows, info.cols), (40, 120));
    a.send_input("stty size\r").await.unwrap();
    read_until(&mut a, "40 120").await;

    a.resize(90, 33).await.unwrap();
    eventually(LIMIT, "the WS resize to show", || async {
        let info = d.client.get_pty(id).await.unwrap();
        ((info.rows, info.cols) == (33, 90)).then_some(())
    })
    .await;
    a.send_input("stty size\r").await.unwrap();
    read_until(&mut a, "33 90").await;

    // Out-of-range sizes are clamped to the contract's ranges.
    d.client.resize_pty(id, 0, 5000).await.unwrap();
    let info = d.client.get_pty(id).await.unwrap();
    assert_eq!((info.rows, info.cols), (1, 1000));
    let mut huge = pty("cat", &[]);
    huge.rows = Some(100_000);
    huge.cols = Some(-3);
    let other = d.client.create_pty(&huge).await.unwrap();
    let info = d.client.get_pty(&other.session_id).await.unwrap();
    assert_eq!((info.rows, info.cols), (500, 1));
    let defaults = d.client.create_pty(&pty("cat", &[])).await.unwrap();
    let info = d.client.get_pty(&defaults.session_id).await.unwrap();
    assert_eq!((info.rows, info.cols), (24, 80));
}

#[tokio::test]
async fn the_program_leads_its_session_on_the_terminal_with_env_dir_and_user() {
    let d = Daemon::start();
    let dir = d.files_root();
    let mut req = sh(
        "echo TERM=$TERM FOO=$FOO; pwd; id -u; read -r a b c d e f g h rest < /proc/$$/stat; \
         echo STAT pid=$a sid=$f tty=$g tpgid=$h pgrp=$e",
    );
    req.env.insert("FOO".into(), "bar".into());
    req.working_dir = Some(dir.display().to_string());
    let (_, mut a) = create_attached(&d, &req).await;
    let (out, exit, _, _) = read_to_close(&mut a).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(exit, Some(0), "{out}");
    assert!(out.contains("TERM=xterm-256color FOO=bar"), "{out}");
    assert!(out.contains(&dir.display().to_string()), "{out}");
    let stat = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("STAT "))
        .unwrap_or_else(|| panic!("{out}"));
    let field = |name: &str| -> i64 {
        stat.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    // Session leader, with the terminal as controlling terminal and in the foreground.
    assert_eq!(field("sid"), field("pid"), "{stat}");
    assert_ne!(field("tty"), 0, "{stat}");
    assert_eq!(field("tpgid"), field("pgrp"), "{stat}");

    // TERM from env wins; `user` drops privileges (when we have any to drop).
    let mut req = sh("echo TERM=$TERM; id -u");
    req.env.insert("TERM".into(), "dumb".into());
    let running_as_root = unsafe { libc::geteuid() } == 0;
    if running_as_root {
        req.user = Some(sandbox_operator::wire::UserSpec::Text("nobody".into()));
    }
    let (_, mut a) = create_attached(&d, &req).await;
    let (out, exit, _, _) = read_to_close(&mut a).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(exit, Some(0), "{out}");
    assert!(out.contains("TERM=dumb"), "{out}");
    if running_as_root {
        assert!(out.contains("65534"), "{out}");
    }
}

#[tokio::test]
async fn kill_while_attached_closes_with_1001_and_records_the_kill() {
    let d = Daemon::start();
    let (created, mut a) = create_attached(&d, &pty("cat", &[])).await;
    a.send_input("ping\r").await.unwrap();
    read_until(&mut a, "ping").await;
    d.client.kill_pty(&created.session_id).await.unwrap();
    let (_, exit, code, reason) = read_to_close(&mut a).await;
    assert_eq!(exit, None, "a killed session sends no exit frame");
    assert_eq!(code, Some(1001));
    assert_eq!(reason, "session terminated");
    let info = wait_ended(&d, &created.session_id).await;
    assert_eq!(info.end_reason, Some(PtyEndReason::Killed));
    assert_eq!(info.signal, Some(libc::SIGHUP));
    assert_eq!(info.exit_code, Some(128 + libc::SIGHUP));
    // Killing again is fine; an unknown session is 404.
    d.client.kill_pty(&created.session_id).await.unwrap();
    let err = d.client.kill_pty("no-such-session").await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 404);
    assert_eq!(err.code(), Some(ErrorCode::SessionNotFound));
}

#[tokio::test]
async fn a_program_ignoring_sighup_is_killed_after_the_grace_period() {
    let d = Daemon::start_with(&["--pty-kill-grace-ms", "400"]);
    let (created, mut a) =
        create_attached(&d, &sh("trap '' HUP; echo armed; exec sleep 1000")).await;
    read_until(&mut a, "armed").await;
    let killed_at = Instant::now();
    d.client.kill_pty(&created.session_id).await.unwrap();
    let info = wait_ended(&d, &created.session_id).await;
    assert!(
        killed_at.elapsed() >= Duration::from_millis(350),
        "ended before the grace period: {info:?}"
    );
    assert_eq!(info.signal, Some(libc::SIGKILL));
    assert_eq!(info.end_reason, Some(PtyEndReason::Killed));
    assert!(!info.oom_killed, "SIGKILL alone is never an OOM kill");
}

#[tokio::test]
async fn reattach_replays_the_scrollback_including_output_made_while_detached() {
    let d = Daemon::start();
    let created = d
        .client
        .create_pty(&sh(
            "echo first; read x; echo while-$x; sleep 0.3; echo detached-output; exec cat",
        ))
        .await
        .unwrap();
    let id = &created.session_id;
    let mut a = d.client.attach_pty(id, &created.token).await.unwrap();
    read_until(&mut a, "first").await;
    a.send_input("away\r").await.unwrap();
    read_until(&mut a, "while-away").await;
    a.detach().await.unwrap();
    eventually(LIMIT, "the detach to count", || async {
        let info = d.client.get_pty(id).await.unwrap();
        (info.client_count == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let info = d.client.get_pty(id).await.unwrap();
    assert!(info.is_alive, "detaching never kills: {info:?}");
    let mut b = d.client.attach_pty(id, &created.token).await.unwrap();
    let replay = read_until(&mut b, "detached-output").await;
    assert!(
        replay.contains("first") && replay.contains("while-away"),
        "{replay:?}"
    );
    let info = d.client.get_pty(id).await.unwrap();
    assert_eq!(info.attach_count, 2);

    // The replay is bounded by `scrollback_bytes`.
    let mut req = sh("printf 0123456789abcdefghij-TAIL; exec cat");
    req.scrollback_bytes = Some(9);
    let small = d.client.create_pty(&req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = d
        .client
        .attach_pty(&small.session_id, &small.token)
        .await
        .unwrap();
    c.send_input("X\r").await.unwrap();
    let out = read_until(&mut c, "X").await;
    // The last 9 bytes, then the echo of what we typed.
    assert!(out.starts_with("ghij-TAILX"), "{out:?}");
}

#[tokio::test]
async fn two_clients_see_the_same_output() {
    let d = Daemon::start();
    let created = d.client.create_pty(&pty("cat", &[])).await.unwrap();
    let id = &created.session_id;
    let mut a = d.client.attach_pty(id, &created.token).await.unwrap();
    let mut b = d.client.attach_pty(id, &created.token).await.unwrap();
    eventually(LIMIT, "two clients", || async {
        let info = d.client.get_pty(id).await.unwrap();
        (info.client_count == 2).then_some(())
    })
    .await;
    a.send_input("from-a\r").await.unwrap();
    read_until(&mut a, "from-a").await;
    read_until(&mut b, "from-a").await;
    b.send_input("from-b\r").await.unwrap();
    read_until(&mut a, "from-b").await;
    read_until(&mut b, "from-b").await;
    a.detach().await.unwrap();
    eventually(LIMIT, "one client left", || async {
        let info = d.client.get_pty(id).await.unwrap();
        (info.client_count == 1 && info.attach_count == 2 && info.input_count == 2).then_some(())
    })
    .await;
    b.send_input("still-here\r").await.unwrap();
    read_until(&mut b, "still-here").await;
}

#[tokio::test]
async fn clients_attaching_mid_stream_get_replay_then_live_with_no_gap_or_duplicate() {
    let d = Daemon::start();
    // 40 bursts of 1000 numbered lines with pauses: attaches and READYs land between and
    // inside bursts. Under 1 MiB in all, so every client's replay starts at the first line.
    let created = d
        .client
        .create_pty(&sh(
            "read x; i=0; while [ $i -lt 40 ]; do seq $((i*1000)) $((i*1000+999)); sleep 0.02; \
             i=$((i+1)); done",
        ))
        .await
        .unwrap();
    let id = &created.session_id;
    let mut first = d.client.attach_pty(id, &created.token).await.unwrap();
    first.send_input("go\r").await.unwrap();
    let mut clients = vec![first];
    for delay in [30, 120, 300] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        clients.push(d.client.attach_pty(id, &created.token).await.unwrap());
    }
    // One that attaches, lets output pass, and sends READY later.
    let mut late = d.client.connect_pty(id, &created.token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    late.ready().await.unwrap();
    clients.push(late);
    let expected: Vec<String> = (0..40_000).map(|n| n.to_string()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let (out, exit, code, reason) = read_to_close(client).await;
        assert_eq!((exit, code), (Some(0), Some(1000)), "client {i}: {reason}");
        let text = String::from_utf8(out).unwrap().replace('\r', "");
        // The echo of "go" first, then the numbers.
        let lines: Vec<&str> = text.lines().skip_while(|l| *l != "0").collect();
        if lines != expected {
            let bad = lines
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(lines.len().min(expected.len()));
            panic!(
                "client {i}: {} lines, first difference at line {bad}: {:?}",
                lines.len(),
                &lines[bad.saturating_sub(2)..(bad + 2).min(lines.len())]
            );
        }
    }
}

#[tokio::test]
async fn ready_gates_output_and_a_client_that_never_sends_it_is_cut_off() {
    let d = Daemon::start();
    let created = d.client.create_pty(&pty("cat", &[])).await.unwrap();
    let id = &created.session_id;
    let mut a = d.client.connect_pty(id, &created.token).await.unwrap();
    a.send_input("held\r").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(400), a.read())
            .await
            .is_err(),
        "output arrived before READY"
    );
    a.ready().await.unwrap();
    read_until(&mut a, "held").await;

    // More than 1 MiB of output without READY: disconnected, and the session is unharmed.
    let flood = d
        .client
        .create_pty(&sh(
            "read x; head -c 3000000 /dev/zero; echo; echo done; exec cat",
        ))
        .await
        .unwrap();
    let mut lazy = d
        .client
        .connect_pty(&flood.session_id, &flood.token)
        .await
        .unwrap();
    lazy.send_input("go\r").await.unwrap();
    let (out, exit, code, reason) = read_to_close(&mut lazy).await;
    assert!(out.is_empty(), "output without READY");
    assert_eq!(exit, None);
    assert_eq!(code, Some(frame::CLOSE_POLICY), "{reason}");
    let info = d.client.get_pty(&flood.session_id).await.unwrap();
    assert!(info.is_alive);
}

#[tokio::test]
async fn a_slow_client_is_cut_off_with_1013_and_the_session_is_not_slowed() {
    let d = Daemon::start();
    let mut req = sh("read x; head -c 100000000 /dev/zero; echo; echo flood-done");
    req.scrollback_bytes = Some(64 << 10);
    let created = d.client.create_pty(&req).await.unwrap();
    let id = &created.session_id;
    let mut a = d.client.attach_pty(id, &created.token).await.unwrap();
    a.send_input("go\r").await.unwrap();
    // Not reading at all: the session must finish anyway.
    let info = wait_ended(&d, id).await;
    assert_eq!(info.exit_code, Some(0), "{info:?}");
    let (_, exit, code, reason) = read_to_close(&mut a).await;
    assert_eq!(exit, None);
    assert_eq!(code, Some(frame::CLOSE_TOO_SLOW), "{reason}");
}

#[tokio::test]
async fn idle_timeout_ends_a_session_only_while_no_client_is_attached() {
    let d = Daemon::start();
    let mut req = pty("cat", &[]);
    req.idle_timeout_secs = Some(1);
    let created = d.client.create_pty(&req).await.unwrap();
    let id = &created.session_id;
    let mut a = d.client.attach_pty(id, &created.token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let info = d.client.get_pty(id).await.unwrap();
    assert!(info.is_alive, "idle while attached: {info:?}");
    assert_eq!(info.expires_at, None, "no expiry while attached");
    a.send_input("x\r").await.unwrap();
    read_until(&mut a, "x").await;
    a.detach().await.unwrap();
    let detached = Instant::now();
    let info = eventually(LIMIT, "the idle expiry to show", || async {
        let info = d.client.get_pty(id).await.unwrap();
        (info.client_count == 0).then_some(info)
    })
    .await;
    let expires = info.expires_at.expect("an idle session has an expiry");
    assert!(expires > info.last_activity_at - 100 && expires <= info.last_activity_at + 1100);
    let info = wait_ended(&d, id).await;
    assert!(detached.elapsed() >= Duration::from_millis(800));
    assert_eq!(info.end_reason, Some(PtyEndReason::IdleTimeout));

    // Default: five minutes of idleness.
    let plain = d.client.create_pty(&pty("cat", &[])).await.unwrap();
    let info = d.client.get_pty(&plain.session_id).await.unwrap();
    let expires = info.expires_at.unwrap() - info.created_at;
    assert!((299_000..=301_000).contains(&expires), "{info:?}");
}

#[tokio::test]
async fn ttl_ends_even_an_attached_session() {
    let d = Daemon::start();
    let mut req = pty("cat", &[]);
    req.ttl_secs = Some(1);
    let created = d.client.create_pty(&req).await.unwrap();
    let info = d.client.get_pty(&created.session_id).await.unwrap();
    assert_eq!(info.expires_at, Some(info.created_at + 1000));
    let mut a = d
        .client
        .attach_pty(&created.session_id, &created.token)
        .await
        .unwrap();
    let started = Instant::now();
    let (_, exit, code, _) = read_to_close(&mut a).await;
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!((exit, code), (None, Some(1001)));
    let info = wait_ended(&d, &created.session_id).await;
    assert_eq!(info.end_reason, Some(PtyEndReason::TtlExpired));
}

#[tokio::test]
async fn ended_sessions_are_retained_then_forgotten() {
    let d = Daemon::start();
    let mut req = sh("exit 4");
    req.retain_after_exit_secs = Some(1);
    let created = d.client.create_pty(&req).await.unwrap();
    let info = wait_ended(&d, &created.session_id).await;
    assert_eq!(info.exit_code, Some(4));
    assert_eq!(info.expires_at, Some(info.ended_at.unwrap() + 1000));
    eventually(LIMIT, "the session to be forgotten", || async {
        match d.client.get_pty(&created.session_id).await {
            Err(e) if e.code() == Some(ErrorCode::SessionNotFound) => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(d.client.list_ptys().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_session_cap_answers_429_until_a_session_ends() {
    let d = Daemon::start_with(&["--max-pty-sessions", "2"]);
    let a = d.client.create_pty(&pty("cat", &[])).await.unwrap();
    d.client.create_pty(&pty("cat", &[])).await.unwrap();
    let err = d.client.create_pty(&pty("cat", &[])).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 429);
    assert_eq!(err.code(), Some(ErrorCode::TooManySessions));
    d.client.kill_pty(&a.session_id).await.unwrap();
    wait_ended(&d, &a.session_id).await;
    // Ended sessions (still listed) do not count.
    d.client.create_pty(&pty("cat", &[])).await.unwrap();
    assert_eq!(d.client.list_ptys().await.unwrap().len(), 3);
}

#[tokio::test]
async fn attach_checks_the_session_before_the_token() {
    let d = Daemon::start();
    let created = d.client.create_pty(&pty("cat", &[])).await.unwrap();
    let id = &created.session_id;
    let good = created.token.as_str();
    // Unknown session: 404 whatever the token.
    assert_eq!(
        raw_attach(&d, "nope", Some("wrong"), None, true).await,
        Err((404, "SESSION_NOT_FOUND".into()))
    );
    assert_eq!(
        raw_attach(&d, id, Some("wrong"), None, true).await,
        Err((403, "INVALID_TOKEN".into()))
    );
    assert_eq!(
        raw_attach(&d, id, None, Some("wrong"), true).await,
        Err((403, "INVALID_TOKEN".into()))
    );
    assert_eq!(
        raw_attach(&d, id, None, None, true).await,
        Err((403, "INVALID_TOKEN".into()))
    );
    // A right query token next to a wrong header is still refused.
    assert_eq!(
        raw_attach(&d, id, Some(good), Some("wrong"), true).await,
        Err((403, "INVALID_TOKEN".into()))
    );
    // The daemon's bearer auth applies too.
    assert_eq!(
        raw_attach(&d, id, Some(good), None, false).await,
        Err((401, "UNAUTHORIZED".into()))
    );
    assert_eq!(raw_attach(&d, id, Some(good), None, true).await, Ok(()));
    assert_eq!(raw_attach(&d, id, None, Some(good), true).await, Ok(()));
    // Through the client: the same errors as typed codes.
    let err = d.client.attach_pty(id, "wrong").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidToken));
    let err = d.client.attach_pty("nope", good).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { .. }));
    assert_eq!(err.code(), Some(ErrorCode::SessionNotFound));
    // A plain GET (no upgrade) with the right token is a clean 400.
    let response = d
        .http()
        .get(d.url(&format!("/api/v1/pty/{id}/ws?token={good}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn tokens_never_appear_in_list_get_or_events() {
    let d = Daemon::start();
    let mut events = Box::pin(d.client.events(Some(0)).await.unwrap());
    let mut req = pty("cat", &[]);
    req.labels.insert("owner".into(), "test".into());
    let (created, mut a) = create_attached(&d, &req).await;
    a.send_input("x\r").await.unwrap();
    read_until(&mut a, "x").await;
    a.detach().await.unwrap();
    let http = d.http();
    for path in [
        "/api/v1/pty".to_string(),
        format!("/api/v1/pty/{}", created.session_id),
    ] {
        let text = http
            .get(d.url(&path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(&created.session_id), "{text}");
        assert!(text.contains("\"owner\":\"test\""), "{text}");
        assert!(
            !text.contains(&created.token),
            "token leaked by {path}: {text}"
        );
        assert!(!text.contains("token"), "{text}");
    }
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let item = tokio::time::timeout(LIMIT, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let EventItem::State(event) = item {
            let json = serde_json::to_string(&event).unwrap();
            assert!(!json.contains(&created.token), "{json}");
            let session = event.session.expect("PTY events carry the session");
            assert_eq!(session.session_id, created.session_id);
            kinds.push(event.kind);
        }
    }
    assert_eq!(
        kinds,
        vec![
            EventKind::PtyCreated,
            EventKind::PtyAttached,
            EventKind::PtyDetached
        ]
    );
}

#[tokio::test]
async fn events_follow_resize_and_exit() {
    let d = Daemon::start();
    let created = d.client.create_pty(&pty("cat", &[])).await.unwrap();
    let mut events = Box::pin(d.client.events(None).await.unwrap());
    d.client
        .resize_pty(&created.session_id, 10, 20)
        .await
        .unwrap();
    d.client.kill_pty(&created.session_id).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let item = tokio::time::timeout(LIMIT, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let EventItem::State(event) = item {
            let session = event.session.unwrap();
            seen.push((event.kind, session.rows, session.is_alive));
        }
    }
    assert_eq!(
        seen,
        vec![
            (EventKind::PtyResized, 10, true),
            (EventKind::PtyExited, 10, false)
        ]
    );
}

#[tokio::test]
async fn a_flood_without_clients_neither_blocks_nor_grows_the_daemon() {
    let d = Daemon::start();
    // Warm up the allocator and runtime with one small session first.
    let warm = d.client.create_pty(&sh("echo warm")).await.unwrap();
    wait_ended(&d, &warm.session_id).await;
    let before = rss_kib(d.pid());
    let created = d
        .client
        .create_pty(&sh("head -c 200000000 /dev/zero; echo; echo flood-end"))
        .await
        .unwrap();
    let info = eventually(Duration::from_secs(60), "the flood to finish", || async {
        let info = d.client.get_pty(&created.session_id).await.unwrap();
        (!info.is_alive).then_some(info)
    })
    .await;
    assert_eq!(info.exit_code, Some(0), "{info:?}");
    let after = rss_kib(d.pid());
    let peak = status_kib(d.pid(), "VmHWM:");
    // 200 MB went through; the ring is 1 MiB.
    assert!(
        after.saturating_sub(before) < 12 * 1024,
        "daemon RSS grew from {before} KiB to {after} KiB"
    );
    assert!(
        peak < before + 16 * 1024,
        "daemon peak RSS {peak} KiB from {before} KiB"
    );
    // Attaching afterwards replays exactly the retained ring, then the exit.
    let mut a = d
        .client
        .attach_pty(&created.session_id, &created.token)
        .await
        .unwrap();
    let (out, exit, code, reason) = read_to_close(&mut a).await;
    assert_eq!(out.len(), 1 << 20);
    assert!(String::from_utf8_lossy(&out).ends_with("flood-end\r\n"));
    assert_eq!(
        (exit, code, reason.as_str()),
        (Some(0), Some(1000), "exit:0")
    );
}

#[tokio::test]
async fn output_after_a_flood_still_arrives_once_the_terminal_goes_quiet() {
    // A flood makes the reader leave the reactor and read batch after batch; once the
    // terminal runs dry it must be watched again, or the quiet output after it (and the
    // echo of the next input) would never arrive.
    let d = Daemon::start();
    let (_, mut a) = create_attached(
        &d,
        &sh(
            "stty -echo; read x; head -c 2000000 /dev/zero | tr '\\0' a; sleep 0.3; \
             echo after-the-flood; read y; echo \"got $y\"",
        ),
    )
    .await;
    a.send_input("go\r").await.unwrap();
    let out = read_until(&mut a, "after-the-flood").await;
    let flood = out.split("after-the-flood").next().unwrap();
    assert_eq!(flood.bytes().filter(|b| *b == b'a').count(), 2_000_000);
    a.send_input("more\r").await.unwrap();
    read_until(&mut a, "got more").await;
    let (_, exit, code, reason) = read_to_close(&mut a).await;
    assert_eq!(
        (exit, code, reason.as_str()),
        (Some(0), Some(1000), "exit:0")
    );
}

#[tokio::test]
async fn a_restarted_daemon_reports_earlier_sessions_as_ended() {
    let mut d = Daemon::start();
    let done = d.client.create_pty(&sh("exit 3")).await.unwrap();
    wait_ended(&d, &done.session_id).await;
    let keyed_req = pty("cat", &[]);
    let running = d
        .client
        .create_pty_idempotent(&keyed_req, "key-1")
        .await
        .unwrap();
    // SIGKILL: the daemon gets no chance to record anything more.
    d.restart(libc::SIGKILL);
    let lost = d.client.get_pty(&running.session_id).await.unwrap();
    assert!(!lost.is_alive);
    assert!(lost.ended_at.is_some());
    assert_eq!(lost.end_reason, Some(PtyEndReason::Lost));
    assert_eq!(lost.exit_code, None);
    let done_after = d.client.get_pty(&done.session_id).await.unwrap();
    assert_eq!(done_after.exit_code, Some(3));
    assert_eq!(done_after.end_reason, Some(PtyEndReason::Exited));
    // The key still answers with the first session, and starts nothing new.
    let again = d
        .client
        .create_pty_idempotent(&keyed_req, "key-1")
        .await
        .unwrap();
    assert_eq!(again, running);
    assert_eq!(d.client.list_ptys().await.unwrap().len(), 2);
    // Attaching to it says it is gone.
    let mut a = d
        .client
        .attach_pty(&running.session_id, &running.token)
        .await
        .unwrap();
    let (_, exit, code, _) = read_to_close(&mut a).await;
    assert_eq!((exit, code), (None, Some(1001)));

    // A graceful stop ends sessions with the reason `shutdown`.
    let live = d.client.create_pty(&pty("cat", &[])).await.unwrap();
    d.restart(libc::SIGTERM);
    let stopped = d.client.get_pty(&live.session_id).await.unwrap();
    assert_eq!(stopped.end_reason, Some(PtyEndReason::Shutdown));
    assert_eq!(stopped.signal, Some(libc::SIGHUP));
}

#[tokio::test]
async fn idempotency_key_replays_the_same_session_and_refuses_another_body() {
    let d = Daemon::start();
    let req = pty("cat", &[]);
    let first = d.client.create_pty_idempotent(&req, "k").await.unwrap();
    let second = d.client.create_pty_idempotent(&req, "k").await.unwrap();
    assert_eq!(first, second);
    let mut other = req.clone();
    other.args = vec!["-u".into()];
    let err = d
        .client
        .create_pty_idempotent(&other, "k")
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 409);
    assert_eq!(err.code(), Some(ErrorCode::IdempotencyKeyReused));
    assert_eq!(d.client.list_ptys().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_requests_and_malformed_frames_never_hurt() {
    let d = Daemon::start();
    let http = d.http();
    for body in [
        "{not json",
        "",
        "{\"args\": [\"x\"]}",
        "{\"command\": \"\"}",
    ] {
        let response = http
            .post(d.url("/api/v1/pty"))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{body}");
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["code"], "INVALID_REQUEST", "{body}");
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let err = d
        .client
        .create_pty(&pty("/no/such/program", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SpawnFailed));
    let created = d.client.create_pty(&pty("cat", &[])).await.unwrap();
    let id = &created.session_id;
    let response = http
        .post(d.url(&format!("/api/v1/pty/{id}/resize")))
        .bearer_auth(TOKEN)
        .body("{\"rows\": \"many\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let err = d.client.resize_pty("nope", 10, 10).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SessionNotFound));

    // Garbage frames are ignored; the connection and the session keep working.
    let mut a = d.client.attach_pty(id, &created.token).await.unwrap();
    for garbage in [
        vec![],
        vec![0x7f, 1, 2],
        vec![frame::RESIZE, 0],
        vec![0x03, 0, 0, 0, 1],
    ] {
        a.send_frame(garbage).await.unwrap();
    }
    a.send_input("still-alive\r").await.unwrap();
    read_until(&mut a, "still-alive").await;
    let info = d.client.get_pty(id).await.unwrap();
    assert_eq!((info.rows, info.cols, info.is_alive), (24, 80, true));

    // A text frame too (raw socket: the client never sends one).
    let url = format!(
        "{}/api/v1/pty/{id}/ws?token={}",
        d.base.replace("http://", "ws://"),
        created.token
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut raw, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    raw.send(Message::Text("hello".into())).await.unwrap();
    raw.send(Message::Binary(vec![frame::READY].into()))
        .await
        .unwrap();
    raw.send(Message::Binary(b"\0after-text\r".to_vec().into()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("after-text") {
        match tokio::time::timeout(LIMIT, raw.next()).await.unwrap() {
            Some(Ok(Message::Binary(data))) => {
                assert_eq!(data[0], frame::DATA);
                seen.extend_from_slice(&data[1..]);
            }
            Some(Ok(Message::Text(t))) => panic!("the daemon sent a text frame: {t}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_oom_kill_is_reported_as_oom_killed() {
    let d = Daemon::start();
    let info = d.client.info().await.unwrap();
    assert!(
        info.capabilities.oom_detection,
        "this host has no writable memory cgroup: {:?}",
        info.capabilities
    );
    let mut req = pty(
        "python3",
        &["-c", "a = bytearray(512 * 1024 * 1024); print(len(a))"],
    );
    req.memory_limit_bytes = Some(64 << 20);
    let (created, mut a) = create_attached(&d, &req).await;
    let (_, exit, _, reason) = read_to_close(&mut a).await;
    assert_eq!(exit, Some(128 + libc::SIGKILL));
    assert_eq!(reason, "exit:137");
    let info = wait_ended(&d, &created.session_id).await;
    assert!(info.oom_killed, "{info:?}");
    assert_eq!(info.end_reason, Some(PtyEndReason::OomKilled));
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["oom_killed"], true);
}

#[tokio::test]
async fn a_large_paste_reaches_the_program_whole() {
    let d = Daemon::start();
    // Raw mode: no echo, no line editing, bytes come back as they went in.
    let (created, mut a) = create_attached(&d, &sh("stty raw -echo; printf R; exec cat")).await;
    read_until(&mut a, "R").await;
    // Far more than the terminal's input buffer: the daemon must keep writing as it drains.
    let paste: Vec<u8> = (0..256 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    a.send_input(&paste).await.unwrap();
    let mut back = Vec::new();
    while back.len() < paste.len() {
        match tokio::time::timeout(LIMIT, a.read())
            .await
            .unwrap()
            .unwrap()
        {
            PtyEvent::Output(bytes) => back.extend_from_slice(&bytes),
            other => panic!("{other:?} after {} bytes", back.len()),
        }
    }
    assert_eq!(back, paste);
    let info = d.client.get_pty(&created.session_id).await.unwrap();
    assert_eq!(info.input_count, 1);
}

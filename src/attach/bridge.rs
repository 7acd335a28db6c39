//! The bridge between the local terminal and an attached session.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::Target;
use super::terminal::{self, RawMode};
use crate::client::{Client, PtyEvent};

/// `Ctrl-]` (as in telnet): detaches and leaves the session running.
pub const DETACH_KEY: u8 = 0x1d;

/// Attaches to `target` and bridges stdin/stdout until the session ends (its exit code is
/// returned) or the user types [`DETACH_KEY`] (0).
pub async fn bridge(target: &Target) -> anyhow::Result<i32> {
    let client = Client::new(&target.endpoint, target.daemon_token.clone())
        .context("building the daemon client")?;
    let mut attach = client
        .connect_pty(&target.session_id, &target.pty_token)
        .await
        .with_context(|| {
            format!(
                "attaching to session {} at {}",
                target.session_id, target.endpoint
            )
        })?;
    let stdin_fd = std::io::stdin().as_raw_fd();
    // Size first, then READY: the scrollback is replayed into a terminal of the right size.
    if let Some((rows, cols)) = terminal::size(stdin_fd) {
        attach.resize(cols, rows).await?;
    }
    attach.ready().await?;
    let _raw = RawMode::enable(stdin_fd).context("switching the terminal to raw mode")?;
    let mut winch = signal(SignalKind::window_change())?;
    let mut keys = stdin_reader();
    let mut stdout = std::io::stdout().lock();
    loop {
        tokio::select! {
            event = attach.read() => match event? {
                PtyEvent::Output(bytes) => {
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                }
                PtyEvent::Exit(code) => {
                    // The close frame follows; the code is what we leave with.
                    let _ = attach.read().await;
                    return Ok(code);
                }
                PtyEvent::Closed(close) => {
                    drop(_raw);
                    if close.is_terminated() {
                        eprintln!("\r\nsandbox-operator attach: the session was terminated ({})", close.reason);
                        return Ok(1);
                    }
                    eprintln!("\r\nsandbox-operator attach: connection closed ({:?} {})", close.code, close.reason);
                    return Ok(1);
                }
            },
            chunk = keys.recv() => match chunk {
                Some(bytes) => {
                    if let Some(at) = bytes.iter().position(|b| *b == DETACH_KEY) {
                        if at > 0 {
                            attach.send_input(&bytes[..at]).await?;
                        }
                        attach.detach().await?;
                        drop(_raw);
                        eprintln!("\r\nsandbox-operator attach: detached; the session keeps running");
                        return Ok(0);
                    }
                    attach.send_input(&bytes).await?;
                }
                // stdin closed (input was piped): keep showing output until the session ends.
                None => keys = closed_reader(),
            },
            _ = winch.recv() => {
                if let Some((rows, cols)) = terminal::size(stdin_fd) {
                    attach.resize(cols, rows).await?;
                }
            }
        }
    }
}

/// Keystrokes from stdin, read on a thread of their own: a blocking read cannot be cancelled,
/// and a channel receive in `select!` can.
fn stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// A receiver that never yields: stdin is done, output still flows.
fn closed_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(1);
    std::mem::forget(tx);
    rx
}

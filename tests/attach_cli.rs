//! `sandbox-operator attach` driven like a person would: the real binary runs on a pseudo-
//! terminal of the test's (as a terminal emulator would run it), attached to a real session of
//! a real `sandbox-daemon`. What is typed on the outer terminal reaches the shell in the
//! session; the outer terminal's size (at start and on SIGWINCH) is the session's size; the
//! session's exit code is the command's; Ctrl-] detaches without ending the session; the outer
//! terminal leaves raw mode on the way out.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sandbox_operator::wire::CreatePtyRequest;

use common::Daemon;

/// The outer terminal: the test holds the master side; the attach command runs on the slave.
struct Outer {
    master: std::fs::File,
    slave: OwnedFd,
    output: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Outer {
    fn open(rows: u16, cols: u16) -> Outer {
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two fds we then own.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fds from openpty.
        let master = unsafe { std::fs::File::from_raw_fd(master) };
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        let mut reader = master.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Outer {
            master,
            slave,
            output,
            seen: Vec::new(),
        }
    }

    /// Runs `sandbox-operator attach <args>` as the session leader of the outer terminal.
    fn spawn_attach(&self, args: &[&str]) -> Child {
        let fd = |_| Stdio::from(self.slave.try_clone().unwrap());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandbox-operator"));
        cmd.arg("attach").args(args);
        cmd.stdin(fd(0)).stdout(fd(1)).stderr(fd(2));
        // SAFETY: async-signal-safe calls only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().expect("spawn sandbox-operator attach")
    }

    fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Waits until the outer terminal has shown `want` (since the last match).
    fn expect(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(at) = find(&self.seen, want.as_bytes()) {
                self.seen.drain(..at + want.len());
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(_) => panic!(
                    "the outer terminal never showed {want:?}; it showed {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we own; the kernel sends SIGWINCH to the
        // terminal's foreground process group (the attach command).
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0);
    }

    /// Whether the outer terminal is in canonical (cooked) mode.
    fn canonical(&self) -> bool {
        // SAFETY: tcgetattr fills a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(self.slave.as_raw_fd(), &mut t), 0);
            t.c_lflag & libc::ICANON != 0
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited, not signaled");
        }
        assert!(Instant::now() < deadline, "attach did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A shell session on the daemon, and the flags that attach to it without a cluster.
async fn session(daemon: &Daemon) -> (String, Vec<String>) {
    let created = daemon
        .client
        .create_pty(&CreatePtyRequest {
            command: "/bin/sh".into(),
            env: [("PS1".to_owned(), "$ ".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("create session");
    let token_file = daemon
        .dir
        .path()
        .join(format!("pty-{}", created.session_id));
    std::fs::write(&token_file, &created.token).unwrap();
    let args = vec![
        "--endpoint".to_owned(),
        daemon.base.clone(),
        "--daemon-token-file".to_owned(),
        daemon.dir.path().join("token").display().to_string(),
        "--session".to_owned(),
        created.session_id.clone(),
        "--token-file".to_owned(),
        token_file.display().to_string(),
    ];
    (created.session_id, args)
}

#[tokio::test]
async fn attach_bridges_keys_size_and_exit_code() {
    let daemon = Daemon::start();
    let (_, args) = session(&daemon).await;
    let mut outer = Outer::open(30, 100);
    assert!(outer.canonical());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = outer.spawn_attach(&args);

    // The session takes the outer terminal's size before anything runs in it.
    outer.type_text("stty size; echo mark-$((6*7))\r");
    outer.expect("30 100");
    outer.expect("mark-42");
    assert!(
        !outer.canonical(),
        "the outer terminal is raw while attached"
    );

    // A window-size change of the outer terminal reaches the session.
    outer.resize(40, 120);
    tokio::time::sleep(Duration::from_millis(300)).await;
    outer.type_text("stty size\r");
    outer.expect("40 120");

    outer.type_text("exit 5\r");
    assert_eq!(
        wait_exit(&mut child),
        5,
        "the session's exit code is attach's"
    );
    assert!(outer.canonical(), "raw mode is undone on the way out");
}

#[tokio::test]
async fn ctrl_bracket_detaches_and_the_session_lives_on() {
    let daemon = Daemon::start();
    let (session_id, args) = session(&daemon).await;
    let mut outer = Outer::open(24, 80);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = outer.spawn_attach(&args);
    outer.type_text("echo first-$((1+1))\r");
    outer.expect("first-2");
    outer.type_text("\x1d");
    assert_eq!(wait_exit(&mut child), 0);
    outer.expect("detached");
    let info = daemon.client.get_pty(&session_id).await.unwrap();
    assert!(info.is_alive, "detaching never ends the session");

    // Attach again: the scrollback comes back, and the shell is still there.
    let mut child = outer.spawn_attach(&args);
    outer.expect("first-2");
    outer.type_text("echo second-$((2+2))\r");
    outer.expect("second-4");
    outer.type_text("exit\r");
    assert_eq!(wait_exit(&mut child), 0);
}

#[tokio::test]
async fn a_wrong_token_fails_with_a_clear_message_and_no_token_in_it() {
    let daemon = Daemon::start();
    let (_, mut args) = session(&daemon).await;
    let bad = daemon.dir.path().join("bad-token");
    std::fs::write(&bad, "not-the-token-xyz").unwrap();
    let last = args.len() - 1;
    args[last] = bad.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox-operator"))
        .arg("attach")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("attaching to session"), "{stderr}");
    assert!(
        stderr.contains("INVALID_TOKEN") || stderr.contains("403"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-token-xyz"),
        "the token is never printed: {stderr}"
    );
}

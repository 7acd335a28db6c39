//! Pseudo-terminals: opening a master/slave pair, starting a program on the slave as a session
//! leader with the terminal as its controlling terminal, resizing, and signalling the session.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use tokio::sync::oneshot;

use super::super::cgroup::{Leaf, join_from_child};
use super::super::reaper::{Reaper, WaitStatus};
use super::super::spawn::{Credentials, SECRET_ENV};
use crate::wire::CreatePtyRequest;

/// `TERM` unless the request's `env` sets one.
const DEFAULT_TERM: &str = "xterm-256color";

/// Opens a terminal pair of the given size. The master is non-blocking; both ends are
/// close-on-exec from the start, so a concurrent spawn elsewhere in the daemon can never inherit
/// the slave (which would keep the terminal open after the session's program is gone).
pub fn open(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    // std opens with O_CLOEXEC.
    let master: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open("/dev/ptmx")?
        .into();
    let fd = master.as_raw_fd();
    // SAFETY: plain libc calls on an fd we own.
    unsafe {
        if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let slave = open_slave(fd)?;
    set_size(&master, rows, cols)?;
    enable_utf8(&slave);
    Ok((master, slave))
}

fn open_slave(master: RawFd) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // TIOCGPTPEER (Linux 4.13+) opens the peer without a path lookup in /dev/pts.
    // SAFETY: ioctl with an integer argument on an fd we own; returns a new fd or -1.
    let fd = unsafe { libc::ioctl(master, libc::TIOCGPTPEER, flags) };
    if fd >= 0 {
        // SAFETY: a fresh fd that nothing else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut name = [0u8; 128];
    // SAFETY: ptsname_r writes a NUL-terminated name into `name`.
    let rc = unsafe { libc::ptsname_r(master, name.as_mut_ptr().cast(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let path = std::str::from_utf8(&name[..len]).map_err(io::Error::other)?;
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?
        .into())
}

/// Sets IUTF8, so the line discipline erases whole UTF-8 characters on backspace.
fn enable_utf8(slave: &OwnedFd) {
    // SAFETY: tcgetattr/tcsetattr on a terminal fd we own, with a valid termios.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(slave.as_raw_fd(), &mut t) == 0 {
            t.c_iflag |= libc::IUTF8;
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
}

/// Sets the window size; the kernel sends SIGWINCH to the terminal's foreground group.
pub fn set_size(master: &impl AsRawFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts `req` on the terminal whose slave end is `slave` (consumed: the daemon keeps no copy,
/// so the master reads EIO once every process of the session has let go of the terminal).
/// Reaped by `reaper` only.
pub fn spawn(
    reaper: &Reaper,
    req: &CreatePtyRequest,
    creds: Option<Credentials>,
    leaf: Option<&Leaf>,
    slave: OwnedFd,
) -> io::Result<(i32, oneshot::Receiver<WaitStatus>)> {
    let mut cmd = Command::new(&req.command);
    cmd.args(&req.args);
    for key in SECRET_ENV {
        cmd.env_remove(key);
    }
    if !req.env.contains_key("TERM") {
        cmd.env("TERM", DEFAULT_TERM);
    }
    cmd.envs(&req.env);
    if let Some(dir) = &req.working_dir {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::from(slave.try_clone()?));
    cmd.stdout(Stdio::from(slave.try_clone()?));
    cmd.stderr(Stdio::from(slave));
    // std has already dup'ed the slave onto 0, 1 and 2 when these run, right before exec.
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // A new session, so that the terminal can become its controlling terminal: job
            // control, ^C and SIGHUP on hang-up then behave as in any terminal emulator.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    if let Some(leaf) = leaf {
        let fd = leaf.procs_fd();
        // SAFETY: only write(2) runs in the child, which is async-signal-safe.
        unsafe { cmd.pre_exec(move || join_from_child(fd)) };
    }
    if let Some(Credentials { uid, gid }) = creds {
        // After the cgroup join, which needs the daemon's privileges (as in spawn.rs).
        // SAFETY: setgroups/setgid/setuid are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let groups = [gid];
                if libc::geteuid() == 0 && libc::setgroups(1, groups.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }
    let (pid, exit) = reaper.spawn_registered(|| {
        // `Child` is dropped without waiting: the reaper owns the wait.
        let pid = cmd.spawn()?.id() as i32;
        Ok((pid, pid))
    })?;
    // Dropping `cmd` closes the daemon's copies of the slave.
    drop(cmd);
    Ok((pid, exit))
}

/// Sends `signal` to every process of the session led by `sid`: its process group, the other
/// groups of the session (background jobs of a shell), and whatever is left in its cgroup leaf.
pub fn signal_session(sid: i32, leaf: Option<&Leaf>, signal: i32) {
    if sid <= 0 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(-sid, signal) };
    for pid in session_members(sid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, signal) };
    }
    if let Some(leaf) = leaf {
        leaf.signal_all(signal);
    }
}

/// Pids whose session id is `sid` (field 6 of /proc/<pid>/stat).
fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name may contain spaces and parentheses: split after the last ')'.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(3)?.parse::<i32>().ok()
                })
                == Some(sid)
        })
        .collect()
}

/// Writes as much of `data` as the terminal takes without blocking.
pub fn write_nonblocking(master: &impl AsRawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: write(2) from a valid slice.
    let n = unsafe { libc::write(master.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    if n >= 0 {
        Ok(n as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads up to `max` bytes without blocking, appended to `buf` (no zero-filling first: most
/// reads are a few bytes into a large buffer).
pub fn read_appending(
    master: &impl AsRawFd,
    buf: &mut bytes::BytesMut,
    max: usize,
) -> io::Result<usize> {
    use bytes::BufMut;
    buf.reserve(max);
    let spare = buf.chunk_mut();
    let len = spare.len().min(max);
    // SAFETY: read(2) writes at most `len` bytes into the spare capacity.
    let n = unsafe { libc::read(master.as_raw_fd(), spare.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised these `n` bytes.
    unsafe { buf.advance_mut(n as usize) };
    Ok(n as usize)
}

/// Reads what the terminal has without blocking.
#[cfg(test)]
pub fn read_nonblocking(master: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read(2) into a valid slice.
    let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        Ok(n as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_passes_bytes_and_knows_its_size() {
        let (master, slave) = open(30, 100).unwrap();
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) },
            0
        );
        assert_eq!((size.ws_row, size.ws_col), (30, 100));
        set_size(&master, 10, 20).unwrap();
        assert_eq!(
            unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) },
            0
        );
        assert_eq!((size.ws_row, size.ws_col), (10, 20));
        // Output written on the slave is readable on the (non-blocking) master.
        let n = unsafe { libc::write(slave.as_raw_fd(), b"hi".as_ptr().cast(), 2) };
        assert_eq!(n, 2);
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        for _ in 0..100 {
            match read_nonblocking(&master, &mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if got.len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, b"hi");
        // Both ends are close-on-exec.
        for fd in [&master, &slave] {
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert!(flags & libc::FD_CLOEXEC != 0);
        }
    }
}

//! Turning a start request into a running child: argv, environment, working directory, user,
//! its own process group, its own cgroup leaf, and pipes.

use std::ffi::{CStr, CString};
use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::cgroup::{Cgroups, Leaf, join_from_child};
use super::reaper::{Reaper, WaitStatus};
use crate::wire::{OutputMode, StartProcessRequest, StdinMode, UserObject, UserSpec};

/// Environment variables of the daemon that children never inherit (they carry its secrets).
pub const SECRET_ENV: &[&str] = &["SANDBOX_DAEMON_TOKEN"];

/// A uid/gid pair to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

/// A child that has started, with the parent's ends of its pipes.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub exit: tokio::sync::oneshot::Receiver<WaitStatus>,
}

/// Resolves a user spec to credentials.
pub fn resolve_user(user: &UserSpec) -> Result<Credentials, String> {
    match user {
        UserSpec::Text(text) => {
            let (user_part, group_part) = match text.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (text.as_str(), None),
            };
            let mut creds = lookup_user(user_part)?;
            if let Some(group) = group_part {
                creds.gid = group
                    .parse()
                    .map_err(|_| format!("invalid group id `{group}`"))?;
            }
            Ok(creds)
        }
        UserSpec::Object(UserObject { name, uid, gid }) => {
            let mut creds = match (name, uid) {
                (Some(name), None) => lookup_user(name)?,
                (None, Some(uid)) => match passwd_by_uid(*uid) {
                    Some(c) => c,
                    None => Credentials {
                        uid: *uid,
                        gid: gid.unwrap_or(*uid),
                    },
                },
                _ => return Err("user must have exactly one of `name` or `uid`".into()),
            };
            if let Some(gid) = gid {
                creds.gid = *gid;
            }
            Ok(creds)
        }
    }
}

fn lookup_user(text: &str) -> Result<Credentials, String> {
    if let Ok(uid) = text.parse::<u32>() {
        return Ok(passwd_by_uid(uid).unwrap_or(Credentials { uid, gid: uid }));
    }
    let name = CString::new(text).map_err(|_| format!("invalid user name `{text}`"))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwnam_r writes into `pwd` and `buf`, both valid for the call.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result = std::ptr::null_mut();
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if result.is_null() {
            return Err(format!("user `{text}` does not exist"));
        }
        Ok(Credentials {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }
}

fn passwd_by_uid(uid: u32) -> Option<Credentials> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in lookup_user.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result = std::ptr::null_mut();
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        (!result.is_null()).then_some(Credentials {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }
}

/// Starts the child described by `req`, in its own process group and (if given) cgroup leaf.
pub fn spawn(
    reaper: &Reaper,
    cgroups: &Cgroups,
    req: &StartProcessRequest,
    creds: Option<Credentials>,
    leaf: Option<&Leaf>,
) -> std::io::Result<Spawned> {
    let mut cmd = Command::new(&req.command);
    cmd.args(&req.args);
    // Only when the secret is really there: any change to the environment makes std copy the
    // daemon's whole environment into a map and rebuild envp on every spawn. The daemon binary
    // removes the token from its own environment at start, so this stays the rare case.
    for key in SECRET_ENV {
        if std::env::var_os(key).is_some() {
            cmd.env_remove(key);
        }
    }
    cmd.envs(&req.env);
    if let Some(dir) = &req.working_dir {
        cmd.current_dir(dir);
    }
    cmd.process_group(0);
    cmd.stdin(match req.stdin_mode {
        StdinMode::Pipe => Stdio::piped(),
        StdinMode::Closed => dev_null(),
    });
    let capture = |mode| match mode {
        OutputMode::Capture => Stdio::piped(),
        OutputMode::Discard => dev_null(),
    };
    cmd.stdout(capture(req.stdout_mode));
    cmd.stderr(capture(req.stderr_mode));
    // v1: the child inherits the spawning thread's cgroup (see `Cgroups::spawn_in`), which keeps
    // std on its posix_spawn fast path. v2: the child joins between fork and exec.
    if let Some(leaf) = leaf.filter(|_| !cgroups.joins_by_thread()) {
        let fd = leaf.procs_fd();
        // SAFETY: only write(2) runs in the child, which is async-signal-safe.
        unsafe { cmd.pre_exec(move || join_from_child(fd)) };
    }
    if let Some(Credentials { uid, gid }) = creds {
        // Joined the cgroup above while still privileged; now drop privileges. std's own uid/gid
        // switch would run before our cgroup join, which then fails for a non-root user.
        // SAFETY: setgroups/setgid/setuid are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let groups = [gid];
                if libc::geteuid() == 0 && libc::setgroups(1, groups.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }
    let (mut child, exit) = reaper.spawn_registered(|| {
        let child = cgroups.spawn_in(leaf, || cmd.spawn())?;
        Ok((child.id() as i32, child))
    })?;
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    for fd in [&stdout, &stderr].into_iter().flatten() {
        enlarge_pipe(fd);
    }
    Ok(Spawned {
        pid: child.id() as i32,
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout,
        stderr,
        exit,
    })
    // `child` is dropped without waiting: the reaper owns the wait.
}

/// `/dev/null` for a child's stdio: a duplicate of one descriptor opened once, which spares
/// every spawn a path lookup (`Stdio::null()` opens the file anew each time).
fn dev_null() -> Stdio {
    static NULL: OnceLock<Option<File>> = OnceLock::new();
    let cached = NULL.get_or_init(|| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .ok()
    });
    match cached.as_ref().and_then(|f| f.try_clone().ok()) {
        Some(file) => Stdio::from(file),
        None => Stdio::null(),
    }
}

/// A bigger pipe means fewer wake-ups per megabyte for chatty children.
fn enlarge_pipe(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an fd we own; failure only means the default size stays.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

/// Sends `signal` to the process group `pgid`.
pub fn signal_group(pgid: i32, signal: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The name of a signal number, for messages.
pub fn signal_name(signal: i32) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local string.
    let ptr = unsafe { libc::strsignal(signal) };
    if ptr.is_null() {
        return signal.to_string();
    }
    // SAFETY: non-null, NUL-terminated.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

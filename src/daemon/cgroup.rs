//! Per-process memory cgroups, so an OOM kill is attributed to the process the kernel really
//! killed (its own leaf's `oom_kill` counter), and so a memory limit can be set per process.
//!
//! cgroup v2: the daemon moves itself into a leaf `daemon` (the "no internal processes" rule),
//! enables the memory controller for its subtree, and puts each process into `proc-<handle>`.
//! cgroup v1: each process gets `proc-<handle>` under the daemon's memory cgroup; the counter is
//! `oom_kill` in `memory.oom_control`.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Which mechanism is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    V2 { base: PathBuf },
    V1 { base: PathBuf },
    None { reason: String },
}

impl Cgroups {
    /// Detects a writable cgroup hierarchy; `parent` overrides where leaves are created.
    pub fn detect(parent: Option<&Path>) -> Cgroups {
        match Self::try_detect(parent) {
            Ok(cg) => cg,
            Err(e) => Cgroups::None {
                reason: e.to_string(),
            },
        }
    }

    fn try_detect(parent: Option<&Path>) -> io::Result<Cgroups> {
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        if unified {
            let rel = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .ok_or_else(|| io::Error::other("no cgroup v2 entry in /proc/self/cgroup"))?;
            let base = match parent {
                Some(p) => p.to_path_buf(),
                None => Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')),
            };
            Self::setup_v2(&base)?;
            return Ok(Cgroups::V2 { base });
        }
        let rel = own
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then_some(path)
            })
            .ok_or_else(|| io::Error::other("no memory controller in /proc/self/cgroup"))?;
        let base = match parent {
            Some(p) => p.to_path_buf(),
            None => Path::new("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/')),
        };
        // Prove we can create, limit and remove a leaf before promising OOM detection.
        let probe = base.join(format!("probe-{}", std::process::id()));
        fs::create_dir(&probe)?;
        let ok = fs::read_to_string(probe.join("memory.oom_control"))
            .map(|s| s.contains("oom_kill "))
            .and_then(|has| {
                if has {
                    Ok(())
                } else {
                    Err(io::Error::other(
                        "memory.oom_control has no oom_kill counter",
                    ))
                }
            });
        let _ = fs::remove_dir(&probe);
        ok?;
        Ok(Cgroups::V1 { base })
    }

    fn setup_v2(base: &Path) -> io::Result<()> {
        let controllers = fs::read_to_string(base.join("cgroup.controllers"))?;
        if !controllers.split_whitespace().any(|c| c == "memory") {
            return Err(io::Error::other(
                "memory controller not delegated to this cgroup",
            ));
        }
        let enabled = fs::read_to_string(base.join("cgroup.subtree_control"))?;
        if !enabled.split_whitespace().any(|c| c == "memory") {
            let own_leaf = base.join("daemon");
            match fs::create_dir(&own_leaf) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            // Every process of our cgroup must leave it before the controller can be enabled.
            for pid in fs::read_to_string(base.join("cgroup.procs"))?.lines() {
                let _ = fs::write(own_leaf.join("cgroup.procs"), pid);
            }
            fs::write(base.join("cgroup.subtree_control"), "+memory")?;
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, Cgroups::None { .. })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Cgroups::V2 { .. } => "v2",
            Cgroups::V1 { .. } => "v1",
            Cgroups::None { .. } => "none",
        }
    }

    /// Creates the leaf for one process, with an optional memory limit.
    pub fn create(&self, handle: u64, memory_limit: Option<u64>) -> io::Result<Option<Leaf>> {
        let (base, v2) = match self {
            Cgroups::V2 { base } => (base, true),
            Cgroups::V1 { base } => (base, false),
            Cgroups::None { .. } => return Ok(None),
        };
        let dir = base.join(format!("proc-{handle}-{}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(limit) = memory_limit {
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            fs::write(dir.join(file), limit.to_string())?;
            if !v2 {
                // Without this, v1 lets the process swap instead of being OOM-killed.
                let _ = fs::write(dir.join("memory.swappiness"), "0");
            }
        }
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        Ok(Some(Leaf {
            dir,
            v2,
            procs: procs.into(),
        }))
    }
}

/// One process's cgroup leaf.
#[derive(Debug)]
pub struct Leaf {
    dir: PathBuf,
    v2: bool,
    procs: OwnedFd,
}

impl Leaf {
    /// The raw fd of `cgroup.procs`, for the child to join between fork and exec (writing "0"
    /// moves the writer itself); only async-signal-safe calls happen there.
    pub fn procs_fd(&self) -> i32 {
        self.procs.as_raw_fd()
    }

    /// How many times the OOM killer has killed a process in this leaf.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events.local", "oom_kill ")
        } else {
            ("memory.oom_control", "oom_kill ")
        };
        let read = fs::read_to_string(self.dir.join(file)).or_else(|_| {
            // memory.events.local is missing on older v2 kernels.
            fs::read_to_string(self.dir.join("memory.events"))
        });
        read.ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends `signal` to every process still in the leaf (members that left the process group).
    pub fn signal_all(&self, signal: i32) {
        if let Ok(pids) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, signal) };
            }
        }
    }

    /// Removes the leaf; fails (and is retried later) while processes remain in it.
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_dir(&self.dir)
    }
}

/// Writes "0" to an open `cgroup.procs` fd. Async-signal-safe: for use between fork and exec.
pub fn join_from_child(fd: i32) -> io::Result<()> {
    // SAFETY: a plain write(2) of a static buffer to an fd the parent keeps open.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

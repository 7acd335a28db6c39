//! Per-process memory cgroups, so an OOM kill is attributed to the process the kernel really
//! killed (its own leaf's `oom_kill` counter), and so a memory limit can be set per process.
//!
//! cgroup v2: the daemon moves itself into a leaf `daemon` (the "no internal processes" rule),
//! enables the memory controller for its subtree, and each child joins its own leaf between
//! fork and exec. cgroup v1: each child gets a leaf under the daemon's memory cgroup; the
//! counter is `oom_kill` in `memory.oom_control`. v1 lets a single *thread* change cgroup, and a
//! child starts in its parent thread's cgroup, so the spawning thread steps into the leaf around
//! `posix_spawn`: no fork, which matters because fork of a multi-threaded daemon costs far more
//! (page-table copies, copy-on-write faults) than the spawn itself.
//!
//! Leaves are made ahead of time by a background refill, so `mkdir` (tens of microseconds in
//! the memory controller) is not on the start path.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Leaves kept ready.
const POOL_TARGET: usize = 16;
/// Recycled leaves kept beyond this are removed instead.
const POOL_MAX: usize = 4 * POOL_TARGET;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    V2 { base: PathBuf },
    V1 { base: PathBuf },
    None { reason: String },
}

/// The cgroup mechanism in use, and its pool of ready leaves.
#[derive(Debug)]
pub struct Cgroups {
    mode: Mode,
    tag: String,
    /// v1: the daemon cgroup's `tasks`, to step the spawning thread back out of a leaf.
    base_tasks: Option<File>,
    pool: Mutex<Vec<Leaf>>,
    /// Leaves of ended children, waiting to be recycled by the background maintenance.
    returned: Mutex<Vec<Leaf>>,
    next: AtomicU64,
    pool_low: Notify,
}

impl Cgroups {
    /// Detects a writable cgroup hierarchy; `parent` overrides where leaves are created.
    pub fn detect(parent: Option<&Path>) -> Cgroups {
        let mode = Self::try_detect(parent).unwrap_or_else(|e| Mode::None {
            reason: e.to_string(),
        });
        let base_tasks = match &mode {
            Mode::V1 { base } => OpenOptions::new().write(true).open(base.join("tasks")).ok(),
            _ => None,
        };
        let mode = match (&mode, &base_tasks) {
            (Mode::V1 { .. }, None) => Mode::None {
                reason: "cannot write the daemon cgroup's tasks file".into(),
            },
            _ => mode,
        };
        Self::with_mode(mode, base_tasks)
    }

    /// No cgroups at all.
    pub fn disabled(reason: &str) -> Cgroups {
        Self::with_mode(
            Mode::None {
                reason: reason.into(),
            },
            None,
        )
    }

    /// This incarnation's leaf-name tag (random per start), so leaves of different daemons and
    /// of different runs of one daemon never collide or get confused.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Removes the empty leaves an earlier run of this daemon (named by its `tag`) left behind:
    /// a daemon killed with SIGKILL never clears its pool. Only that run's leaves are touched,
    /// never those of other daemons sharing the parent cgroup; busy leaves stay.
    pub fn sweep_previous(&self, tag: &str) -> usize {
        let base = match &self.mode {
            Mode::V2 { base } | Mode::V1 { base } => base,
            Mode::None { .. } => return 0,
        };
        if tag.is_empty() || tag == self.tag {
            return 0;
        }
        let prefix = format!("leaf-{tag}-");
        let Ok(entries) = fs::read_dir(base) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter(|e| fs::remove_dir(e.path()).is_ok())
            .count()
    }

    fn with_mode(mode: Mode, base_tasks: Option<File>) -> Cgroups {
        Cgroups {
            mode,
            tag: super::random_id(4),
            base_tasks,
            pool: Mutex::new(Vec::new()),
            returned: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            pool_low: Notify::new(),
        }
    }

    fn try_detect(parent: Option<&Path>) -> io::Result<Mode> {
        let own = fs::read_to_string("/proc/self/cgroup")?;
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let rel = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .ok_or_else(|| io::Error::other("no cgroup v2 entry in /proc/self/cgroup"))?;
            let base = match parent {
                Some(p) => p.to_path_buf(),
                None => Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')),
            };
            Self::setup_v2(&base)?;
            return Ok(Mode::V2 { base });
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
        // Prove we can create and remove a leaf with an OOM counter before promising detection.
        let probe = base.join(format!("probe-{}", std::process::id()));
        fs::create_dir(&probe)?;
        let has_counter =
            fs::read_to_string(probe.join("memory.oom_control")).map(|s| s.contains("oom_kill "));
        let _ = fs::remove_dir(&probe);
        if !has_counter? {
            return Err(io::Error::other(
                "memory.oom_control has no oom_kill counter (kernel < 4.13)",
            ));
        }
        Ok(Mode::V1 { base })
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
        !matches!(self.mode, Mode::None { .. })
    }

    /// Why there are no cgroups, when there are none.
    pub fn unavailable_reason(&self) -> Option<&str> {
        match &self.mode {
            Mode::None { reason } => Some(reason),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.mode {
            Mode::V2 { .. } => "v2",
            Mode::V1 { .. } => "v1",
            Mode::None { .. } => "none",
        }
    }

    /// Whether children join their leaf by inheritance from the spawning thread (v1), rather
    /// than by writing to `procs_fd` between fork and exec (v2).
    pub fn joins_by_thread(&self) -> bool {
        matches!(self.mode, Mode::V1 { .. })
    }

    /// A leaf for one process, with an optional memory limit.
    pub fn create(&self, _handle: u64, memory_limit: Option<u64>) -> io::Result<Option<Leaf>> {
        self.take_leaf(memory_limit)
    }

    /// A leaf for another kind of child (e.g. a PTY session).
    pub fn create_named(&self, _name: &str, memory_limit: Option<u64>) -> io::Result<Option<Leaf>> {
        self.take_leaf(memory_limit)
    }

    fn take_leaf(&self, memory_limit: Option<u64>) -> io::Result<Option<Leaf>> {
        if !self.enabled() {
            return Ok(None);
        }
        let pooled = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            // A pooled leaf someone removed from outside is skipped, not handed out.
            let mut leaf = pool.pop();
            while leaf.as_ref().is_some_and(|l| !l.dir.exists()) {
                leaf = pool.pop();
            }
            if pool.len() < POOL_TARGET / 2 {
                self.pool_low.notify_one();
            }
            leaf
        };
        let leaf = match pooled {
            Some(leaf) => leaf,
            None => self.make_leaf()?,
        };
        let mut leaf = leaf;
        if let Some(limit) = memory_limit {
            fs::write(leaf.dir.join(leaf.limit_file()), limit.to_string())?;
            leaf.limited = true;
            if !leaf.v2 {
                // Without this, v1 lets the process swap instead of being OOM-killed.
                let _ = fs::write(leaf.dir.join("memory.swappiness"), "0");
            }
        }
        Ok(Some(leaf))
    }

    /// Takes back the leaf of a child that ended. An empty leaf goes back to the pool (its
    /// limit lifted, its OOM counter remembered as the new baseline), which saves a `mkdir` and
    /// an `rmdir` per process; a leaf still holding descendants is handed back as `Err` to be
    /// removed later.
    pub fn recycle(&self, mut leaf: Leaf) -> Result<(), Leaf> {
        let empty =
            fs::read_to_string(leaf.dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
        if !empty {
            return Err(leaf);
        }
        if leaf.limited {
            let unlimited = if leaf.v2 { "max" } else { "-1" };
            if fs::write(leaf.dir.join(leaf.limit_file()), unlimited).is_err() {
                return leaf.remove().map_err(|_| leaf);
            }
            leaf.limited = false;
        }
        leaf.oom_baseline = leaf.oom_count();
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(leaf);
            Ok(())
        } else {
            drop(pool);
            leaf.remove().map_err(|_| leaf)
        }
    }

    /// Hands back the leaf of a child that ended, to be recycled (see [`Cgroups::recycle`]) by
    /// the background maintenance: its reads and writes of cgroup files stay off the runtime.
    pub fn give_back(&self, leaf: Leaf) {
        self.returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(leaf);
        self.pool_low.notify_one();
    }

    /// The leaves handed back since the last call.
    pub fn take_returned(&self) -> Vec<Leaf> {
        std::mem::take(&mut *self.returned.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn make_leaf(&self) -> io::Result<Leaf> {
        let (base, v2) = match &self.mode {
            Mode::V2 { base } => (base, true),
            Mode::V1 { base } => (base, false),
            Mode::None { reason } => return Err(io::Error::other(reason.clone())),
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("leaf-{}-{n}", self.tag));
        fs::create_dir(&dir)?;
        let open = |name: &str| OpenOptions::new().write(true).open(dir.join(name));
        let procs = open("cgroup.procs")?;
        let tasks = if v2 { None } else { Some(open("tasks")?) };
        Ok(Leaf {
            dir,
            v2,
            procs: procs.into(),
            tasks,
            limited: false,
            oom_baseline: 0,
        })
    }

    /// Resolves when the pool has run low or a leaf was handed back (a wake-up that came while
    /// nobody waited is kept).
    pub async fn pool_low(&self) {
        self.pool_low.notified().await;
    }

    /// Makes leaves until the pool holds `POOL_TARGET`. Blocking: a `mkdir` in the memory
    /// controller takes tens of microseconds to milliseconds, so this runs off the runtime.
    pub fn fill_pool(&self) {
        loop {
            let len = self.pool.lock().unwrap_or_else(|e| e.into_inner()).len();
            if len >= POOL_TARGET {
                return;
            }
            match self.make_leaf() {
                Ok(leaf) => self
                    .pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(leaf),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot pre-create cgroup leaves");
                    return;
                }
            }
        }
    }

    /// Runs `spawn` with the calling thread inside `leaf` when joining by thread (v1), so the
    /// child starts in the leaf; otherwise just runs it.
    pub fn spawn_in<T>(
        &self,
        leaf: Option<&Leaf>,
        spawn: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        let (Some(base_tasks), Some(tasks)) =
            (&self.base_tasks, leaf.and_then(|l| l.tasks.as_ref()))
        else {
            return spawn();
        };
        // "0" moves the writing thread itself. Unlike its thread id, it lets the kernel skip the
        // global cgroup_threadgroup_rwsem write lock, which waits for an RCU grace period and
        // for every fork and exit on the machine: milliseconds now and then (the p99).
        tasks.write_at(b"0", 0)?;
        let result = spawn();
        if let Err(e) = base_tasks.write_at(b"0", 0) {
            // A thread stuck in a leaf would put later children in the wrong cgroup: loud.
            tracing::error!(error = %e, "could not move the spawning thread back to the daemon cgroup");
        }
        result
    }

    /// Removes pooled leaves, and handed-back ones not recycled yet (at shutdown).
    pub fn clear_pool(&self) {
        let pooled = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|e| e.into_inner()));
        for leaf in pooled.into_iter().chain(self.take_returned()) {
            let _ = leaf.remove();
        }
    }
}

/// One process's cgroup leaf.
#[derive(Debug)]
pub struct Leaf {
    dir: PathBuf,
    v2: bool,
    procs: OwnedFd,
    tasks: Option<File>,
    /// A memory limit is set (and must be lifted before the leaf is reused).
    limited: bool,
    /// The OOM counter when this leaf was (re)issued: a recycled leaf keeps its history.
    oom_baseline: u64,
}

impl Leaf {
    /// The raw fd of `cgroup.procs`, for a child to join between fork and exec (writing "0"
    /// moves the writer itself); only async-signal-safe calls happen there.
    pub fn procs_fd(&self) -> i32 {
        self.procs.as_raw_fd()
    }

    fn limit_file(&self) -> &'static str {
        if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        }
    }

    /// How many times the OOM killer has killed a process in this leaf since it was issued.
    pub fn oom_kills(&self) -> u64 {
        self.oom_count().saturating_sub(self.oom_baseline)
    }

    /// The leaf's lifetime OOM-kill counter.
    fn oom_count(&self) -> u64 {
        let file = if self.v2 {
            "memory.events.local"
        } else {
            "memory.oom_control"
        };
        let read = fs::read_to_string(self.dir.join(file)).or_else(|_| {
            // memory.events.local is missing on older v2 kernels.
            fs::read_to_string(self.dir.join("memory.events"))
        });
        read.ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
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

//! The one place that calls `waitpid`. Running as PID 1 (or as a child subreaper) means orphaned
//! grandchildren are re-parented to us and must be reaped; doing that with a second
//! `waitpid(-1)` racing a per-child wait loses exit statuses. So every child is reaped here: the
//! reaper only reaps while no spawn is between "forked" and "pid registered" (a read/write gate:
//! spawns hold it shared, so they run in parallel; the reaper holds it exclusively), which makes
//! "spawned but not yet registered" impossible to observe, and statuses of unknown pids (orphans)
//! are simply dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

#[derive(Debug, Default)]
pub struct Reaper {
    /// Shared by every spawn until its pid is registered; exclusive while reaping. A plain
    /// mutex held across the spawn serialised all starts behind one `posix_spawn` at a time.
    gate: RwLock<()>,
    waiting: Mutex<HashMap<i32, oneshot::Sender<WaitStatus>>>,
}

impl Reaper {
    /// Starts the reaper task. Must run before the first spawn.
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        let reaper = Arc::new(Reaper::default());
        let mut sigchld = signal(SignalKind::child())?;
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                // A periodic sweep as well, in case a SIGCHLD was coalesced at a bad moment.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), sigchld.recv()).await;
                task.reap_all();
            }
        });
        Ok(reaper)
    }

    /// Runs `spawn` (which returns the child's pid) with reaping held off, and registers the pid.
    pub fn spawn_registered<T>(
        &self,
        spawn: impl FnOnce() -> std::io::Result<(i32, T)>,
    ) -> std::io::Result<(T, oneshot::Receiver<WaitStatus>)> {
        let _spawning = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let (pid, value) = spawn()?;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, tx);
        Ok((value, rx))
    }

    fn reap_all(&self) {
        let mut done = Vec::new();
        {
            let _reaping = self.gate.write().unwrap_or_else(|e| e.into_inner());
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let mut status = 0;
                // SAFETY: waitpid with a valid out-pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                let decoded = if libc::WIFEXITED(status) {
                    WaitStatus::Exited(libc::WEXITSTATUS(status))
                } else if libc::WIFSIGNALED(status) {
                    WaitStatus::Signaled(libc::WTERMSIG(status))
                } else {
                    continue;
                };
                if let Some(tx) = waiting.remove(&pid) {
                    done.push((tx, decoded));
                }
            }
        }
        for (tx, status) in done {
            let _ = tx.send(status);
        }
    }
}

/// Makes orphaned descendants re-parent to this process instead of to PID 1, so they are reaped
/// here even when the daemon is not PID 1.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

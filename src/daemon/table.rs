//! The process table: every tracked process, by handle, pid and name.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::cgroup::Leaf;
use super::output::Output;
use super::spawn::Credentials;
use crate::wire::{
    ExitReason, HealthStatus, LastExit, ManagedInfo, ManagedStatus, ProcessInfo, ProcessStatus,
    RestartConfig, StartProcessRequest,
};

/// The changing part of a process record.
#[derive(Debug)]
pub struct RunState {
    pub pid: i32,
    pub status: ProcessStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub oom_killed: bool,
    pub timed_out: bool,
    pub exit_reason: Option<ExitReason>,
    pub stdin_writable: bool,
    /// Signals sent through the API during this run (bit n = signal n), to tell "killed" apart.
    pub api_signals: u64,
    /// A stop (`DELETE`, shutdown) was sent during this run: however it then ends, even by a
    /// clean exit on the stop signal, the API ended it (`exit_reason: killed`).
    pub stop_requested: bool,
    /// Which run this is (1 = first); a stale timer for an earlier run must not act.
    pub run: u64,
    pub managed: Option<ManagedState>,
    pub leaf: Option<Leaf>,
}

/// Supervision state of a managed process.
#[derive(Debug, Clone)]
pub struct ManagedState {
    pub status: ManagedStatus,
    pub restart: RestartConfig,
    pub restart_count: u32,
    pub health_status: HealthStatus,
    pub consecutive_health_failures: u32,
    pub last_exit: Option<LastExit>,
    pub last_error: Option<String>,
    pub next_restart_at: Option<i64>,
    /// Deleted through the API: never restart again.
    pub stopped: bool,
    /// Quick restarts in a row, the back-off exponent.
    pub streak: u32,
}

/// One tracked process.
#[derive(Debug)]
pub struct Process {
    pub handle: u64,
    pub spec: StartProcessRequest,
    pub creds: Option<Credentials>,
    pub stop_signal: i32,
    pub kill_grace_ms: u64,
    pub output: Output,
    state: Mutex<RunState>,
    /// Bumped on every state change, so waiters can `wait_for` a condition.
    pub version: watch::Sender<u64>,
    pub stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    /// The serialized ProcessInfo of a finished record (it no longer changes), so listing
    /// thousands of ended processes is a copy, not a re-serialization.
    finished_json: Mutex<Option<bytes::Bytes>>,
}

impl Process {
    pub fn new(
        handle: u64,
        spec: StartProcessRequest,
        creds: Option<Credentials>,
        stop_signal: i32,
        kill_grace_ms: u64,
        output_limit: u64,
        state: RunState,
    ) -> Self {
        Self {
            handle,
            spec,
            creds,
            stop_signal,
            kill_grace_ms,
            output: Output::new(output_limit),
            state: Mutex::new(state),
            version: watch::Sender::new(0),
            stdin: tokio::sync::Mutex::new(None),
            finished_json: Mutex::new(None),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to the state and wakes waiters.
    pub fn update<T>(&self, change: impl FnOnce(&mut RunState) -> T) -> T {
        let result = change(&mut self.state());
        self.finished_json
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.version.send_modify(|v| *v += 1);
        result
    }

    /// The wire view as JSON; cached once the record is final (ended, output closed, not
    /// waiting for a managed restart).
    pub fn info_json(&self) -> bytes::Bytes {
        if let Some(json) = self
            .finished_json
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return json.clone();
        }
        let info = self.info();
        let json = bytes::Bytes::from(serde_json::to_vec(&info).unwrap_or_default());
        let settled = info
            .managed
            .as_ref()
            .is_none_or(|m| m.status == ManagedStatus::Stopped);
        if !info.is_running() && settled && self.output.is_closed(super::output::Selector::Both) {
            *self.finished_json.lock().unwrap_or_else(|e| e.into_inner()) = Some(json.clone());
        }
        json
    }

    pub fn is_running(&self) -> bool {
        self.state().status == ProcessStatus::Running
    }

    pub fn pid(&self) -> i32 {
        self.state().pid
    }

    /// The wire view of this process.
    pub fn info(&self) -> ProcessInfo {
        let output = self.output.stats();
        let st = self.state();
        ProcessInfo {
            handle: self.handle,
            pid: st.pid,
            status: st.status,
            exit_code: st.exit_code,
            signal: st.signal,
            stdin_writable: st.stdin_writable,
            command: self.spec.command.clone(),
            args: self.spec.args.clone(),
            started_at: st.started_at,
            ended_at: st.ended_at,
            oom_killed: st.oom_killed,
            name: self.spec.name.clone(),
            labels: self.spec.labels.clone(),
            timed_out: st.timed_out,
            exit_reason: st.exit_reason,
            output,
            managed: st.managed.as_ref().map(|m| ManagedInfo {
                id: self.handle.to_string(),
                name: self.spec.name.clone(),
                status: m.status,
                restart_count: m.restart_count,
                restart: m.restart.clone(),
                health_check: self.spec.health_check.clone(),
                health_status: m.health_status,
                consecutive_health_failures: m.consecutive_health_failures,
                last_exit: m.last_exit.clone(),
                last_error: m.last_error.clone(),
                next_restart_at: m.next_restart_at,
            }),
        }
    }
}

#[derive(Debug, Default)]
struct Indexes {
    by_handle: BTreeMap<u64, Arc<Process>>,
    by_pid: HashMap<i32, u64>,
    by_name: HashMap<String, u64>,
}

/// All tracked processes.
#[derive(Debug)]
pub struct ProcessTable {
    indexes: RwLock<Indexes>,
    next_handle: AtomicU64,
    max_records: usize,
}

impl ProcessTable {
    pub fn new(max_records: usize) -> Self {
        Self {
            indexes: RwLock::new(Indexes::default()),
            next_handle: AtomicU64::new(1),
            max_records,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Indexes> {
        self.indexes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Indexes> {
        self.indexes.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves the next handle.
    pub fn next_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes sure future handles are above `handle` (after loading persisted records).
    pub fn bump_handle(&self, handle: u64) {
        self.next_handle.fetch_max(handle + 1, Ordering::Relaxed);
    }

    /// Adds a record; returns the handles of the oldest ended records evicted to stay within the
    /// record limit.
    pub fn insert(&self, process: Arc<Process>) -> Vec<u64> {
        let mut ix = self.write();
        let pid = process.pid();
        if pid > 0 {
            ix.by_pid.insert(pid, process.handle);
        }
        if let Some(name) = &process.spec.name {
            ix.by_name.insert(name.clone(), process.handle);
        }
        ix.by_handle.insert(process.handle, process);
        let mut evicted = Vec::new();
        if ix.by_handle.len() > self.max_records {
            let excess = ix.by_handle.len() - self.max_records;
            let victims: Vec<u64> = ix
                .by_handle
                .values()
                .filter(|p| !p.is_running() && p.state().managed.as_ref().is_none_or(|m| m.stopped))
                .take(excess)
                .map(|p| p.handle)
                .collect();
            for handle in victims {
                if let Some(p) = ix.by_handle.remove(&handle) {
                    let pid = p.pid();
                    if ix.by_pid.get(&pid) == Some(&handle) {
                        ix.by_pid.remove(&pid);
                    }
                    if let Some(name) = &p.spec.name {
                        ix.by_name.remove(name);
                    }
                    evicted.push(handle);
                }
            }
        }
        evicted
    }

    /// Points `pid` at `handle` (a managed process got a new pid).
    pub fn index_pid(&self, pid: i32, handle: u64) {
        self.write().by_pid.insert(pid, handle);
    }

    /// Looks a process up by `{ref}`: all digits = pid, otherwise a managed name.
    pub fn resolve(&self, reference: &str) -> Option<Arc<Process>> {
        let ix = self.read();
        let handle = if !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_digit()) {
            *ix.by_pid.get(&reference.parse::<i32>().ok()?)?
        } else {
            *ix.by_name.get(reference)?
        };
        ix.by_handle.get(&handle).cloned()
    }

    pub fn get(&self, handle: u64) -> Option<Arc<Process>> {
        self.read().by_handle.get(&handle).cloned()
    }

    /// Every process, oldest first.
    pub fn all(&self) -> Vec<Arc<Process>> {
        self.read().by_handle.values().cloned().collect()
    }

    pub fn counts(&self) -> (u64, u64) {
        let ix = self.read();
        let running = ix.by_handle.values().filter(|p| p.is_running()).count() as u64;
        (running, ix.by_handle.len() as u64)
    }
}

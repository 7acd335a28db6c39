use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The daemon's view of a process: exactly one of these four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    Running,
    Exited,
    Signaled,
    OomKilled,
}

/// Why a process ended (our addition; finer than `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// Exited on its own with an exit code.
    Exited,
    /// Ended by a signal nobody here sent.
    Signaled,
    /// Ended by the kernel's OOM killer.
    OomKilled,
    /// Ended because `timeout_ms` passed.
    Timeout,
    /// Ended by a kill or signal request through the API (a clean exit on the stop signal of
    /// a `DELETE` counts: the API ended it).
    Killed,
    /// The daemon restarted while it ran; what became of it is unknown.
    Lost,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StdinMode {
    #[default]
    Closed,
    Pipe,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    #[default]
    Capture,
    Discard,
}

/// `stdout` or `stderr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// Who the process runs as: `"name"`, `"1000"`, `"1000:1000"`, or an object with exactly one
/// of `name` / `uid` and an optional `gid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum UserSpec {
    Text(String),
    Object(UserObject),
}

/// The object form of [`UserSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A signal by number (`15`) or by name (`"SIGTERM"` or `"TERM"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SignalSpec {
    Number(i32),
    Name(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    Never,
    #[default]
    OnFailure,
    Always,
}

/// Restart policy of a managed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestartConfig {
    #[serde(default)]
    pub policy: RestartPolicy,
    /// Give up after this many restarts; absent = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckType {
    Http,
    Tcp,
}

/// A health check of a managed process, probing 127.0.0.1:`port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: HealthCheckType,
    pub port: u16,
    /// HTTP path (http checks only), default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default = "default_initial_delay_ms")]
    pub initial_delay_ms: u64,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
}

fn default_initial_delay_ms() -> u64 {
    5_000
}
fn default_interval_ms() -> u64 {
    1_000
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_failure_threshold() -> u32 {
    3
}

/// `POST /processes` and `POST /processes/run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StartProcessRequest {
    /// The program (argv[0]); not a shell string. Looked up in `PATH` when it has no `/`.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables, on top of the daemon's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserSpec>,
    #[serde(default)]
    pub stdin_mode: StdinMode,
    #[serde(default)]
    pub stdout_mode: OutputMode,
    #[serde(default)]
    pub stderr_mode: OutputMode,
    /// A unique name: makes the process managed and addressable by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Addition: labels echoed in ProcessInfo and usable in `GET /processes?label=k=v`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Addition: stop the process (stop signal, grace, SIGKILL) after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Addition: the signal used by timeouts and graceful deletes (default SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<SignalSpec>,
    /// Addition: how long to wait after the stop signal before SIGKILL (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_ms: Option<u64>,
    /// Addition: retained bytes per output stream (head and tail kept); default set by the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit_bytes: Option<u64>,
    /// Addition: a memory limit for this process's own cgroup (where the host allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// `POST /processes/run` only: kill the process after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

/// Managed-process state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ManagedStatus {
    Starting,
    Running,
    BackingOff,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Disabled,
    Starting,
    Healthy,
    Unhealthy,
}

/// How the previous run of a managed process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LastExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    pub ended_at: i64,
}

/// The `managed` block of ProcessInfo, present for processes started with `name`, `restart` or
/// `health_check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ManagedInfo {
    pub id: String,
    pub name: Option<String>,
    pub status: ManagedStatus,
    pub restart_count: u32,
    pub restart: RestartConfig,
    pub health_check: Option<HealthCheck>,
    pub health_status: HealthStatus,
    pub consecutive_health_failures: u32,
    pub last_exit: Option<LastExit>,
    pub last_error: Option<String>,
    pub next_restart_at: Option<i64>,
}

/// Output counters of a process (our addition).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputStats {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Some output was dropped from the middle to stay within the retention limit.
    pub truncated: bool,
    /// Sequence number of the newest output line (0 = none yet).
    pub last_seq: u64,
}

/// A tracked process, running or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessInfo {
    /// Daemon-local stable identifier.
    pub handle: u64,
    /// Operating-system pid (of the current run, for managed processes).
    pub pid: i32,
    pub status: ProcessStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdin_writable: bool,
    pub command: String,
    pub args: Vec<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// True only when the kernel's OOM killer ended the process.
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub exit_reason: Option<ExitReason>,
    #[serde(default)]
    pub output: OutputStats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedInfo>,
}

impl ProcessInfo {
    pub fn is_running(&self) -> bool {
        self.status == ProcessStatus::Running
    }
}

/// `GET /processes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessList {
    pub processes: Vec<ProcessInfo>,
}

/// `POST /processes/{ref}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignalRequest {
    pub signal: SignalSpec,
}

/// `{"success": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SuccessResponse {
    pub success: bool,
}

/// `GET /processes/{ref}/stdout|stderr|output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputResponse {
    pub pid: i32,
    pub lines: Vec<String>,
    pub line_count: usize,
    /// Addition: lines were dropped from the middle to stay within the retention limit.
    #[serde(default)]
    pub truncated: bool,
}

/// One line on a follow stream (SSE `event: output`) or `/run` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputLine {
    pub line: String,
    /// Milliseconds since the epoch, when the daemon read it.
    pub timestamp: i64,
    pub stream: StreamKind,
}

/// First event of `POST /processes/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunStarted {
    pub handle: u64,
    pub pid: i32,
    pub started_at: i64,
}

/// Last event of `POST /processes/run`: `exit_code` or `signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunFinished {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

/// Signal names understood in `SignalSpec::Name` and `stop_signal`, with their Linux numbers.
pub const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

impl SignalSpec {
    /// The signal number, if this names a known signal (1..=31).
    pub fn number(&self) -> Option<i32> {
        match self {
            SignalSpec::Number(n) if (1..=31).contains(n) => Some(*n),
            SignalSpec::Number(_) => None,
            SignalSpec::Name(name) => {
                let upper = name.trim().to_ascii_uppercase();
                if let Ok(n) = upper.parse::<i32>() {
                    return SignalSpec::Number(n).number();
                }
                let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
                SIGNALS.iter().find(|(n, _)| *n == bare).map(|(_, v)| *v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers_resolve() {
        assert_eq!(SignalSpec::Name("SIGTERM".into()).number(), Some(15));
        assert_eq!(SignalSpec::Name("term".into()).number(), Some(15));
        assert_eq!(SignalSpec::Name("9".into()).number(), Some(9));
        assert_eq!(SignalSpec::Number(2).number(), Some(2));
        assert_eq!(SignalSpec::Number(0).number(), None);
        assert_eq!(SignalSpec::Number(64).number(), None);
        assert_eq!(SignalSpec::Name("SIGNOPE".into()).number(), None);
    }

    #[test]
    fn start_request_defaults_match_the_contract() {
        let req: StartProcessRequest = serde_json::from_str(r#"{"command":"ls"}"#).unwrap();
        assert_eq!(req.stdin_mode, StdinMode::Closed);
        assert_eq!(req.stdout_mode, OutputMode::Capture);
        assert!(req.args.is_empty());
        let restart: RestartConfig = serde_json::from_str(r#"{"policy":"on_failure"}"#).unwrap();
        assert_eq!(restart.initial_backoff_ms, 500);
        assert_eq!(restart.max_backoff_ms, 30_000);
    }

    #[test]
    fn user_spec_accepts_every_documented_shape() {
        for text in [r#""nobody""#, r#""1000""#, r#""1000:1000""#] {
            assert!(matches!(
                serde_json::from_str::<UserSpec>(text).unwrap(),
                UserSpec::Text(_)
            ));
        }
        assert_eq!(
            serde_json::from_str::<UserSpec>(r#"{"uid":1,"gid":2}"#).unwrap(),
            UserSpec::Object(UserObject {
                name: None,
                uid: Some(1),
                gid: Some(2)
            })
        );
        assert!(serde_json::from_str::<UserSpec>(r#"{"home":"/"}"#).is_err());
    }

    #[test]
    fn process_info_keeps_tensorlake_nulls() {
        let info = ProcessInfo {
            handle: 1,
            pid: 42,
            status: ProcessStatus::Running,
            exit_code: None,
            signal: None,
            stdin_writable: false,
            command: "python".into(),
            args: vec![],
            started_at: 1,
            ended_at: None,
            oom_killed: false,
            name: None,
            labels: BTreeMap::new(),
            timed_out: false,
            exit_reason: None,
            output: OutputStats::default(),
            managed: None,
        };
        let v = serde_json::to_value(&info).unwrap();
        assert!(v["exit_code"].is_null() && v.get("exit_code").is_some());
        assert!(v.get("ended_at").is_some());
        assert_eq!(v["status"], "running");
    }
}

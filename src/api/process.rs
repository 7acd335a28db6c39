//! `SandboxProcess`: one process inside a sandbox, started (or adopted) through its daemon.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, EnvVar, ResolvedTarget, SandboxTarget, Time, conditions_schema};

/// The signal `state: Stopped` and deletion send first.
pub const DEFAULT_STOP_SIGNAL: &str = "SIGTERM";
/// Seconds between the stop signal and SIGKILL unless the object says otherwise.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// How many lines of output `status.outputTail` holds at most (the schema enforces it).
pub const OUTPUT_TAIL_MAX_LINES: usize = 20;

fn default_stop_signal() -> String {
    DEFAULT_STOP_SIGNAL.to_owned()
}

fn default_termination_grace_period_seconds() -> i64 {
    DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS
}

/// What to run and where. What to run is fixed at creation; the lifecycle fields (`state`,
/// `stopSignal`, `terminationGracePeriodSeconds`, `ttlSecondsAfterFinished`) stay mutable.
// Every `printcolumn(...)` repeats `type_ = ...`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "sandboxes.dev",
    version = "v1alpha1",
    kind = "SandboxProcess",
    plural = "sandboxprocesses",
    singular = "sandboxprocess",
    namespaced,
    status = "SandboxProcessStatus",
    derive = "PartialEq",
    shortname = "sbp",
    shortname = "sbproc",
    category = "sandboxes",
    doc = "A process inside a sandbox, started or adopted through the sandbox's daemon; status mirrors the real process.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded, Failed, Stopped or Lost"
    ),
    printcolumn(
        name = "PID",
        type_ = "integer",
        json_path = ".status.pid",
        description = "Process id inside the sandbox"
    ),
    printcolumn(
        name = "Exit",
        type_ = "integer",
        json_path = ".status.exitCode",
        description = "Exit code once the process ended"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.target.endpoint",
        description = "The daemon the process runs under"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.exitReason",
        priority = 1,
        description = "Why the process ended"
    ),
    printcolumn(
        name = "Restarts",
        type_ = "integer",
        json_path = ".status.restartCount",
        priority = 1,
        description = "Restarts under restartPolicy"
    ),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".status.target.podName",
        priority = 1,
        description = "The sandbox Pod (podName targets)"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.command) || has(self.attach)")
        .message("spec.command is required unless spec.attach is set"),
    validation = Rule::new("!(has(self.command) && has(self.attach))")
        .message("spec.command must not be set together with spec.attach (attach adopts a process that already runs)"),
    // Immutability. Each rule compares old and new with absent == empty, so adding or removing
    // an optional field after creation is caught too (a field-level `self == oldSelf` would
    // only run when the field exists on both sides).
    validation = Rule::new("self.sandbox == oldSelf.sandbox")
        .message("spec.sandbox is immutable").field_path(".sandbox"),
    validation = Rule::new("(has(self.command) ? self.command : '') == (has(oldSelf.command) ? oldSelf.command : '')")
        .message("spec.command is immutable").field_path(".command"),
    validation = Rule::new("(has(self.args) ? self.args : []) == (has(oldSelf.args) ? oldSelf.args : [])")
        .message("spec.args is immutable").field_path(".args"),
    validation = Rule::new("(has(self.env) ? self.env : []) == (has(oldSelf.env) ? oldSelf.env : [])")
        .message("spec.env is immutable").field_path(".env"),
    validation = Rule::new("(has(self.workingDir) ? self.workingDir : '') == (has(oldSelf.workingDir) ? oldSelf.workingDir : '')")
        .message("spec.workingDir is immutable").field_path(".workingDir"),
    validation = Rule::new("(has(self.user) ? self.user : '') == (has(oldSelf.user) ? oldSelf.user : '')")
        .message("spec.user is immutable").field_path(".user"),
    validation = Rule::new("self.stdin == oldSelf.stdin")
        .message("spec.stdin is immutable").field_path(".stdin"),
    validation = Rule::new("self.output == oldSelf.output")
        .message("spec.output is immutable").field_path(".output"),
    validation = Rule::new("self.restartPolicy == oldSelf.restartPolicy")
        .message("spec.restartPolicy is immutable").field_path(".restartPolicy"),
    validation = Rule::new("(has(self.timeoutSeconds) ? self.timeoutSeconds : 0) == (has(oldSelf.timeoutSeconds) ? oldSelf.timeoutSeconds : 0)")
        .message("spec.timeoutSeconds is immutable").field_path(".timeoutSeconds"),
    validation = Rule::new("has(self.attach) == has(oldSelf.attach) && (!has(self.attach) || self.attach == oldSelf.attach)")
        .message("spec.attach is immutable").field_path(".attach"),
    validation = Rule::new("(has(self.labels) ? self.labels : {}) == (has(oldSelf.labels) ? oldSelf.labels : {})")
        .message("spec.labels is immutable").field_path(".labels"),
    validation = Rule::new("(has(self.memoryLimitBytes) ? self.memoryLimitBytes : 0) == (has(oldSelf.memoryLimitBytes) ? oldSelf.memoryLimitBytes : 0)")
        .message("spec.memoryLimitBytes is immutable").field_path(".memoryLimitBytes"),
)]
pub struct SandboxProcessSpec {
    /// Where the sandbox daemon is: exactly one of podName, serviceName or endpoint. Immutable.
    pub sandbox: SandboxTarget,

    /// The program (`argv[0]`); looked up in PATH when it has no `/`. Required unless `attach` is
    /// set, and forbidden with it. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub command: Option<String>,

    /// Arguments after the program name. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 32768)))]
    pub args: Vec<String>,

    /// Environment variables on top of the daemon's, each a literal value or a Secret key.
    /// Names are unique. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,

    /// The working directory (default: the daemon's). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub working_dir: Option<String>,

    /// Who the process runs as: a user name, `uid`, or `uid:gid` (default: the daemon's user).
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub user: Option<String>,

    /// `Closed` gives the process an empty stdin; `Pipe` keeps it open for writes through the
    /// daemon. Immutable.
    #[serde(default)]
    pub stdin: StdinMode,

    /// `Capture` keeps stdout/stderr in the daemon (and a tail in `status.outputTail`);
    /// `Discard` drops them. Immutable.
    #[serde(default)]
    pub output: OutputMode,

    /// Kill the process after this many seconds of running; `status.timedOut` tells. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,

    /// A memory limit in bytes (at least 1 MiB) for the program and everything it starts,
    /// through a cgroup of its own in the sandbox; when the kernel's OOM killer ends it,
    /// `status.oomKilled` says so. Needs a daemon with memory cgroups (its `/info` tells).
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub memory_limit_bytes: Option<i64>,

    /// `Never`, `OnFailure` (restart after a non-zero exit) or `Always`; the daemon restarts the
    /// process with backoff and `status.restartCount` counts. Immutable.
    #[serde(default)]
    pub restart_policy: RestartPolicy,

    /// The desired state: `Running`, or `Stopped` to send `stopSignal`, wait
    /// `terminationGracePeriodSeconds`, then SIGKILL, keeping the object (so GitOps can stop a
    /// process without deleting it). Mutable.
    #[serde(default)]
    pub state: DesiredState,

    /// The first signal on stop and on deletion, by name (`SIGTERM`, `TERM`, `SIGRTMIN+1`) or
    /// number. Mutable.
    #[serde(default = "default_stop_signal")]
    #[schemars(
        length(min = 1, max = 16),
        regex(pattern = r"^((SIG)?[A-Z][A-Z0-9]*([+-][0-9]+)?|[1-9][0-9]?)$")
    )]
    pub stop_signal: String,

    /// Seconds between the stop signal and SIGKILL. Mutable.
    #[serde(default = "default_termination_grace_period_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: i64,

    /// Delete the object this many seconds after the process finished (Succeeded, Failed or
    /// Stopped); unset keeps it. Mutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,

    /// Inspect-only: adopt a process that already runs in the sandbox (by pid or daemon-side
    /// name) instead of starting one. The operator mirrors its status and signals it only on
    /// `state: Stopped` or deletion. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachTarget>,

    /// Labels handed to the daemon with the process (the operator adds the object's uid).
    /// Immutable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,
}

impl SandboxProcessSpec {
    /// A spec that runs `command` under `sandbox`, everything else at its default.
    pub fn new(sandbox: SandboxTarget, command: impl Into<String>) -> Self {
        Self {
            sandbox,
            command: Some(command.into()),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            stdin: StdinMode::default(),
            output: OutputMode::default(),
            timeout_seconds: None,
            memory_limit_bytes: None,
            restart_policy: RestartPolicy::default(),
            state: DesiredState::default(),
            stop_signal: default_stop_signal(),
            termination_grace_period_seconds: DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
            ttl_seconds_after_finished: None,
            attach: None,
            labels: BTreeMap::new(),
        }
    }
}

/// What the process's stdin is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StdinMode {
    #[default]
    Closed,
    Pipe,
}

/// What happens to the process's stdout and stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OutputMode {
    #[default]
    Capture,
    Discard,
}

/// When the daemon restarts the process after it ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
    Always,
}

/// The state the object asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DesiredState {
    #[default]
    Running,
    Stopped,
}

/// A process that already runs in the sandbox: exactly one of `pid` or `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.pid) != has(self.name)")
    .message("exactly one of attach.pid or attach.name must be set"))]
pub struct AttachTarget {
    /// The process id inside the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pid: Option<i32>,
    /// The daemon-side name of a managed process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
}

/// The observed state of a SandboxProcess, written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxProcessStatus {
    /// For people: Pending, Running, Succeeded, Failed, Stopped or Lost (the pod or daemon that
    /// ran it is gone). Machines should read `conditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Schema of the bare enum: an absent phase is left out, never null, and a null in the
    // enum would show up in the API server's "supported values".
    #[schemars(with = "ProcessPhase")]
    pub phase: Option<ProcessPhase>,
    /// The process id inside the sandbox; set only once the daemon returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The daemon's handle for the process (unique per daemon boot, unlike a pid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<i64>,
    /// The daemon's view: running, exited, signaled or oom_killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Schema of the bare enum: an absent phase is left out, never null, and a null in the
    // enum would show up in the API server's "supported values".
    #[schemars(with = "DaemonProcessStatus")]
    pub process_status: Option<DaemonProcessStatus>,
    /// The exit code, when the process exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal number that ended the process, when a signal did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer ended the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    /// Whether `timeoutSeconds` ended the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    /// The daemon's reason the process ended: exited, signaled, oom_killed, timeout, killed or
    /// lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// When the (current incarnation of the) process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,
    /// How often the daemon restarted the process under `restartPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i32>,
    /// Whether stdin is open for writes (`stdin: Pipe` and still running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_writable: Option<bool>,
    /// The daemon and Pod incarnation the process belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ResolvedTarget>,
    /// The last lines of output (at most 20, each cut to 4096 bytes); the daemon keeps the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 4096)))]
    pub output_tail: Vec<String>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions, one per type: Started, Ready, Completed, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A SandboxProcess's phase, for people and `kubectl get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProcessPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Stopped,
    Lost,
}

impl ProcessPhase {
    /// The name, as in the schema (and as metrics and condition reasons use it).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessPhase::Pending => "Pending",
            ProcessPhase::Running => "Running",
            ProcessPhase::Succeeded => "Succeeded",
            ProcessPhase::Failed => "Failed",
            ProcessPhase::Stopped => "Stopped",
            ProcessPhase::Lost => "Lost",
        }
    }

    /// Whether the process will not run again (what `ttlSecondsAfterFinished` counts from).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Stopped)
    }
}

/// The daemon's process status, with the daemon's spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DaemonProcessStatus {
    Running,
    Exited,
    Signaled,
    OomKilled,
}

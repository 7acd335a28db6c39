//! `PtySession`: an interactive terminal inside a sandbox that clients attach to.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, EnvVar, ResolvedTarget, SandboxTarget, Time, conditions_schema};

/// The shell a session runs when the object names none. `/bin/sh` rather than bash: it exists
/// in every image (Alpine and distroless-with-busybox included), so a default session never
/// fails for a missing shell.
pub const DEFAULT_PTY_COMMAND: &str = "/bin/sh";
/// Terminal rows unless the object says otherwise.
pub const DEFAULT_ROWS: i32 = 24;
/// Terminal columns unless the object says otherwise.
pub const DEFAULT_COLS: i32 = 80;
/// Seconds without an attached client before the session ends, unless the object says otherwise.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: i64 = 300;

fn default_command() -> String {
    DEFAULT_PTY_COMMAND.to_owned()
}

fn default_rows() -> i32 {
    DEFAULT_ROWS
}

fn default_cols() -> i32 {
    DEFAULT_COLS
}

fn default_idle_timeout_seconds() -> i64 {
    DEFAULT_IDLE_TIMEOUT_SECONDS
}

/// The terminal to open and where. Fixed at creation except `rows` and `cols` (a change resizes
/// the live terminal) and the timeouts. The attach token goes into a Secret owned by the object
/// (`status.tokenSecretName`), never into status.
// Every `printcolumn(...)` repeats `type_ = ...`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "sandboxes.dev",
    version = "v1alpha1",
    kind = "PtySession",
    plural = "ptysessions",
    singular = "ptysession",
    namespaced,
    status = "PtySessionStatus",
    derive = "PartialEq",
    shortname = "ptys",
    shortname = "sbpty",
    category = "sandboxes",
    doc = "An interactive terminal session inside a sandbox, created through the sandbox's daemon; clients attach with the token in the Secret named by status.tokenSecretName.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Active, Exited, Expired or Lost"
    ),
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".status.size",
        description = "Live terminal size, columns x rows"
    ),
    printcolumn(
        name = "Clients",
        type_ = "integer",
        json_path = ".status.clientCount",
        description = "Attached clients"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "PID",
        type_ = "integer",
        json_path = ".status.pid",
        priority = 1,
        description = "The shell's process id inside the sandbox"
    ),
    printcolumn(
        name = "Session",
        type_ = "string",
        json_path = ".status.sessionId",
        priority = 1,
        description = "The daemon's session id"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    // Immutability (absent == empty, as for SandboxProcess); rows and cols stay mutable: a
    // change resizes the live terminal.
    validation = Rule::new("self.sandbox == oldSelf.sandbox")
        .message("spec.sandbox is immutable").field_path(".sandbox"),
    validation = Rule::new("self.command == oldSelf.command")
        .message("spec.command is immutable").field_path(".command"),
    validation = Rule::new("(has(self.args) ? self.args : []) == (has(oldSelf.args) ? oldSelf.args : [])")
        .message("spec.args is immutable").field_path(".args"),
    validation = Rule::new("(has(self.env) ? self.env : []) == (has(oldSelf.env) ? oldSelf.env : [])")
        .message("spec.env is immutable").field_path(".env"),
    validation = Rule::new("(has(self.workingDir) ? self.workingDir : '') == (has(oldSelf.workingDir) ? oldSelf.workingDir : '')")
        .message("spec.workingDir is immutable").field_path(".workingDir"),
    validation = Rule::new("(has(self.user) ? self.user : '') == (has(oldSelf.user) ? oldSelf.user : '')")
        .message("spec.user is immutable").field_path(".user"),
    validation = Rule::new("(has(self.labels) ? self.labels : {}) == (has(oldSelf.labels) ? oldSelf.labels : {})")
        .message("spec.labels is immutable").field_path(".labels"),
    validation = Rule::new("(has(self.memoryLimitBytes) ? self.memoryLimitBytes : 0) == (has(oldSelf.memoryLimitBytes) ? oldSelf.memoryLimitBytes : 0)")
        .message("spec.memoryLimitBytes is immutable").field_path(".memoryLimitBytes"),
)]
pub struct PtySessionSpec {
    /// Where the sandbox daemon is: exactly one of podName, serviceName or endpoint. Immutable.
    pub sandbox: SandboxTarget,

    /// The program (`argv[0]`), default `/bin/sh`; looked up in PATH when it has no `/`.
    /// Immutable.
    #[serde(default = "default_command")]
    #[schemars(length(min = 1, max = 4096))]
    pub command: String,

    /// Arguments after the program name. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 32768)))]
    pub args: Vec<String>,

    /// Environment variables on top of the daemon's (`TERM` defaults to `xterm-256color`),
    /// each a literal value or a Secret key. Names are unique. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,

    /// The working directory (default: the daemon's). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub working_dir: Option<String>,

    /// Who the session runs as: a user name, `uid`, or `uid:gid` (default: the daemon's user).
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub user: Option<String>,

    /// Terminal rows, 1-500. Mutable: a change resizes the live terminal.
    #[serde(default = "default_rows")]
    #[schemars(range(min = 1, max = 500))]
    pub rows: i32,

    /// Terminal columns, 1-1000. Mutable: a change resizes the live terminal.
    #[serde(default = "default_cols")]
    #[schemars(range(min = 1, max = 1000))]
    pub cols: i32,

    /// End the session after this many seconds with no client attached; 0 never does.
    #[serde(default = "default_idle_timeout_seconds")]
    #[schemars(range(min = 0))]
    pub idle_timeout_seconds: i64,

    /// End the session this many seconds after it was created, attached or not; unset never
    /// does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds: Option<i64>,

    /// A memory limit in bytes (at least 1 MiB) for the program and everything it starts,
    /// through a cgroup of its own in the sandbox; when the kernel's OOM killer ends it,
    /// `status.oomKilled` says so. Needs a daemon with memory cgroups (its `/info` tells).
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub memory_limit_bytes: Option<i64>,

    /// Labels handed to the daemon with the session (the operator adds the object's uid).
    /// Immutable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,
}

impl PtySessionSpec {
    /// A session under `sandbox` with every other field at its default.
    pub fn new(sandbox: SandboxTarget) -> Self {
        Self {
            sandbox,
            command: default_command(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            rows: DEFAULT_ROWS,
            cols: DEFAULT_COLS,
            idle_timeout_seconds: DEFAULT_IDLE_TIMEOUT_SECONDS,
            ttl_seconds: None,
            memory_limit_bytes: None,
            labels: BTreeMap::new(),
        }
    }
}

/// The observed state of a PtySession, written only by the operator. Never holds the token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PtySessionStatus {
    /// For people: Pending, Active, Exited, Expired (idle timeout or ttl) or Lost (the pod or
    /// daemon is gone). Machines should read `conditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Schema of the bare enum: an absent phase is left out, never null, and a null in the
    // enum would show up in the API server's "supported values".
    #[schemars(with = "PtyPhase")]
    pub phase: Option<PtyPhase>,
    /// The daemon's session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The session's process id inside the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The live terminal's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i32>,
    /// The live terminal's columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<i32>,
    /// Whether the session's process still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_alive: Option<bool>,
    /// The exit code once the process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Whether the kernel's OOM killer ended the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    /// When the daemon created the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// When the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,
    /// The last input or output on the terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<Time>,
    /// When `ttlSeconds` ends the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// How many clients are attached now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_count: Option<i32>,
    /// The live terminal's size as `<cols>x<rows>` (the `Size` column of `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The daemon the session lives on: its URL, the Pod and Pod UID for `podName` targets,
    /// and the daemon's boot id. The status is bound to this incarnation: another one means
    /// the session is `Lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ResolvedTarget>,
    /// The Secret (owned by this object) that holds the attach token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions, one per type: `Ready` (the session is alive), `Completed` (it
    /// ended), `TokenStored` (the attach token is in the Secret), `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A PtySession's phase, for people and `kubectl get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PtyPhase {
    Pending,
    Active,
    Exited,
    Expired,
    Lost,
}

impl PtyPhase {
    /// The name, as in the schema (and as metrics and condition reasons use it).
    pub fn as_str(self) -> &'static str {
        match self {
            PtyPhase::Pending => "Pending",
            PtyPhase::Active => "Active",
            PtyPhase::Exited => "Exited",
            PtyPhase::Expired => "Expired",
            PtyPhase::Lost => "Lost",
        }
    }

    /// Whether the session ended and will not come back (`Lost` is separate: the truth is
    /// unknown).
    pub fn is_finished(self) -> bool {
        matches!(self, PtyPhase::Exited | PtyPhase::Expired)
    }
}

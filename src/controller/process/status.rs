//! The pure half of status: the daemon's record -> phase, fields and conditions.

use super::super::conditions::{self, COMPLETED, READY, STARTED};
use super::is_live;
use crate::api::{
    DaemonProcessStatus, DesiredState, ProcessPhase, ResolvedTarget, SandboxProcessSpec,
    SandboxProcessStatus, Time,
};
use crate::controller::object::ms_time;
use crate::wire::{ExitReason, ProcessInfo, ProcessStatus};

/// How many bytes one `outputTail` line keeps.
const OUTPUT_TAIL_LINE_BYTES: usize = 4096;

/// Maps the daemon's record to a phase (pure). `stop_requested`: the object asks for
/// `state: Stopped`, so an end by our kill is `Stopped`, not `Failed`.
pub fn phase_of(info: &ProcessInfo, stop_requested: bool) -> ProcessPhase {
    if info.exit_reason == Some(ExitReason::Lost) {
        return ProcessPhase::Lost;
    }
    if is_live(info) {
        return ProcessPhase::Running;
    }
    if stop_requested && info.exit_reason == Some(ExitReason::Killed) {
        return ProcessPhase::Stopped;
    }
    match info.status {
        ProcessStatus::Exited if info.exit_code == Some(0) => ProcessPhase::Succeeded,
        _ => ProcessPhase::Failed,
    }
}

/// What the observe/apply steps found, for [`desired_status`].
pub struct Observation<'a> {
    pub info: Option<&'a ProcessInfo>,
    pub lost: bool,
    pub target: ResolvedTarget,
    pub output_tail: Vec<String>,
    /// An unrecoverable problem: (condition reason, message).
    pub stall: Option<(&'a str, String)>,
}

/// The status the object should have (pure). Conditions keep their transition times unless
/// they flip, so the same observation always yields the same status.
pub fn desired_status(
    spec: &SandboxProcessSpec,
    generation: Option<i64>,
    prev: &SandboxProcessStatus,
    o: Observation<'_>,
    now: &Time,
) -> SandboxProcessStatus {
    let mut s = prev.clone();
    s.observed_generation = generation;
    s.target = Some(o.target);
    s.output_tail = o.output_tail;
    if let Some(info) = o.info {
        s.pid = Some(info.pid);
        s.handle = i64::try_from(info.handle).ok();
        s.process_status = Some(match info.status {
            ProcessStatus::Running => DaemonProcessStatus::Running,
            ProcessStatus::Exited => DaemonProcessStatus::Exited,
            ProcessStatus::Signaled => DaemonProcessStatus::Signaled,
            ProcessStatus::OomKilled => DaemonProcessStatus::OomKilled,
        });
        s.exit_code = info.exit_code;
        s.signal = info.signal;
        s.oom_killed = Some(info.oom_killed);
        s.timed_out = Some(info.timed_out);
        s.exit_reason = info.exit_reason.map(|r| exit_reason(r).to_owned());
        s.started_at = ms_time(info.started_at);
        s.ended_at = info.ended_at.and_then(ms_time);
        s.restart_count = info
            .managed
            .as_ref()
            .map(|m| i32::try_from(m.restart_count).unwrap_or(i32::MAX));
        s.stdin_writable = Some(info.stdin_writable);
    }
    let phase = if o.lost {
        ProcessPhase::Lost
    } else if let Some(info) = o.info {
        phase_of(info, spec.state == DesiredState::Stopped)
    } else if spec.state == DesiredState::Stopped && prev.pid.is_none() {
        ProcessPhase::Stopped
    } else {
        ProcessPhase::Pending
    };
    if phase == ProcessPhase::Lost {
        s.exit_reason.get_or_insert_with(|| "lost".to_owned());
        s.stdin_writable = Some(false);
    }
    s.phase = Some(phase);

    let g = generation;
    let started = s.pid.is_some();
    let reason = phase.as_str();
    let message = phase_message(phase, &s);
    let c = &mut s.conditions;
    conditions::set(
        c,
        STARTED,
        started,
        if started { "Started" } else { "NotStarted" },
        "",
        g,
        now,
    );
    conditions::set(
        c,
        READY,
        phase == ProcessPhase::Running,
        reason,
        &message,
        g,
        now,
    );
    conditions::set(c, COMPLETED, phase.is_finished(), reason, &message, g, now);
    let stalled_by = o
        .stall
        .clone()
        .or_else(|| (phase == ProcessPhase::Lost).then(|| ("ProcessLost", message.clone())));
    conditions::set_progress(
        c,
        phase == ProcessPhase::Pending,
        "Starting",
        reason,
        stalled_by,
        g,
        now,
    );
    s
}

pub(super) fn phase_message(phase: ProcessPhase, s: &SandboxProcessStatus) -> String {
    match phase {
        ProcessPhase::Running => format!("running as pid {}", s.pid.unwrap_or_default()),
        ProcessPhase::Lost => "the daemon or Pod that ran the process is gone".into(),
        p if p.is_finished() => match (s.exit_code, s.signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => format!("ended by signal {sig}"),
            _ => "ended".into(),
        },
        _ => "waiting for the process to start".into(),
    }
}

pub(super) fn exit_reason(r: ExitReason) -> &'static str {
    match r {
        ExitReason::Exited => "exited",
        ExitReason::Signaled => "signaled",
        ExitReason::OomKilled => "oom_killed",
        ExitReason::Timeout => "timeout",
        ExitReason::Killed => "killed",
        ExitReason::Lost => "lost",
    }
}

/// The last lines of output, bounded in count and line length (pure).
pub fn tail(lines: &[String]) -> Vec<String> {
    let start = lines
        .len()
        .saturating_sub(crate::api::process::OUTPUT_TAIL_MAX_LINES);
    lines[start..]
        .iter()
        .map(|l| truncate(l, OUTPUT_TAIL_LINE_BYTES))
        .collect()
}

pub(super) fn truncate(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

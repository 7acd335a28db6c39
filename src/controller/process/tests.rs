//! The pure parts of the reconciler: the start request, the plan, phase mapping, the status.

use super::*;
use crate::api::{AttachTarget, SandboxTarget};
use crate::controller::conditions::{COMPLETED, READY, RECONCILING, STARTED};

fn spec() -> SandboxProcessSpec {
    SandboxProcessSpec::new(SandboxTarget::endpoint("http://127.0.0.1:9501"), "sleep")
}

fn info(status: ProcessStatus, code: Option<i32>, reason: Option<ExitReason>) -> ProcessInfo {
    ProcessInfo {
        handle: 7,
        pid: 4242,
        status,
        exit_code: code,
        signal: None,
        stdin_writable: false,
        command: "sleep".into(),
        args: vec![],
        started_at: 1_700_000_000_123,
        ended_at: (status != ProcessStatus::Running).then_some(1_700_000_005_999),
        oom_killed: status == ProcessStatus::OomKilled,
        name: None,
        labels: BTreeMap::new(),
        timed_out: reason == Some(ExitReason::Timeout),
        exit_reason: reason,
        output: Default::default(),
        managed: None,
    }
}

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn status_for(
    spec: &SandboxProcessSpec,
    prev: &SandboxProcessStatus,
    i: Option<&ProcessInfo>,
    lost: bool,
) -> SandboxProcessStatus {
    desired_status(
        spec,
        Some(3),
        prev,
        Observation {
            info: i,
            lost,
            target: ResolvedTarget {
                endpoint: Some("http://127.0.0.1:9501".into()),
                boot_id: Some("boot-1".into()),
                ..Default::default()
            },
            output_tail: vec![],
            stall: None,
        },
        &at(100),
    )
}

#[test]
fn start_request_carries_owner_labels_and_lifecycle_settings() {
    let mut s = spec();
    s.args = vec!["30".into()];
    s.labels.insert("team".into(), "a".into());
    s.labels.insert(OWNER_UID_LABEL.into(), "forged".into());
    s.timeout_seconds = Some(7);
    s.restart_policy = RestartPolicy::OnFailure;
    s.termination_grace_period_seconds = 3;
    s.stop_signal = "SIGINT".into();
    s.stdin = StdinMode::Pipe;
    s.output = OutputMode::Discard;
    s.user = Some("1000".into());
    let env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
    let req = build_request(&s, "ns", "obj", "uid-1", env.clone());
    assert_eq!(req.command, "sleep");
    assert_eq!(req.args, vec!["30"]);
    assert_eq!(req.env, env);
    assert_eq!(
        req.labels.get(OWNER_UID_LABEL).map(String::as_str),
        Some("uid-1")
    );
    assert_eq!(
        req.labels.get(OWNER_NAMESPACE_LABEL).map(String::as_str),
        Some("ns")
    );
    assert_eq!(
        req.labels.get(OWNER_NAME_LABEL).map(String::as_str),
        Some("obj")
    );
    assert_eq!(req.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(req.timeout_ms, Some(7000));
    assert_eq!(req.kill_grace_ms, Some(3000));
    assert_eq!(req.stop_signal, Some(SignalSpec::Name("SIGINT".into())));
    assert_eq!(
        req.restart.as_ref().map(|r| r.policy),
        Some(wire::RestartPolicy::OnFailure)
    );
    assert_eq!(req.stdin_mode, wire::StdinMode::Pipe);
    assert_eq!(req.stdout_mode, wire::OutputMode::Discard);
    assert_eq!(req.user, Some(UserSpec::Text("1000".into())));
    assert_eq!(req.name, None);
}

#[test]
fn restart_never_sends_no_restart_config() {
    let req = build_request(&spec(), "ns", "n", "u", BTreeMap::new());
    assert!(req.restart.is_none());
    assert_eq!(req.timeout_ms, None);
}

#[test]
fn plan_starts_only_what_never_ran() {
    let s = spec();
    let fresh = SandboxProcessStatus::default();
    assert_eq!(plan(&s, &fresh, None, false), Step::Start);
    // A pid recorded and no record now: lost, never a second start.
    let had_pid = SandboxProcessStatus {
        pid: Some(1),
        ..Default::default()
    };
    assert_eq!(plan(&s, &had_pid, None, false), Step::Nothing);
    let running = info(ProcessStatus::Running, None, None);
    assert_eq!(plan(&s, &fresh, Some(&running), false), Step::Nothing);
    assert_eq!(plan(&s, &fresh, None, true), Step::Nothing);
}

#[test]
fn plan_stops_a_running_process_when_asked() {
    let mut s = spec();
    s.state = DesiredState::Stopped;
    let running = info(ProcessStatus::Running, None, None);
    assert_eq!(
        plan(&s, &Default::default(), Some(&running), false),
        Step::Stop {
            pid: 4242,
            handle: 7
        }
    );
    let ended = info(ProcessStatus::Exited, Some(0), Some(ExitReason::Exited));
    assert_eq!(
        plan(&s, &Default::default(), Some(&ended), false),
        Step::Nothing
    );
    // Stopped before it ever started: nothing to start.
    assert_eq!(plan(&s, &Default::default(), None, false), Step::Nothing);
}

#[test]
fn attach_never_starts_or_stops() {
    let mut s = spec();
    s.command = None;
    s.attach = Some(AttachTarget {
        pid: Some(1),
        name: None,
    });
    assert_eq!(plan(&s, &Default::default(), None, false), Step::Nothing);
    s.state = DesiredState::Stopped;
    let running = info(ProcessStatus::Running, None, None);
    assert_eq!(
        plan(&s, &Default::default(), Some(&running), false),
        Step::Nothing
    );
}

#[test]
fn phase_mapping() {
    use ExitReason as R;
    use ProcessStatus as S;
    assert_eq!(
        phase_of(&info(S::Running, None, None), false),
        ProcessPhase::Running
    );
    assert_eq!(
        phase_of(&info(S::Exited, Some(0), Some(R::Exited)), false),
        ProcessPhase::Succeeded
    );
    assert_eq!(
        phase_of(&info(S::Exited, Some(3), Some(R::Exited)), false),
        ProcessPhase::Failed
    );
    assert_eq!(
        phase_of(&info(S::Signaled, None, Some(R::Signaled)), false),
        ProcessPhase::Failed
    );
    assert_eq!(
        phase_of(&info(S::OomKilled, None, Some(R::OomKilled)), false),
        ProcessPhase::Failed
    );
    assert_eq!(
        phase_of(&info(S::Signaled, None, Some(R::Timeout)), false),
        ProcessPhase::Failed
    );
    assert_eq!(
        phase_of(&info(S::Signaled, None, Some(R::Killed)), false),
        ProcessPhase::Failed
    );
    assert_eq!(
        phase_of(&info(S::Signaled, None, Some(R::Killed)), true),
        ProcessPhase::Stopped
    );
    assert_eq!(
        phase_of(&info(S::Exited, Some(0), Some(R::Killed)), true),
        ProcessPhase::Stopped
    );
    assert_eq!(
        phase_of(&info(S::Signaled, None, Some(R::Lost)), false),
        ProcessPhase::Lost
    );
}

#[test]
fn status_of_a_running_process() {
    let i = info(ProcessStatus::Running, None, None);
    let s = status_for(&spec(), &Default::default(), Some(&i), false);
    assert_eq!(s.phase, Some(ProcessPhase::Running));
    assert_eq!(s.pid, Some(4242));
    assert_eq!(s.handle, Some(7));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(s.started_at, Some(at(1_700_000_000)));
    assert_eq!(s.ended_at, None);
    assert!(conditions::is_true(&s.conditions, READY));
    assert!(conditions::is_true(&s.conditions, STARTED));
    assert!(!conditions::is_true(&s.conditions, COMPLETED));
    assert!(!conditions::is_true(&s.conditions, RECONCILING));
    assert!(!conditions::is_true(&s.conditions, STALLED));
}

#[test]
fn status_is_stable_so_nothing_is_rewritten() {
    let i = info(ProcessStatus::Running, None, None);
    let first = status_for(&spec(), &Default::default(), Some(&i), false);
    let again = desired_status(
        &spec(),
        Some(3),
        &first,
        Observation {
            info: Some(&i),
            lost: false,
            target: first.target.clone().unwrap(),
            output_tail: vec![],
            stall: None,
        },
        &at(999),
    );
    assert_eq!(first, again);
}

#[test]
fn status_of_a_failed_process_and_pending_and_lost() {
    let i = info(ProcessStatus::Exited, Some(3), Some(ExitReason::Exited));
    let s = status_for(&spec(), &Default::default(), Some(&i), false);
    assert_eq!(s.phase, Some(ProcessPhase::Failed));
    assert_eq!(s.exit_code, Some(3));
    assert_eq!(s.exit_reason.as_deref(), Some("exited"));
    assert!(conditions::is_true(&s.conditions, COMPLETED));
    assert!(!conditions::is_true(&s.conditions, READY));

    let pending = status_for(&spec(), &Default::default(), None, false);
    assert_eq!(pending.phase, Some(ProcessPhase::Pending));
    assert!(conditions::is_true(&pending.conditions, RECONCILING));

    let running = status_for(
        &spec(),
        &Default::default(),
        Some(&info(ProcessStatus::Running, None, None)),
        false,
    );
    let lost = status_for(&spec(), &running, None, true);
    assert_eq!(lost.phase, Some(ProcessPhase::Lost));
    assert_eq!(lost.pid, Some(4242));
    assert_eq!(lost.exit_reason.as_deref(), Some("lost"));
    assert!(conditions::is_true(&lost.conditions, STALLED));
    assert!(!conditions::is_true(&lost.conditions, READY));
}

#[test]
fn lost_when_the_record_vanished_or_the_pod_changed() {
    let r = Resolved {
        endpoint: "http://x".into(),
        token: None,
        pod_name: Some("p".into()),
        pod_uid: Some("uid-2".into()),
    };
    let fresh = SandboxProcessStatus::default();
    assert!(!is_lost(&fresh, None, &r));
    let had_pid = SandboxProcessStatus {
        pid: Some(5),
        ..Default::default()
    };
    assert!(is_lost(&had_pid, None, &r));
    let old_pod = SandboxProcessStatus {
        target: Some(ResolvedTarget {
            pod_uid: Some("uid-1".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(is_lost(
        &old_pod,
        Some(&info(ProcessStatus::Running, None, None)),
        &r
    ));
    let lost_record = info(ProcessStatus::Signaled, None, Some(ExitReason::Lost));
    assert!(is_lost(&fresh, Some(&lost_record), &r));
}

#[test]
fn output_tail_is_bounded() {
    let lines: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    let t = tail(&lines);
    assert_eq!(t.len(), 20);
    assert_eq!(t[0], "line 10");
    let long = vec!["é".repeat(3000)];
    let t = tail(&long);
    assert!(t[0].len() <= 4096);
    assert!(t[0].chars().all(|c| c == 'é'));
}

#[test]
fn a_managed_run_that_just_ended_is_settling_not_finished() {
    use crate::wire::{HealthStatus, ManagedInfo};
    let mut i = info(ProcessStatus::Exited, Some(1), Some(ExitReason::Exited));
    i.managed = Some(ManagedInfo {
        id: "1".into(),
        name: None,
        status: ManagedStatus::Running,
        restart_count: 0,
        restart: RestartConfig {
            policy: wire::RestartPolicy::OnFailure,
            max_restarts: None,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
        },
        health_check: None,
        health_status: HealthStatus::Disabled,
        consecutive_health_failures: 0,
        last_exit: None,
        last_error: None,
        next_restart_at: None,
    });
    assert!(settling(&i));
    assert_eq!(phase_of(&i, false), ProcessPhase::Running);
    i.managed.as_mut().unwrap().status = ManagedStatus::BackingOff;
    assert!(!settling(&i));
    assert_eq!(phase_of(&i, false), ProcessPhase::Running);
    i.managed.as_mut().unwrap().status = ManagedStatus::Stopped;
    assert!(!settling(&i));
    assert_eq!(phase_of(&i, false), ProcessPhase::Failed);
}

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::status::TOKEN_STORED;
use super::*;
use crate::api::SandboxTarget;
use crate::controller::conditions::{COMPLETED, READY, STALLED};
use crate::wire::PtyEndReason;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn id() -> Identity {
    Identity {
        namespace: "ns".into(),
        name: "shell".into(),
        uid: "uid-1".into(),
    }
}

fn session(alive: bool) -> PtySessionInfo {
    PtySessionInfo {
        session_id: "s1".into(),
        pid: 42,
        command: "/bin/sh".into(),
        args: vec![],
        rows: 24,
        cols: 80,
        created_at: 1_700_000_000_123,
        ended_at: (!alive).then_some(1_700_000_005_000),
        exit_code: (!alive).then_some(3),
        is_alive: alive,
        oom_killed: false,
        labels: BTreeMap::from([(OWNER_UID_LABEL.to_owned(), "uid-1".to_owned())]),
        client_count: 2,
        last_activity_at: 1_700_000_001_000,
        expires_at: None,
        attach_count: 2,
        input_count: 5,
        signal: None,
        end_reason: (!alive).then_some(PtyEndReason::Exited),
    }
}

fn observe<'a>(info: Option<&'a PtySessionInfo>, token: TokenState) -> Observation<'a> {
    Observation {
        info,
        lost: false,
        target: ResolvedTarget::default(),
        token,
        token_secret_name: token.stored().then(|| "shell-pty-token".to_owned()),
        stall: None,
    }
}

fn condition<'a>(s: &'a PtySessionStatus, type_: &str) -> &'a crate::api::Condition {
    s.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn phases_follow_the_daemon_record() {
    assert_eq!(phase_of(&session(true)), PtyPhase::Active);
    assert_eq!(phase_of(&session(false)), PtyPhase::Exited);
    for (reason, phase) in [
        (PtyEndReason::IdleTimeout, PtyPhase::Expired),
        (PtyEndReason::TtlExpired, PtyPhase::Expired),
        (PtyEndReason::Lost, PtyPhase::Lost),
        (PtyEndReason::Killed, PtyPhase::Exited),
    ] {
        let mut s = session(false);
        s.end_reason = Some(reason);
        assert_eq!(phase_of(&s), phase, "{reason:?}");
    }
}

#[test]
fn an_active_session_mirrors_the_daemon_and_is_ready() {
    let info = session(true);
    let s = desired_status(
        Some(3),
        &PtySessionStatus::default(),
        observe(Some(&info), TokenState::Stored),
        &at(10),
    );
    assert_eq!(s.phase, Some(PtyPhase::Active));
    assert_eq!(s.session_id.as_deref(), Some("s1"));
    assert_eq!(s.pid, Some(42));
    assert_eq!((s.rows, s.cols), (Some(24), Some(80)));
    assert_eq!(s.size.as_deref(), Some("80x24"));
    assert_eq!(s.client_count, Some(2));
    assert_eq!(s.created_at, Some(at(1_700_000_000)));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(s.token_secret_name.as_deref(), Some("shell-pty-token"));
    assert_eq!(condition(&s, READY).status, "True");
    assert_eq!(condition(&s, COMPLETED).status, "False");
    assert_eq!(condition(&s, TOKEN_STORED).status, "True");
    assert_eq!(condition(&s, STALLED).status, "False");
    // The same observation again changes nothing: no write.
    let again = desired_status(
        Some(3),
        &s,
        observe(Some(&info), TokenState::Stored),
        &at(20),
    );
    assert_eq!(again, s);
}

#[test]
fn an_exit_completes_with_its_code() {
    let live = desired_status(
        Some(1),
        &PtySessionStatus::default(),
        observe(Some(&session(true)), TokenState::Stored),
        &at(10),
    );
    let s = desired_status(
        Some(1),
        &live,
        observe(Some(&session(false)), TokenState::Stored),
        &at(20),
    );
    assert_eq!(s.phase, Some(PtyPhase::Exited));
    assert_eq!(s.exit_code, Some(3));
    assert_eq!(condition(&s, READY).status, "False");
    assert_eq!(condition(&s, READY).last_transition_time, at(20));
    assert_eq!(condition(&s, COMPLETED).status, "True");
}

#[test]
fn a_token_that_cannot_be_stored_is_said_and_remembered() {
    let info = session(true);
    let s = desired_status(
        Some(1),
        &PtySessionStatus::default(),
        observe(Some(&info), TokenState::NotServed),
        &at(10),
    );
    assert_eq!(s.token_secret_name, None);
    let c = condition(&s, TOKEN_STORED);
    assert_eq!(c.status, "False");
    assert_eq!(c.reason, "SecretsNotServed");
    assert!(c.message.contains("could not be stored"), "{}", c.message);
    // The next reconcile reads it back and does not try again.
    assert_eq!(TokenState::from_status(&s), TokenState::NotServed);
    assert!(!wants_session(&s, Some(&info), TokenState::NotServed));
    // A live session whose token was never stored (crash in between) is asked for again.
    assert!(wants_session(&s, Some(&info), TokenState::Pending));
}

#[test]
fn create_only_when_there_never_was_a_session() {
    let none = PtySessionStatus::default();
    assert!(wants_session(&none, None, TokenState::Pending));
    let had = PtySessionStatus {
        session_id: Some("s1".into()),
        ..Default::default()
    };
    assert!(!wants_session(&had, None, TokenState::Pending));
    assert!(!wants_session(
        &had,
        Some(&session(false)),
        TokenState::Pending
    ));
}

#[test]
fn a_vanished_session_or_replaced_pod_is_lost() {
    let resolved = Resolved {
        endpoint: "http://x".into(),
        token: None,
        pod_name: Some("p".into()),
        pod_uid: Some("pod-2".into()),
    };
    let had = PtySessionStatus {
        session_id: Some("s1".into()),
        target: Some(ResolvedTarget {
            pod_uid: Some("pod-1".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(is_lost(&had, Some(&session(true)), &resolved));
    let same_pod = Resolved {
        pod_uid: Some("pod-1".into()),
        ..resolved
    };
    assert!(is_lost(&had, None, &same_pod));
    assert!(!is_lost(&had, Some(&session(true)), &same_pod));
    assert!(!is_lost(&PtySessionStatus::default(), None, &same_pod));
    let s = desired_status(
        None,
        &had,
        Observation {
            lost: true,
            ..observe(None, TokenState::Stored)
        },
        &at(1),
    );
    assert_eq!(s.phase, Some(PtyPhase::Lost));
    assert_eq!(condition(&s, STALLED).reason, "SessionLost");
}

#[test]
fn resize_only_when_the_spec_differs() {
    let mut spec = PtySessionSpec::new(SandboxTarget::endpoint("http://x"));
    assert_eq!(resize_to(&spec, &session(true)), None);
    spec.rows = 40;
    spec.cols = 120;
    assert_eq!(resize_to(&spec, &session(true)), Some((40, 120)));
}

#[test]
fn the_request_carries_the_owner_labels_and_timeouts() {
    let mut spec = PtySessionSpec::new(SandboxTarget::endpoint("http://x"));
    spec.labels.insert(OWNER_UID_LABEL.into(), "forged".into());
    spec.ttl_seconds = Some(60);
    let req = build_request(&spec, &id(), BTreeMap::new());
    assert_eq!(req.labels[OWNER_UID_LABEL], "uid-1");
    assert_eq!(req.labels[OWNER_NAMESPACE_LABEL], "ns");
    assert_eq!(req.labels[OWNER_NAME_LABEL], "shell");
    assert_eq!((req.rows, req.cols), (Some(24), Some(80)));
    assert_eq!(req.idle_timeout_secs, Some(300));
    assert_eq!(req.ttl_secs, Some(60));
    assert_eq!(req.command, "/bin/sh");
}

#[test]
fn the_secret_is_owned_and_holds_the_token() {
    let mut obj = PtySession::new(
        "shell",
        PtySessionSpec::new(SandboxTarget::endpoint("http://x")),
    );
    obj.metadata.namespace = Some("ns".into());
    obj.metadata.uid = Some("uid-1".into());
    let created = crate::wire::CreatePtyResponse {
        session_id: "s1".into(),
        token: "t0k3n".into(),
    };
    let secret = secret::build(&obj, &id(), &created, "http://x");
    assert_eq!(secret.metadata.name.as_deref(), Some("shell-pty-token"));
    assert_eq!(secret.type_.as_deref(), Some(secret::SECRET_TYPE));
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("PtySession", "uid-1", Some(true))
    );
    let data = secret.data.unwrap();
    assert_eq!(data[secret::TOKEN_KEY].0, b"t0k3n");
    assert_eq!(data[secret::SESSION_ID_KEY].0, b"s1");
}

#[test]
fn secret_names_fit_an_object_name() {
    assert_eq!(secret::name_for("a"), "a-pty-token");
    let long = "x".repeat(253);
    let name = secret::name_for(&long);
    assert_eq!(name.len(), 253);
    assert!(name.ends_with("-pty-token"));
}

#[test]
fn no_status_ever_holds_the_token() {
    let info = session(true);
    let s = desired_status(
        Some(1),
        &PtySessionStatus::default(),
        observe(Some(&info), TokenState::Stored),
        &at(1),
    );
    let text = serde_json::to_string(&s).unwrap();
    assert!(!text.contains("t0k3n"));
    assert!(!text.to_lowercase().contains("\"token\""));
}

//! Standard conditions (metav1.Condition) with correct transition semantics:
//! `lastTransitionTime` moves only when a condition's status flips, so re-computing the same
//! status yields byte-identical conditions and no write.

use crate::api::{Condition, Time};

/// `Started`: the process was started (or adopted) and has a pid.
pub const STARTED: &str = "Started";
/// `Ready`: the process runs now (kstatus: the object is current).
pub const READY: &str = "Ready";
/// `Completed`: the process finished and will not run again.
pub const COMPLETED: &str = "Completed";
/// `Reconciling` (kstatus): the operator is still working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// `Stalled` (kstatus): the operator cannot make progress without outside help.
pub const STALLED: &str = "Stalled";

/// Sets condition `type_` in `conditions`, keeping its `lastTransitionTime` unless `status`
/// changed. Reason, message and observedGeneration are always updated.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
                c.status = status;
            }
            c.reason = reason.to_owned();
            c.message = message.to_owned();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Sets the kstatus pair: `Reconciling` while `pending` (reason `pending_reason`, else
/// `reason`) and nothing stalls it; `Stalled` with `stalled_by`'s reason and message, else
/// False (`Progressing`).
pub fn set_progress(
    conditions: &mut Vec<Condition>,
    pending: bool,
    pending_reason: &str,
    reason: &str,
    stalled_by: Option<(&str, String)>,
    generation: Option<i64>,
    now: &Time,
) {
    set(
        conditions,
        RECONCILING,
        pending && stalled_by.is_none(),
        if pending { pending_reason } else { reason },
        "",
        generation,
        now,
    );
    match stalled_by {
        Some((reason, message)) => {
            set(conditions, STALLED, true, reason, &message, generation, now)
        }
        None => set(
            conditions,
            STALLED,
            false,
            "Progressing",
            "",
            generation,
            now,
        ),
    }
}

/// Condition `type_` of `now` if it is True there and was not in `prev`: a transition worth
/// one Event.
pub fn turned_true<'a>(
    prev: &[Condition],
    now: &'a [Condition],
    type_: &str,
) -> Option<&'a Condition> {
    (!is_true(prev, type_))
        .then(|| now.iter().find(|c| c.type_ == type_ && c.status == "True"))
        .flatten()
}

/// Whether condition `type_` is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn new_condition_gets_the_current_time() {
        let mut c = Vec::new();
        set(&mut c, READY, true, "Running", "up", Some(1), &at(10));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, "True");
        assert_eq!(c[0].last_transition_time, at(10));
        assert_eq!(c[0].observed_generation, Some(1));
    }

    #[test]
    fn same_status_keeps_transition_time_but_updates_the_rest() {
        let mut c = Vec::new();
        set(&mut c, READY, true, "Running", "up", Some(1), &at(10));
        set(
            &mut c,
            READY,
            true,
            "StillRunning",
            "still up",
            Some(2),
            &at(20),
        );
        assert_eq!(c[0].last_transition_time, at(10));
        assert_eq!(c[0].reason, "StillRunning");
        assert_eq!(c[0].message, "still up");
        assert_eq!(c[0].observed_generation, Some(2));
    }

    #[test]
    fn a_flip_moves_the_transition_time() {
        let mut c = Vec::new();
        set(&mut c, READY, true, "Running", "", Some(1), &at(10));
        set(&mut c, READY, false, "Exited", "", Some(1), &at(30));
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].last_transition_time, at(30));
        assert!(!is_true(&c, READY));
    }

    #[test]
    fn turned_true_only_on_the_flip() {
        let mut before = Vec::new();
        set(&mut before, STALLED, false, "Progressing", "", None, &at(1));
        let mut after = before.clone();
        set(
            &mut after,
            STALLED,
            true,
            "TargetUnresolvable",
            "no pod",
            None,
            &at(2),
        );
        assert_eq!(
            turned_true(&before, &after, STALLED).map(|c| c.message.as_str()),
            Some("no pod")
        );
        assert!(
            turned_true(&after, &after, STALLED).is_none(),
            "still True: no new Event"
        );
        assert!(turned_true(&after, &before, STALLED).is_none());
    }

    #[test]
    fn conditions_are_kept_per_type() {
        let mut c = Vec::new();
        set(&mut c, READY, true, "A", "", None, &at(1));
        set(&mut c, STALLED, false, "B", "", None, &at(2));
        set(&mut c, READY, true, "A", "", None, &at(3));
        assert_eq!(c.len(), 2);
        assert!(is_true(&c, READY));
        assert!(!is_true(&c, STALLED));
    }
}

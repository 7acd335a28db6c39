//! The pure half of a PtySession's status: the daemon's record -> phase, fields, conditions.

use crate::api::{PtyPhase, PtySessionStatus, ResolvedTarget, Time};
use crate::controller::conditions::{self, COMPLETED, READY};
use crate::controller::object::ms_time;
use crate::wire::{PtyEndReason, PtySessionInfo};

/// `TokenStored`: the attach token is in the Secret named by `status.tokenSecretName`.
pub const TOKEN_STORED: &str = "TokenStored";

/// Where the attach token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Not stored yet: the next reconcile stores it.
    Pending,
    /// In the Secret.
    Stored,
    /// The API server serves no Secrets (the local control plane): the token was dropped.
    NotServed,
    /// The daemon will not hand it out again (the size changed before it was stored).
    Unrecoverable,
}

impl TokenState {
    /// What an earlier status says.
    pub fn from_status(status: &PtySessionStatus) -> Self {
        if status.token_secret_name.is_some() {
            return TokenState::Stored;
        }
        match status
            .conditions
            .iter()
            .find(|c| c.type_ == TOKEN_STORED)
            .map(|c| c.reason.as_str())
        {
            Some(REASON_NOT_SERVED) => TokenState::NotServed,
            Some(REASON_UNRECOVERABLE) => TokenState::Unrecoverable,
            _ => TokenState::Pending,
        }
    }

    /// Whether the token is in its Secret.
    pub fn stored(self) -> bool {
        self == TokenState::Stored
    }
}

const REASON_NOT_SERVED: &str = "SecretsNotServed";
const REASON_UNRECOVERABLE: &str = "TokenUnrecoverable";

/// Maps the daemon's record to a phase (pure).
pub fn phase_of(info: &PtySessionInfo) -> PtyPhase {
    if info.is_alive {
        return PtyPhase::Active;
    }
    match info.end_reason {
        Some(PtyEndReason::IdleTimeout | PtyEndReason::TtlExpired) => PtyPhase::Expired,
        Some(PtyEndReason::Lost) => PtyPhase::Lost,
        _ => PtyPhase::Exited,
    }
}

/// What the observe/apply steps found, for [`desired_status`].
pub struct Observation<'a> {
    pub info: Option<&'a PtySessionInfo>,
    pub lost: bool,
    pub target: ResolvedTarget,
    pub token: TokenState,
    pub token_secret_name: Option<String>,
    /// An unrecoverable problem: (condition reason, message).
    pub stall: Option<(&'a str, String)>,
}

/// The status the object should have (pure). Conditions keep their transition times unless
/// they flip, so the same observation always yields the same status.
pub fn desired_status(
    generation: Option<i64>,
    prev: &PtySessionStatus,
    o: Observation<'_>,
    now: &Time,
) -> PtySessionStatus {
    let mut s = prev.clone();
    s.observed_generation = generation;
    s.target = Some(o.target);
    s.token_secret_name = o.token_secret_name;
    if let Some(info) = o.info {
        s.session_id = Some(info.session_id.clone());
        s.pid = Some(info.pid);
        s.rows = Some(info.rows.into());
        s.cols = Some(info.cols.into());
        s.size = Some(format!("{}x{}", info.cols, info.rows));
        s.is_alive = Some(info.is_alive);
        s.exit_code = info.exit_code;
        s.oom_killed = Some(info.oom_killed);
        s.created_at = ms_time(info.created_at);
        s.ended_at = info.ended_at.and_then(ms_time);
        s.last_activity_at = ms_time(info.last_activity_at);
        s.expires_at = info.expires_at.and_then(ms_time);
        s.client_count = Some(i32::try_from(info.client_count).unwrap_or(i32::MAX));
    }
    let phase = if o.lost {
        PtyPhase::Lost
    } else {
        o.info.map_or(PtyPhase::Pending, phase_of)
    };
    if phase == PtyPhase::Lost {
        s.is_alive = Some(false);
        s.client_count = Some(0);
    }
    s.phase = Some(phase);

    let g = generation;
    let reason = phase.as_str();
    let message = phase_message(phase, &s);
    let c = &mut s.conditions;
    conditions::set(
        c,
        READY,
        phase == PtyPhase::Active,
        reason,
        &message,
        g,
        now,
    );
    conditions::set(c, COMPLETED, phase.is_finished(), reason, &message, g, now);
    let (stored, token_reason, token_message) = match o.token {
        TokenState::Stored => (
            true,
            "Stored",
            "the attach token is in the Secret named by status.tokenSecretName".to_owned(),
        ),
        TokenState::Pending => (false, "Pending", String::new()),
        TokenState::NotServed => (
            false,
            REASON_NOT_SERVED,
            "the API server serves no core/v1 Secrets, so the attach token could not be stored \
             and was dropped; nobody can attach, and the session still ends on its idle \
             timeout, its ttl, or when this object is deleted"
                .to_owned(),
        ),
        TokenState::Unrecoverable => (
            false,
            REASON_UNRECOVERABLE,
            "the session was created but the operator stopped before storing its token, and the \
             daemon cannot hand it out again because spec.rows or spec.cols changed meanwhile; \
             delete and re-create the object to get an attachable session"
                .to_owned(),
        ),
    };
    conditions::set(
        c,
        TOKEN_STORED,
        stored,
        token_reason,
        &token_message,
        g,
        now,
    );
    let stalled_by = o
        .stall
        .clone()
        .or_else(|| (phase == PtyPhase::Lost).then(|| ("SessionLost", message.clone())));
    conditions::set_progress(
        c,
        phase == PtyPhase::Pending,
        "Creating",
        reason,
        stalled_by,
        g,
        now,
    );
    s
}

/// A one-line description of the phase, from status fields only (never a token).
pub fn phase_message(phase: PtyPhase, s: &PtySessionStatus) -> String {
    match phase {
        PtyPhase::Pending => "waiting for the session to be created".into(),
        PtyPhase::Active => format!(
            "session {} alive as pid {}",
            s.session_id.as_deref().unwrap_or_default(),
            s.pid.unwrap_or_default()
        ),
        PtyPhase::Exited => match s.exit_code {
            Some(code) => format!("exited with code {code}"),
            None => "ended".into(),
        },
        PtyPhase::Expired => "ended by its idle timeout or ttl".into(),
        PtyPhase::Lost => "the daemon or Pod that ran the session is gone".into(),
    }
}

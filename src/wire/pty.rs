//! PTY sessions: the HTTP bodies of `/api/v1/pty...` and the binary WebSocket frames of
//! `/api/v1/pty/{id}/ws`, shared by the daemon and the client.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::UserSpec;

/// Header carrying the attach token (clients also send it as `?token=`).
pub const PTY_TOKEN_HEADER: &str = "x-pty-token";

/// Terminal size defaults and limits of the Tensorlake API (out-of-range values are clamped).
pub const DEFAULT_ROWS: u16 = 24;
pub const DEFAULT_COLS: u16 = 80;
pub const MAX_ROWS: u16 = 500;
pub const MAX_COLS: u16 = 1000;
/// Default of `idle_timeout_secs`.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;
/// Default of `scrollback_bytes`.
pub const DEFAULT_SCROLLBACK_BYTES: u64 = 1 << 20;

/// Clamps a requested row count to 1..=500 (absent: 24).
pub fn clamp_rows(rows: Option<i64>) -> u16 {
    rows.map_or(DEFAULT_ROWS, |r| r.clamp(1, MAX_ROWS as i64) as u16)
}

/// Clamps a requested column count to 1..=1000 (absent: 80).
pub fn clamp_cols(cols: Option<i64>) -> u16 {
    cols.map_or(DEFAULT_COLS, |c| c.clamp(1, MAX_COLS as i64) as u16)
}

/// `null` means "absent": the Tensorlake SDKs serialize unset optional fields as `null`.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `POST /api/v1/pty`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatePtyRequest {
    /// The program (argv[0]), e.g. `/bin/bash`; looked up in `PATH` when it has no `/`.
    pub command: String,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<String>,
    /// Extra environment variables on top of the daemon's; `TERM` defaults to `xterm-256color`.
    #[serde(default, deserialize_with = "null_default")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Terminal rows, clamped to 1..=500 (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// Terminal columns, clamped to 1..=1000 (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<i64>,
    /// Addition: who the session runs as (as for processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserSpec>,
    /// Addition: labels echoed in PtySessionInfo.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Addition: end the session after this long with no client attached (default 300; 0 = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Addition: end the session this long after creation, attached or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Addition: output retained for replay to a client that attaches (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrollback_bytes: Option<u64>,
    /// Addition: how long an ended session stays queryable (default set by the daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_after_exit_secs: Option<u64>,
    /// Addition: a memory limit for the session's own cgroup (where the host allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
}

/// `201` answer of `POST /api/v1/pty`. The token is shown only here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatePtyResponse {
    pub session_id: String,
    /// Attach credential for `GET /api/v1/pty/{id}/ws`.
    pub token: String,
}

/// `POST /api/v1/pty/{id}/resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResizePtyRequest {
    /// Clamped to 1..=500.
    pub rows: i64,
    /// Clamped to 1..=1000.
    pub cols: i64,
}

/// Why a session ended (our addition; `null` while it is alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PtyEndReason {
    /// The program exited on its own with an exit code.
    Exited,
    /// The program was ended by a signal nobody here sent.
    Signaled,
    /// The kernel's OOM killer ended it.
    OomKilled,
    /// `DELETE /api/v1/pty/{id}`.
    Killed,
    /// No client was attached for `idle_timeout_secs`.
    IdleTimeout,
    /// `ttl_secs` passed.
    TtlExpired,
    /// The daemon was shut down while it ran.
    Shutdown,
    /// The daemon restarted while it ran; what became of it is unknown.
    Lost,
}

impl PtyEndReason {
    /// Ended by the daemon rather than by the program: attached clients get close code 1001
    /// `session terminated` instead of an exit frame.
    pub fn terminated(self) -> bool {
        matches!(
            self,
            PtyEndReason::Killed
                | PtyEndReason::IdleTimeout
                | PtyEndReason::TtlExpired
                | PtyEndReason::Shutdown
                | PtyEndReason::Lost
        )
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One PTY session, as `GET /api/v1/pty[/{id}]` and `/events` show it. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PtySessionInfo {
    pub session_id: String,
    pub pid: i32,
    pub command: String,
    pub args: Vec<String>,
    pub rows: u16,
    pub cols: u16,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub ended_at: Option<i64>,
    /// The exit code; 128 + signal number when a signal ended it; `null` while alive or unknown.
    pub exit_code: Option<i32>,
    pub is_alive: bool,
    /// Present (and true) only when the kernel's OOM killer ended the session.
    #[serde(default, skip_serializing_if = "is_false")]
    pub oom_killed: bool,
    /// Addition.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Addition: WebSocket clients attached right now.
    #[serde(default)]
    pub client_count: u32,
    /// Addition: last input, output, attach or detach (ms since the epoch).
    #[serde(default)]
    pub last_activity_at: i64,
    /// Addition: when the daemon will end the session unless something changes: the TTL, or
    /// the idle timeout while no client is attached. `null` = not scheduled.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Addition: WebSocket attaches so far.
    #[serde(default)]
    pub attach_count: u64,
    /// Addition: input frames received so far.
    #[serde(default)]
    pub input_count: u64,
    /// Addition: the signal that ended it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Addition: why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<PtyEndReason>,
}

/// `GET /api/v1/pty`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PtySessionList {
    pub sessions: Vec<PtySessionInfo>,
}

/// The WebSocket protocol of `/api/v1/pty/{id}/ws`: binary frames only, first byte the opcode.
pub mod frame {
    /// client -> server: input bytes; server -> client: output bytes.
    pub const DATA: u8 = 0x00;
    /// client -> server: `cols` u16 BE, `rows` u16 BE.
    pub const RESIZE: u8 = 0x01;
    /// client -> server: ready for output (scrollback replay, then live output).
    pub const READY: u8 = 0x02;
    /// server -> client: the exit code as i32 BE; a close with reason `exit:<code>` follows.
    pub const EXIT: u8 = 0x03;

    /// Close code when the session is ended by the daemon (kill, idle timeout, TTL, shutdown).
    pub const CLOSE_TERMINATED: u16 = 1001;
    /// Close reason that goes with [`CLOSE_TERMINATED`].
    pub const TERMINATED_REASON: &str = "session terminated";
    /// Close code for a client that broke the protocol (no READY before too much output).
    pub const CLOSE_POLICY: u16 = 1008;
    /// Close code for a client that could not keep up with the output (reattach to resume).
    pub const CLOSE_TOO_SLOW: u16 = 1013;

    /// A client-to-server frame.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ClientFrame<'a> {
        Input(&'a [u8]),
        Resize { cols: u16, rows: u16 },
        Ready,
    }

    /// Why a client frame was not understood.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum FrameError {
        Empty,
        UnknownOpcode(u8),
        BadLength { opcode: u8, len: usize },
    }

    impl std::fmt::Display for FrameError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                FrameError::Empty => f.write_str("empty frame"),
                FrameError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#04x}"),
                FrameError::BadLength { opcode, len } => {
                    write!(f, "frame with opcode {opcode:#04x} has bad length {len}")
                }
            }
        }
    }

    impl<'a> ClientFrame<'a> {
        pub fn parse(bytes: &'a [u8]) -> Result<ClientFrame<'a>, FrameError> {
            let (&opcode, rest) = bytes.split_first().ok_or(FrameError::Empty)?;
            match opcode {
                DATA => Ok(ClientFrame::Input(rest)),
                RESIZE => match rest {
                    [c0, c1, r0, r1] => Ok(ClientFrame::Resize {
                        cols: u16::from_be_bytes([*c0, *c1]),
                        rows: u16::from_be_bytes([*r0, *r1]),
                    }),
                    _ => Err(FrameError::BadLength {
                        opcode,
                        len: bytes.len(),
                    }),
                },
                // Trailing bytes after READY are tolerated: nothing is lost by ignoring them.
                READY => Ok(ClientFrame::Ready),
                other => Err(FrameError::UnknownOpcode(other)),
            }
        }

        pub fn encode(&self) -> Vec<u8> {
            match self {
                ClientFrame::Input(bytes) => {
                    let mut out = Vec::with_capacity(bytes.len() + 1);
                    out.push(DATA);
                    out.extend_from_slice(bytes);
                    out
                }
                ClientFrame::Resize { cols, rows } => {
                    let [c0, c1] = cols.to_be_bytes();
                    let [r0, r1] = rows.to_be_bytes();
                    vec![RESIZE, c0, c1, r0, r1]
                }
                ClientFrame::Ready => vec![READY],
            }
        }
    }

    /// A server-to-client frame.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ServerFrame<'a> {
        Output(&'a [u8]),
        Exit(i32),
    }

    impl<'a> ServerFrame<'a> {
        /// `None` for frames this version does not know (ignore them).
        pub fn parse(bytes: &'a [u8]) -> Option<ServerFrame<'a>> {
            let (&opcode, rest) = bytes.split_first()?;
            match opcode {
                DATA => Some(ServerFrame::Output(rest)),
                EXIT => Some(ServerFrame::Exit(i32::from_be_bytes(
                    rest.get(..4)?.try_into().ok()?,
                ))),
                _ => None,
            }
        }

        pub fn encode(&self) -> Vec<u8> {
            match self {
                ServerFrame::Output(bytes) => {
                    let mut out = Vec::with_capacity(bytes.len() + 1);
                    out.push(DATA);
                    out.extend_from_slice(bytes);
                    out
                }
                ServerFrame::Exit(code) => {
                    let mut out = vec![EXIT];
                    out.extend_from_slice(&code.to_be_bytes());
                    out
                }
            }
        }
    }

    /// The close reason that goes with an exit frame.
    pub fn exit_reason(code: i32) -> String {
        format!("exit:{code}")
    }
}

#[cfg(test)]
mod tests {
    use super::frame::*;
    use super::*;

    #[test]
    fn sizes_are_clamped_to_the_contract() {
        assert_eq!(clamp_rows(None), 24);
        assert_eq!(clamp_cols(None), 80);
        assert_eq!(clamp_rows(Some(0)), 1);
        assert_eq!(clamp_rows(Some(-5)), 1);
        assert_eq!(clamp_rows(Some(501)), 500);
        assert_eq!(clamp_cols(Some(100_000)), 1000);
        assert_eq!(clamp_cols(Some(132)), 132);
    }

    #[test]
    fn create_request_accepts_sdk_nulls() {
        let req: CreatePtyRequest = serde_json::from_str(
            r#"{"command":"bash","args":null,"env":null,"working_dir":null,"rows":null,"cols":40}"#,
        )
        .unwrap();
        assert!(req.args.is_empty() && req.env.is_empty());
        assert_eq!((req.rows, req.cols), (None, Some(40)));
    }

    #[test]
    fn client_frames_round_trip_and_reject_garbage() {
        for frame in [
            ClientFrame::Input(b"ls\r"),
            ClientFrame::Resize {
                cols: 300,
                rows: 70,
            },
            ClientFrame::Ready,
        ] {
            assert_eq!(ClientFrame::parse(&frame.encode()), Ok(frame));
        }
        assert_eq!(
            ClientFrame::Resize { cols: 258, rows: 1 }.encode(),
            vec![1, 1, 2, 0, 1]
        );
        assert_eq!(ClientFrame::parse(&[]), Err(FrameError::Empty));
        assert_eq!(
            ClientFrame::parse(&[0x7f]),
            Err(FrameError::UnknownOpcode(0x7f))
        );
        assert!(matches!(
            ClientFrame::parse(&[RESIZE, 0, 80]),
            Err(FrameError::BadLength { .. })
        ));
    }

    #[test]
    fn server_frames_round_trip() {
        assert_eq!(ServerFrame::Exit(-3).encode(), vec![3, 255, 255, 255, 253]);
        assert_eq!(
            ServerFrame::parse(&ServerFrame::Exit(7).encode()),
            Some(ServerFrame::Exit(7))
        );
        assert_eq!(
            ServerFrame::parse(&[0, b'h', b'i']),
            Some(ServerFrame::Output(b"hi"))
        );
        assert_eq!(ServerFrame::parse(&[EXIT, 0]), None);
        assert_eq!(exit_reason(7), "exit:7");
    }

    #[test]
    fn info_keeps_tensorlake_nulls_and_hides_false_oom() {
        let info = PtySessionInfo {
            session_id: "s".into(),
            pid: 1,
            command: "bash".into(),
            args: vec![],
            rows: 24,
            cols: 80,
            created_at: 1,
            ended_at: None,
            exit_code: None,
            is_alive: true,
            oom_killed: false,
            labels: BTreeMap::new(),
            client_count: 0,
            last_activity_at: 1,
            expires_at: None,
            attach_count: 0,
            input_count: 0,
            signal: None,
            end_reason: None,
        };
        let json = serde_json::to_value(&info).unwrap();
        assert!(json["ended_at"].is_null() && json.get("ended_at").is_some());
        assert!(json["exit_code"].is_null() && json.get("exit_code").is_some());
        assert!(json.get("oom_killed").is_none());
        assert!(json.get("token").is_none());
    }
}

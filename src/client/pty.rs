//! PTY sessions: the HTTP routes, and [`PtyAttach`], a WebSocket attached to a session.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Client, ClientError, Result};
use crate::wire::pty::frame::{self, ClientFrame, ServerFrame};
use crate::wire::{
    CreatePtyRequest, CreatePtyResponse, ErrorBody, IDEMPOTENCY_KEY_HEADER, PTY_TOKEN_HEADER,
    PtySessionInfo, PtySessionList, ResizePtyRequest,
};

/// What an attached client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyEvent {
    /// Terminal output (scrollback first, then live).
    Output(Bytes),
    /// The program exited with this code (128 + signal for a signal); a close follows.
    Exit(i32),
    /// The connection closed; every later read returns this again.
    Closed(PtyClose),
}

/// How the daemon (or the network) closed the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyClose {
    /// The close code (1000 after an exit, 1001 `session terminated`, 1008, 1013); `None`
    /// when the connection ended without a close frame.
    pub code: Option<u16>,
    pub reason: String,
}

impl PtyClose {
    /// The daemon ended the session (kill, idle timeout, TTL, shutdown).
    pub fn is_terminated(&self) -> bool {
        self.code == Some(frame::CLOSE_TERMINATED)
    }
}

/// How an attached session ended, from [`PtyAttach::wait_exit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyExit {
    /// From the exit frame; `None` when the session was terminated instead.
    pub exit_code: Option<i32>,
    pub close: PtyClose,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The WebSocket read size (see [`Client::connect_pty`]).
const READ_BUFFER: usize = 16 << 10;

/// A WebSocket attached to a PTY session. Dropping it detaches (the session lives on).
#[derive(Debug)]
pub struct PtyAttach {
    socket: Socket,
    exit_code: Option<i32>,
    closed: Option<PtyClose>,
}

impl Client {
    /// `POST /pty`.
    pub async fn create_pty(&self, req: &CreatePtyRequest) -> Result<CreatePtyResponse> {
        self.json(|| self.request(Method::POST, "/api/v1/pty").json(req))
            .await
    }

    /// `POST /pty` with an `Idempotency-Key`.
    pub async fn create_pty_idempotent(
        &self,
        req: &CreatePtyRequest,
        key: &str,
    ) -> Result<CreatePtyResponse> {
        self.json(|| {
            self.request(Method::POST, "/api/v1/pty")
                .header(IDEMPOTENCY_KEY_HEADER, key)
                .json(req)
        })
        .await
    }

    /// `GET /pty`.
    pub async fn list_ptys(&self) -> Result<Vec<PtySessionInfo>> {
        let list: PtySessionList = self
            .json(|| self.request(Method::GET, "/api/v1/pty"))
            .await?;
        Ok(list.sessions)
    }

    /// `GET /pty/{id}`.
    pub async fn get_pty(&self, id: &str) -> Result<PtySessionInfo> {
        let path = pty_path(id, "");
        self.json(|| self.request(Method::GET, &path)).await
    }

    /// `POST /pty/{id}/resize`.
    pub async fn resize_pty(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        let path = pty_path(id, "/resize");
        let body = ResizePtyRequest {
            rows: rows.into(),
            cols: cols.into(),
        };
        self.send(|| self.request(Method::POST, &path).json(&body))
            .await?;
        Ok(())
    }

    /// `DELETE /pty/{id}`: SIGHUP, then SIGKILL after the daemon's grace period.
    pub async fn kill_pty(&self, id: &str) -> Result<()> {
        let path = pty_path(id, "");
        self.send(|| self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// Attaches to session `id` and sends READY: the scrollback, then live output, follow.
    pub async fn attach_pty(&self, id: &str, token: &str) -> Result<PtyAttach> {
        let mut attach = self.connect_pty(id, token).await?;
        attach.ready().await?;
        Ok(attach)
    }

    /// Opens the WebSocket without sending READY (the daemon holds output until
    /// [`PtyAttach::ready`]). The token goes both in `X-PTY-Token` and in `?token=`, as the
    /// Tensorlake clients send it.
    pub async fn connect_pty(&self, id: &str, token: &str) -> Result<PtyAttach> {
        let ws_base = if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            return Err(ClientError::WebSocket(format!(
                "cannot attach through {}: not an http(s) URL",
                self.base
            )));
        };
        let url = format!(
            "{ws_base}{}?token={}",
            pty_path(id, "/ws"),
            percent_encode(token)
        );
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        let headers = request.headers_mut();
        let header =
            |v: &str| HeaderValue::from_str(v).map_err(|e| ClientError::WebSocket(e.to_string()));
        headers.insert(PTY_TOKEN_HEADER, header(token)?);
        if let Some(bearer) = &self.token {
            headers.insert("authorization", header(&format!("Bearer {bearer}"))?);
        }
        // tungstenite zero-fills its whole read size before every read attempt, including the
        // one after each message that finds nothing: 128 KiB by default, a cost per keystroke
        // echo. 16 KiB reads keep that small and still move bulk output in few reads.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        // Nagle off: keystrokes and their echo are single small frames.
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(handshake_error)?;
        Ok(PtyAttach {
            socket,
            exit_code: None,
            closed: None,
        })
    }
}

impl PtyAttach {
    /// Sends READY (done by [`Client::attach_pty`]).
    pub async fn ready(&mut self) -> Result<()> {
        self.send_frame(ClientFrame::Ready.encode()).await
    }

    /// Types `bytes` into the terminal.
    pub async fn send_input(&mut self, bytes: impl AsRef<[u8]>) -> Result<()> {
        self.send_frame(ClientFrame::Input(bytes.as_ref()).encode())
            .await
    }

    /// Resizes the terminal.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<()> {
        self.send_frame(ClientFrame::Resize { cols, rows }.encode())
            .await
    }

    /// Sends one raw binary frame (for protocol extensions and tests).
    pub async fn send_frame(&mut self, frame: Vec<u8>) -> Result<()> {
        self.socket
            .send(Message::Binary(frame.into()))
            .await
            .map_err(ws_error)
    }

    /// The next output chunk, the exit, or the close.
    pub async fn read(&mut self) -> Result<PtyEvent> {
        if let Some(closed) = &self.closed {
            return Ok(PtyEvent::Closed(closed.clone()));
        }
        loop {
            let message = match self.socket.next().await {
                Some(Ok(message)) => message,
                None
                | Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Ok(self.close_with(None, String::new())),
                Some(Err(e)) => return Err(ws_error(e)),
            };
            match message {
                Message::Binary(data) => match ServerFrame::parse(&data) {
                    Some(ServerFrame::Output(_)) => {
                        return Ok(PtyEvent::Output(data.slice(1..)));
                    }
                    Some(ServerFrame::Exit(code)) => {
                        self.exit_code = Some(code);
                        return Ok(PtyEvent::Exit(code));
                    }
                    // Frames of a newer daemon.
                    None => {}
                },
                Message::Close(frame) => {
                    let (code, reason) = match frame {
                        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                        None => (None, String::new()),
                    };
                    return Ok(self.close_with(code, reason));
                }
                _ => {}
            }
        }
    }

    fn close_with(&mut self, code: Option<u16>, reason: String) -> PtyEvent {
        let close = PtyClose { code, reason };
        self.closed = Some(close.clone());
        PtyEvent::Closed(close)
    }

    /// Reads (discarding output) until the connection closes.
    pub async fn wait_exit(&mut self) -> Result<PtyExit> {
        loop {
            if let PtyEvent::Closed(close) = self.read().await? {
                return Ok(PtyExit {
                    exit_code: self.exit_code.or_else(|| exit_code_of(&close)),
                    close,
                });
            }
        }
    }

    /// The exit code, once the exit frame has been read.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// Detaches: a normal close. The session keeps running.
    pub async fn detach(mut self) -> Result<()> {
        match self.socket.close(None).await {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {}
            Err(e) => return Err(ws_error(e)),
        }
        // Wait for the daemon's close, so the close handshake completes.
        while let Some(Ok(_)) = self.socket.next().await {}
        Ok(())
    }
}

/// The exit code carried by a close reason `exit:<code>` (should the exit frame be missed).
fn exit_code_of(close: &PtyClose) -> Option<i32> {
    close.reason.strip_prefix("exit:")?.parse().ok()
}

fn ws_error(e: tungstenite::Error) -> ClientError {
    ClientError::WebSocket(e.to_string())
}

/// An HTTP answer instead of a WebSocket becomes the usual `Api` error, with its code.
fn handshake_error(e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Http(response) => {
            let status = reqwest::StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
            let body = response.body().clone().unwrap_or_default();
            match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(body) => ClientError::Api { status, body },
                Err(_) => ClientError::Status {
                    status,
                    text: String::from_utf8_lossy(&body).into_owned(),
                },
            }
        }
        other => ws_error(other),
    }
}

fn pty_path(id: &str, suffix: &str) -> String {
    format!("/api/v1/pty/{}{suffix}", percent_encode(id))
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_come_from_close_reasons_too() {
        let close = |reason: &str| PtyClose {
            code: Some(1000),
            reason: reason.into(),
        };
        assert_eq!(exit_code_of(&close("exit:7")), Some(7));
        assert_eq!(exit_code_of(&close("exit:-1")), Some(-1));
        assert_eq!(exit_code_of(&close("session terminated")), None);
        assert_eq!(pty_path("a/b c", "/ws"), "/api/v1/pty/a%2Fb%20c/ws");
    }
}

//! One event stream per daemon, shared by every object that lives on it.
//!
//! A [`DaemonHub`] keeps, per daemon endpoint, a task that follows `GET /events` and a view of
//! the processes the operator owns there (those labelled with [`OWNER_UID_LABEL`]). Every change
//! is forwarded as a [`Change`] so the reconciler can requeue exactly the affected object within
//! milliseconds. When the stream cannot resume (events dropped, or the daemon restarted: a new
//! `boot_id`), the task re-lists; when the stream is down it re-lists on a jittered, backed-off
//! timer until it comes back, so changes are still noticed, only later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::client::{Client, EventItem};
use crate::wire::{EventKind, ProcessInfo, PtySessionInfo};

/// Label the operator puts on every process it starts: the owning object's uid.
pub const OWNER_UID_LABEL: &str = "sandboxes.dev/uid";
/// Labels carrying the owner's namespace and name, so a change maps straight to an object.
pub const OWNER_NAMESPACE_LABEL: &str = "sandboxes.dev/namespace";
pub const OWNER_NAME_LABEL: &str = "sandboxes.dev/name";

/// Something a reconciler should look at.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An owned process changed (or was seen on a re-list).
    Process {
        endpoint: String,
        info: Box<ProcessInfo>,
    },
    /// An owned PTY session changed (or was seen on a re-list).
    Session {
        endpoint: String,
        info: Box<PtySessionInfo>,
    },
    /// The daemon restarted: everything known about its running processes may be stale.
    Restarted {
        endpoint: String,
        old_boot_id: String,
        new_boot_id: String,
    },
    /// The stream to the daemon broke; state is being polled until it returns.
    Disconnected { endpoint: String, error: String },
    /// The stream is (back) up.
    Connected { endpoint: String, boot_id: String },
}

/// The last known state of one daemon.
#[derive(Debug, Clone, Default)]
pub struct DaemonView {
    pub boot_id: Option<String>,
    pub connected: bool,
    /// Owned processes by owner uid.
    pub processes: HashMap<String, ProcessInfo>,
    /// Owned PTY sessions by owner uid.
    pub sessions: HashMap<String, PtySessionInfo>,
}

#[derive(Debug)]
struct Watch {
    view: Arc<Mutex<DaemonView>>,
    task: tokio::task::JoinHandle<()>,
}

/// The daemon streams of the whole operator.
#[derive(Debug)]
pub struct DaemonHub {
    watches: Mutex<HashMap<String, Watch>>,
    changes: mpsc::UnboundedSender<Change>,
    retry: Backoff,
}

impl DaemonHub {
    /// A hub sending every change to `changes`.
    pub fn new(changes: mpsc::UnboundedSender<Change>) -> Self {
        Self {
            watches: Mutex::new(HashMap::new()),
            changes,
            retry: Backoff::default(),
        }
    }

    /// Uses `backoff` for reconnects and polling while a stream is down.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.retry = backoff;
        self
    }

    /// Makes sure the daemon at `client.base_url()` is watched; returns its current view.
    pub fn watch(&self, client: &Client) -> Arc<Mutex<DaemonView>> {
        let endpoint = client.base_url().to_owned();
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watches.get(&endpoint).filter(|w| !w.task.is_finished()) {
            return w.view.clone();
        }
        let view = Arc::new(Mutex::new(DaemonView::default()));
        let task = tokio::spawn(follow(
            client.clone(),
            view.clone(),
            self.changes.clone(),
            self.retry,
        ));
        watches.insert(
            endpoint,
            Watch {
                view: view.clone(),
                task,
            },
        );
        view
    }

    /// The last known state of an owned process, if its daemon is watched and connected.
    pub fn process(&self, endpoint: &str, owner_uid: &str) -> Option<ProcessInfo> {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let view = watches
            .get(endpoint)?
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        view.processes.get(owner_uid).cloned()
    }

    /// The current view of a watched daemon.
    pub fn view(&self, endpoint: &str) -> Option<DaemonView> {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            watches
                .get(endpoint)?
                .view
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Stops watching `endpoint` (no object uses it any more).
    pub fn forget(&self, endpoint: &str) {
        if let Some(w) = self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(endpoint)
        {
            w.task.abort();
        }
    }
}

impl Drop for DaemonHub {
    fn drop(&mut self) {
        for (_, w) in self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            w.task.abort();
        }
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0-based): uniformly random up to `initial * 2^n`, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let ceiling = self
            .initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }
}

fn owner_uid(info: &ProcessInfo) -> Option<&str> {
    info.labels.get(OWNER_UID_LABEL).map(String::as_str)
}

/// Follows one daemon for as long as the hub keeps the task.
async fn follow(
    client: Client,
    view: Arc<Mutex<DaemonView>>,
    changes: mpsc::UnboundedSender<Change>,
    backoff: Backoff,
) {
    let endpoint = client.base_url().to_owned();
    let mut last_id: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let error = match client.events(last_id).await {
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                let mut error = String::from("the event stream ended");
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(EventItem::Hello(hello)) => {
                            failures = 0;
                            let previous = {
                                let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
                                v.connected = true;
                                let previous = v.boot_id.replace(hello.boot_id.clone());
                                if previous.as_ref().is_some_and(|old| *old != hello.boot_id) {
                                    // Another incarnation: nothing known of the old one holds.
                                    v.processes.clear();
                                    v.sessions.clear();
                                }
                                previous
                            };
                            if let Some(old) = previous.filter(|old| *old != hello.boot_id) {
                                let _ = changes.send(Change::Restarted {
                                    endpoint: endpoint.clone(),
                                    old_boot_id: old,
                                    new_boot_id: hello.boot_id.clone(),
                                });
                            }
                            let _ = changes.send(Change::Connected {
                                endpoint: endpoint.clone(),
                                boot_id: hello.boot_id.clone(),
                            });
                            if !hello.resumed {
                                // Missed events (or a new boot): the list is the truth.
                                last_id = Some(hello.last_seq);
                                if let Err(e) = relist(&client, &view, &changes).await {
                                    error = e.to_string();
                                    break;
                                }
                            }
                        }
                        Ok(EventItem::State(event)) => {
                            last_id = Some(event.seq);
                            if let Some(info) = event.process {
                                if matches!(
                                    event.kind,
                                    EventKind::ProcessStarted
                                        | EventKind::ProcessExited
                                        | EventKind::ProcessRestarted
                                        | EventKind::ProcessHealth
                                ) {
                                    record(&view, &changes, &endpoint, info);
                                }
                            }
                            if let Some(info) = event.session {
                                record_session(&view, &changes, &endpoint, info);
                            }
                        }
                        Err(e) => {
                            error = e.to_string();
                            break;
                        }
                    }
                }
                error
            }
            Err(e) => e.to_string(),
        };
        let was_connected = {
            let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut v.connected, false)
        };
        if was_connected || failures == 0 {
            let _ = changes.send(Change::Disconnected {
                endpoint: endpoint.clone(),
                error,
            });
        }
        tokio::time::sleep(backoff.delay(failures)).await;
        failures = failures.saturating_add(1);
        // Poll while the stream is down, so exits are still noticed.
        let _ = relist(&client, &view, &changes).await;
    }
}

fn record(
    view: &Mutex<DaemonView>,
    changes: &mpsc::UnboundedSender<Change>,
    endpoint: &str,
    info: ProcessInfo,
) {
    let Some(uid) = owner_uid(&info).map(str::to_owned) else {
        return;
    };
    let changed = {
        let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
        let changed = v.processes.get(&uid) != Some(&info);
        v.processes.insert(uid, info.clone());
        changed
    };
    if changed {
        let _ = changes.send(Change::Process {
            endpoint: endpoint.to_owned(),
            info: Box::new(info),
        });
    }
}

fn record_session(
    view: &Mutex<DaemonView>,
    changes: &mpsc::UnboundedSender<Change>,
    endpoint: &str,
    info: PtySessionInfo,
) {
    let Some(uid) = info.labels.get(OWNER_UID_LABEL).cloned() else {
        return;
    };
    let changed = {
        let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
        let changed = v.sessions.get(&uid) != Some(&info);
        v.sessions.insert(uid, info.clone());
        changed
    };
    if changed {
        let _ = changes.send(Change::Session {
            endpoint: endpoint.to_owned(),
            info: Box::new(info),
        });
    }
}

async fn relist(
    client: &Client,
    view: &Mutex<DaemonView>,
    changes: &mpsc::UnboundedSender<Change>,
) -> crate::client::Result<()> {
    let all = client.list(&[]).await?;
    for info in all {
        record(view, changes, client.base_url(), info);
    }
    match client.list_ptys().await {
        Ok(sessions) => {
            for info in sessions {
                record_session(view, changes, client.base_url(), info);
            }
        }
        // A daemon without the PTY half still serves processes.
        Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

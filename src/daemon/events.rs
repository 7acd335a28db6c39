//! The daemon's stream of state changes (`GET /events`): a bounded ring of serialized events
//! with increasing sequence numbers. Subscribers pull from a cursor, so a slow subscriber never
//! holds anything up; one that falls behind the ring is told it must re-list.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::wire::{DaemonEvent, EventKind, ProcessInfo, PtySessionInfo, now_ms};

/// One event, serialized when first read: most events are never read (no `/events`
/// subscriber), and serializing a ProcessInfo at every start and exit showed in the profile.
#[derive(Debug)]
struct Event {
    event: DaemonEvent,
    json: OnceLock<Bytes>,
}

impl Event {
    fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.event).unwrap_or_default()))
            .clone()
    }
}

#[derive(Debug)]
struct Ring {
    next_seq: u64,
    events: VecDeque<(u64, Arc<Event>)>,
}

#[derive(Debug)]
pub struct EventBus {
    boot_id: String,
    capacity: usize,
    ring: Mutex<Ring>,
    changed: Notify,
}

/// What a subscriber gets from one read.
#[derive(Debug, Default)]
pub struct EventBatch {
    /// `(seq, json)` pairs in order.
    pub events: Vec<(u64, Bytes)>,
    /// Events after the cursor were already dropped from the ring.
    pub missed: bool,
}

impl EventBus {
    pub fn new(boot_id: String, capacity: usize) -> Self {
        Self {
            boot_id,
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                next_seq: 1,
                events: VecDeque::new(),
            }),
            changed: Notify::new(),
        }
    }

    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest sequence number (0 = none yet).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    pub fn publish_process(&self, kind: EventKind, process: ProcessInfo) {
        self.publish(kind, Some(process), None);
    }

    pub fn publish_session(&self, kind: EventKind, session: PtySessionInfo) {
        self.publish(kind, None, Some(session));
    }

    pub(crate) fn publish(
        &self,
        kind: EventKind,
        process: Option<ProcessInfo>,
        session: Option<PtySessionInfo>,
    ) {
        {
            let mut ring = self.lock();
            let seq = ring.next_seq;
            ring.next_seq += 1;
            let event = DaemonEvent {
                seq,
                boot_id: self.boot_id.clone(),
                kind,
                at: now_ms(),
                process,
                session,
            };
            let event = Arc::new(Event {
                event,
                json: OnceLock::new(),
            });
            ring.events.push_back((seq, event));
            while ring.events.len() > self.capacity {
                ring.events.pop_front();
            }
        }
        self.changed.notify_waiters();
    }

    /// Events with `seq > after`, at most `max` of them.
    pub fn read_after(&self, after: u64, max: usize) -> EventBatch {
        let (picked, missed) = {
            let ring = self.lock();
            let oldest = ring
                .events
                .front()
                .map(|(s, _)| *s)
                .unwrap_or(ring.next_seq);
            let start = ring.events.partition_point(|(s, _)| *s <= after);
            let picked: Vec<(u64, Arc<Event>)> =
                ring.events.range(start..).take(max).cloned().collect();
            (picked, after + 1 < oldest)
        };
        // Serialized outside the lock, so publishers never wait for a reader's serde work.
        EventBatch {
            events: picked.into_iter().map(|(s, e)| (s, e.json())).collect(),
            missed,
        }
    }

    /// Create before checking, await after (see `Output::changed`).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::DaemonEvent;

    #[test]
    fn ring_keeps_order_and_reports_missed() {
        let bus = EventBus::new("b".into(), 3);
        for _ in 0..5 {
            bus.publish(EventKind::PtyCreated, None, None);
        }
        assert_eq!(bus.last_seq(), 5);
        let all = bus.read_after(0, 10);
        assert!(all.missed);
        let seqs: Vec<u64> = all.events.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        let ev: DaemonEvent = serde_json::from_slice(&all.events[0].1).unwrap();
        assert_eq!(ev.seq, 3);
        assert!(!bus.read_after(2, 10).missed);
        assert!(bus.read_after(5, 10).events.is_empty());
    }
}

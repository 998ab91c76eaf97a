//! Aggregation of repeated failure events, such as authentication failures and denied requests,
//! so that a caller hammering the server writes a few audit events instead of one per request.
//!
//! Events share a key when they have the same action, actor subject and `reason`, `method` and
//! `route` filters. The first event of a key is written at once and opens a window. Repeats
//! inside the window are only counted. When the window has closed, [`AuditThrottle::flush_expired`]
//! writes one new event for the repeats, with `count` set to their number and the fields of the
//! last repeat. [`AuditThrottle::flush_all`] writes every pending count, for shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::audit::{AuditAction, AuditEvent, AuditSink};
use crate::store::StoreError;

/// Default length of the window in which repeats are counted.
pub const DEFAULT_REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Maximum keys tracked at once. Events of further keys share one overflow key per action, so
/// memory stays bounded however many subjects or routes fail.
pub const MAX_KEYS: usize = 1024;

/// Subject of the overflow key's events, which stand for several subjects.
pub const OVERFLOW_SUBJECT: &str = "*";

/// Filters that, with the action and subject, make up the key.
const KEY_FILTERS: [&str; 3] = ["reason", "method", "route"];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    action: AuditAction,
    subject: String,
    filters: [Option<String>; 3],
}

impl Key {
    fn of(event: &AuditEvent) -> Self {
        Self {
            action: event.action,
            subject: event.actor_subject.clone(),
            filters: KEY_FILTERS.map(|name| event.filters.get(name).cloned()),
        }
    }

    fn overflow(action: AuditAction) -> Self {
        Self {
            action,
            subject: OVERFLOW_SUBJECT.to_owned(),
            filters: [None, None, None],
        }
    }
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    repeats: u64,
    /// The last repeat, or the first event while there is none; the count event copies it.
    latest: AuditEvent,
}

impl Window {
    /// Builds the event that stands for the counted repeats, `None` when there were none.
    fn count_event(self) -> Option<AuditEvent> {
        (self.repeats > 0).then(|| AuditEvent {
            id: Uuid::new_v4(),
            count: self.repeats,
            ..self.latest
        })
    }
}

/// Writes failure events through an [`AuditSink`], folding repeats into counted events.
pub struct AuditThrottle {
    sink: Arc<dyn AuditSink>,
    window: Duration,
    max_keys: usize,
    windows: Mutex<HashMap<Key, Window>>,
}

impl std::fmt::Debug for AuditThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditThrottle")
            .field("window", &self.window)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl AuditThrottle {
    /// Creates a throttle that counts repeats for `window` after each first event.
    pub fn new(sink: Arc<dyn AuditSink>, window: Duration) -> Self {
        Self::with_max_keys(sink, window, MAX_KEYS)
    }

    /// Creates a throttle that tracks at most `max_keys` keys besides the overflow keys.
    pub fn with_max_keys(sink: Arc<dyn AuditSink>, window: Duration, max_keys: usize) -> Self {
        Self {
            sink,
            window,
            max_keys,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the length of the counting window.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Window>> {
        // Every change to the map is complete before the guard drops, so a poisoned map is
        // still consistent.
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one event: written at once when it opens a window, counted otherwise.
    ///
    /// When the event's key had a window that has closed, its counted repeats are written
    /// first. An error means an event may not have been kept.
    pub async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        let now = Instant::now();
        let (closed, first) = {
            let mut windows = self.lock();
            let mut key = Key::of(&event);
            let mut event = event;
            if !windows.contains_key(&key) && windows.len() >= self.max_keys {
                key = Key::overflow(event.action);
                event.actor_subject = OVERFLOW_SUBJECT.to_owned();
                event.filters.clear();
                event
                    .filters
                    .insert("overflow".to_owned(), "true".to_owned());
            }
            match windows.get_mut(&key) {
                Some(window) if now.duration_since(window.opened) < self.window => {
                    window.repeats += 1;
                    window.latest = event;
                    return Ok(());
                }
                _ => {}
            }
            let closed = windows.remove(&key).and_then(Window::count_event);
            windows.insert(
                key,
                Window {
                    opened: now,
                    repeats: 0,
                    latest: event.clone(),
                },
            );
            (closed, event)
        };
        if let Some(closed) = closed {
            self.sink.record(&closed).await?;
        }
        self.sink.record(&first).await
    }

    /// Writes one counted event for each window that has closed and removes those windows.
    /// Returns the number of events written. Failures are logged and their counts dropped.
    pub async fn flush_expired(&self) -> usize {
        let now = Instant::now();
        let closed: Vec<Window> = {
            let mut windows = self.lock();
            let expired: Vec<Key> = windows
                .iter()
                .filter(|(_, window)| now.duration_since(window.opened) >= self.window)
                .map(|(key, _)| key.clone())
                .collect();
            expired
                .iter()
                .filter_map(|key| windows.remove(key))
                .collect()
        };
        self.write_counts(closed).await
    }

    /// Writes every pending count, closing all windows, for shutdown. Returns the number of
    /// events written.
    pub async fn flush_all(&self) -> usize {
        let all: Vec<Window> = self.lock().drain().map(|(_, window)| window).collect();
        self.write_counts(all).await
    }

    async fn write_counts(&self, windows: Vec<Window>) -> usize {
        let mut written = 0;
        for event in windows.into_iter().filter_map(Window::count_event) {
            match self.sink.record(&event).await {
                Ok(()) => written += 1,
                Err(error) => tracing::warn!(
                    error = %error,
                    action = event.action.as_str(),
                    count = event.count,
                    "failed to write the count of repeated audit events"
                ),
            }
        }
        written
    }

    /// Returns the number of keys with an open window.
    pub fn open_windows(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditOutcome;
    use crate::model::{Actor, Role};

    #[derive(Debug, Default)]
    struct Recorder {
        events: Mutex<Vec<AuditEvent>>,
    }

    #[async_trait::async_trait]
    impl AuditSink for Recorder {
        async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
            self.events.lock().unwrap().push(event.clone());
            Ok(())
        }
    }

    impl Recorder {
        fn counts(&self) -> Vec<u64> {
            self.events
                .lock()
                .unwrap()
                .iter()
                .map(|event| event.count)
                .collect()
        }
    }

    fn failure(subject: &str, route: &str) -> AuditEvent {
        AuditEvent::new(
            &Actor::new(subject, Role::Application),
            AuditAction::AuthenticationFailed,
            AuditOutcome::Denied,
        )
        .with_filter("reason", "invalid")
        .with_filter("method", "GET")
        .with_filter("route", route)
    }

    #[tokio::test]
    async fn repeats_counted_in_one_event() {
        let recorder = Arc::new(Recorder::default());
        let throttle = AuditThrottle::new(recorder.clone(), Duration::from_millis(50));
        for _ in 0..5 {
            throttle.record(failure("anonymous", "/a")).await.unwrap();
        }
        assert_eq!(recorder.counts(), [1]);

        assert_eq!(throttle.flush_expired().await, 0);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(throttle.flush_expired().await, 1);

        assert_eq!(recorder.counts(), [1, 4]);
        assert_eq!(throttle.open_windows(), 0);
    }

    #[tokio::test]
    async fn different_routes_separate() {
        let recorder = Arc::new(Recorder::default());
        let throttle = AuditThrottle::new(recorder.clone(), Duration::from_secs(60));
        throttle.record(failure("anonymous", "/a")).await.unwrap();
        throttle.record(failure("anonymous", "/b")).await.unwrap();
        throttle.record(failure("anonymous", "/b")).await.unwrap();

        assert_eq!(recorder.counts(), [1, 1]);
        assert_eq!(throttle.flush_all().await, 1);
        assert_eq!(recorder.counts(), [1, 1, 1]);
    }

    #[tokio::test]
    async fn closed_window_written_before_next() {
        let recorder = Arc::new(Recorder::default());
        let throttle = AuditThrottle::new(recorder.clone(), Duration::from_millis(20));
        throttle.record(failure("anonymous", "/a")).await.unwrap();
        throttle.record(failure("anonymous", "/a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;

        throttle.record(failure("anonymous", "/a")).await.unwrap();

        assert_eq!(recorder.counts(), [1, 1, 1]);
        let ids: Vec<Uuid> = recorder
            .events
            .lock()
            .unwrap()
            .iter()
            .map(|event| event.id)
            .collect();
        assert_ne!(ids[1], ids[2]);
    }

    #[tokio::test]
    async fn overflow_keys_fold_into_one() {
        let recorder = Arc::new(Recorder::default());
        let throttle = AuditThrottle::with_max_keys(recorder.clone(), Duration::from_secs(60), 2);
        for subject in ["a", "b", "c", "d", "e"] {
            throttle.record(failure(subject, "/a")).await.unwrap();
        }

        assert_eq!(throttle.open_windows(), 3);
        assert_eq!(recorder.counts(), [1, 1, 1]);
        assert_eq!(throttle.flush_all().await, 1);
        let events = recorder.events.lock().unwrap();
        let overflow = events.last().unwrap();
        assert_eq!(overflow.actor_subject, OVERFLOW_SUBJECT);
        assert_eq!(overflow.count, 2);
        assert_eq!(
            overflow.filters.get("overflow").map(String::as_str),
            Some("true")
        );
    }
}

//! A token cache with one refresh at a time per key.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Maximum margin before expiry at which a cached token is refreshed.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Maximum lifetime a cached token is trusted for (one day), whatever the platform claims. The cap
/// also keeps the `Instant` arithmetic below from overflowing on absurd values.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Returns when a token that lives `lifetime` from now should be refreshed: five minutes before
/// it expires, or halfway through its life when it lives less than ten minutes.
pub(crate) fn refresh_at(lifetime: Duration) -> Instant {
    let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
    let margin = MAX_REFRESH_MARGIN.min(lifetime / 2);
    Instant::now() + lifetime.saturating_sub(margin)
}

struct Slot<V, E> {
    value: Option<(V, Instant)>,
    failure: Option<(E, Instant)>,
}

type SlotHandle<V, E> = Arc<tokio::sync::Mutex<Slot<V, E>>>;

/// Values (tokens, installation ids) per key, each fetched by one caller at a time.
///
/// A caller that finds no fresh value takes the key's async lock and fetches. Callers that
/// arrive meanwhile wait on the lock, then take the value the fetch stored. If that fetch failed,
/// they get its error instead of fetching again, so a broken credential costs one request rather
/// than one per waiting caller. Callers that arrive after a failure fetch anew.
pub(crate) struct SingleFlightCache<K, V, E> {
    slots: Mutex<HashMap<K, SlotHandle<V, E>>>,
}

impl<K, V, E> Default for SingleFlightCache<K, V, E> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, V, E> SingleFlightCache<K, V, E>
where
    K: Eq + Hash + Clone,
    V: Clone + PartialEq,
    E: Clone,
{
    fn slot(&self, key: &K) -> SlotHandle<V, E> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let slot = slots.entry(key.clone()).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(Slot {
                value: None,
                failure: None,
            }))
        });
        Arc::clone(slot)
    }

    /// Returns the cached value for `key` while it is fresh, else runs `fetch`, which returns the
    /// value and the instant at which it must be refreshed.
    pub(crate) async fn get<F, Fut>(&self, key: &K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Instant), E>>,
    {
        let arrived = Instant::now();
        let slot = self.slot(key);
        let mut guard = slot.lock().await;

        if let Some((value, refresh_at)) = &guard.value {
            if Instant::now() < *refresh_at {
                return Ok(value.clone());
            }
        }
        if let Some((error, failed_at)) = &guard.failure {
            if *failed_at >= arrived {
                return Err(error.clone());
            }
        }

        match fetch().await {
            Ok((value, refresh_at)) => {
                guard.value = Some((value.clone(), refresh_at));
                guard.failure = None;
                Ok(value)
            }
            Err(error) => {
                guard.value = None;
                guard.failure = Some((error.clone(), Instant::now()));
                Err(error)
            }
        }
    }

    /// Drops the cached value for `key` if it is still `stale`; a value another caller already
    /// refreshed stays.
    pub(crate) async fn invalidate(&self, key: &K, stale: &V) {
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        if guard
            .value
            .as_ref()
            .is_some_and(|(value, _)| value == stale)
        {
            guard.value = None;
        }
    }

    /// Returns the cached value if it is fresh and no refresh holds the lock.
    #[cfg(test)]
    pub(crate) fn peek(&self, key: &K) -> Option<V> {
        let slot = self.slot(key);
        let guard = slot.try_lock().ok()?;
        let (value, refresh_at) = guard.value.as_ref()?;
        (Instant::now() < *refresh_at).then(|| value.clone())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn absurd_lifetime_is_capped() {
        let at = super::refresh_at(std::time::Duration::from_secs(u64::MAX));
        assert!(at <= std::time::Instant::now() + super::MAX_TOKEN_LIFETIME);
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    type Cache = SingleFlightCache<&'static str, u32, String>;

    #[tokio::test]
    async fn concurrent_callers_fetch_once() {
        let cache = Arc::new(Cache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let cache = Arc::clone(&cache);
            let fetches = Arc::clone(&fetches);
            tasks.push(tokio::spawn(async move {
                cache
                    .get(&"key", || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok((7, Instant::now() + Duration::from_secs(60)))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(7));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn waiters_share_failure() {
        let cache = Arc::new(Cache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let cache = Arc::clone(&cache);
            let fetches = Arc::clone(&fetches);
            tasks.push(tokio::spawn(async move {
                cache
                    .get(&"key", || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Err("rejected".to_owned())
                    })
                    .await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().is_err());
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stale_value_refetched() {
        let cache = Cache::default();
        let first = cache
            .get(&"key", || async { Ok((1, Instant::now())) })
            .await;
        let second = cache
            .get(&"key", || async {
                Ok((2, Instant::now() + Duration::from_secs(60)))
            })
            .await;
        assert_eq!(first, Ok(1));
        assert_eq!(second, Ok(2));
    }

    #[tokio::test]
    async fn invalidate_keeps_newer_value() {
        let cache = Cache::default();
        let later = Instant::now() + Duration::from_secs(60);
        cache
            .get(&"key", || async { Ok((2, later)) })
            .await
            .unwrap();
        cache.invalidate(&"key", &1).await;
        assert_eq!(cache.peek(&"key"), Some(2));
    }

    #[test]
    fn short_lifetime_halves_margin() {
        let before = Instant::now();
        let at = refresh_at(Duration::from_secs(60));
        let wait = at - before;
        assert!(wait >= Duration::from_secs(29), "{wait:?}");
        assert!(wait <= Duration::from_secs(31), "{wait:?}");
    }
}

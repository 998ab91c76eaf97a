//! Tracks which projects are in their first cache warm-up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time after which a first warm-up that has not finished stops reporting `initializing`, so a
/// stuck or failed warm-up task cannot hide a project's status for good.
const WARMUP_LIMIT: Duration = Duration::from_secs(60);

/// Warm-up state per project key.
#[derive(Debug, Default)]
pub(crate) struct WarmupTracker {
    /// Start time while the project's first warm-up runs, `None` once it finished.
    projects: Mutex<HashMap<String, Option<Instant>>>,
}

impl WarmupTracker {
    /// Marks the first warm-up of `project_key` as running; returns `false` when the project
    /// was warmed up before, so later warm-ups never report it as initializing.
    pub(crate) fn begin(&self, project_key: &str) -> bool {
        let mut projects = self
            .projects
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if projects.contains_key(project_key) {
            return false;
        }
        projects.insert(project_key.to_owned(), Some(Instant::now()));
        true
    }

    /// Marks the first warm-up of `project_key` as finished, whatever its outcome.
    pub(crate) fn finish(&self, project_key: &str) {
        let mut projects = self
            .projects
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        projects.insert(project_key.to_owned(), None);
    }

    /// Reports whether the first warm-up of `project_key` is still running and began less than
    /// [`WARMUP_LIMIT`] ago.
    pub(crate) fn is_initializing(&self, project_key: &str) -> bool {
        let projects = self
            .projects
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match projects.get(project_key) {
            Some(Some(started)) => started.elapsed() < WARMUP_LIMIT,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_warm_up_initializing() {
        let tracker = WarmupTracker::default();
        assert!(tracker.begin("acme/app"));
        assert!(tracker.is_initializing("acme/app"));
    }

    #[test]
    fn stuck_warm_up_expires() {
        let tracker = WarmupTracker::default();
        let started = Instant::now()
            .checked_sub(WARMUP_LIMIT + Duration::from_secs(1))
            .unwrap();
        tracker
            .projects
            .lock()
            .unwrap()
            .insert("acme/app".into(), Some(started));
        assert!(!tracker.is_initializing("acme/app"));
    }

    #[test]
    fn second_warm_up_not_initializing() {
        let tracker = WarmupTracker::default();
        tracker.begin("acme/app");
        tracker.finish("acme/app");
        assert!(!tracker.begin("acme/app"));
        assert!(!tracker.is_initializing("acme/app"));
    }
}

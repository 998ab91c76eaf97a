//! Tracks which projects are in their first cache warm-up.

use std::collections::HashMap;
use std::sync::Mutex;

/// Warm-up state per project key.
#[derive(Debug, Default)]
pub(crate) struct WarmupTracker {
    /// `true` while the project's first warm-up runs, `false` once it finished.
    projects: Mutex<HashMap<String, bool>>,
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
        projects.insert(project_key.to_owned(), true);
        true
    }

    /// Marks the first warm-up of `project_key` as finished, whatever its outcome.
    pub(crate) fn finish(&self, project_key: &str) {
        let mut projects = self
            .projects
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        projects.insert(project_key.to_owned(), false);
    }

    /// Reports whether the first warm-up of `project_key` is still running.
    pub(crate) fn is_initializing(&self, project_key: &str) -> bool {
        let projects = self
            .projects
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        projects.get(project_key).copied().unwrap_or(false)
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
    fn second_warm_up_not_initializing() {
        let tracker = WarmupTracker::default();
        tracker.begin("acme/app");
        tracker.finish("acme/app");
        assert!(!tracker.begin("acme/app"));
        assert!(!tracker.is_initializing("acme/app"));
    }
}

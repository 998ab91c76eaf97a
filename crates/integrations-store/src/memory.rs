//! In-memory store for tests and examples: the rules of the SQL stores, kept by one mutex.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use integrations_core::audit_chain::{self, ChainedEvent};
use integrations_core::store::{
    AuditQuery, DataKeyState, IntegrationChanges, IntegrationQuery, ProjectDeletion, SealedRow,
};
use integrations_core::tokens::{
    ApplicationToken, ApplicationTokenRecord, RevokeResult, TokenHash,
};
use integrations_core::{
    AuditEvent, AuditSink, IntegrationStore, Project, StoreError, StoredDataKey, StoredIntegration,
};
use uuid::Uuid;

/// In-memory store. Cloning is cheap and shares the data, which is dropped with the last clone.
///
/// Each method checks every rule before it changes anything, so a failed call changes nothing,
/// as a rolled-back transaction would.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// Projects by key.
    projects: BTreeMap<String, Project>,
    /// Integrations with their `projects` left empty, by id.
    integrations: HashMap<Uuid, StoredIntegration>,
    /// Project keys of each scoped integration.
    links: HashMap<Uuid, BTreeSet<String>>,
    /// Audit events in the order written, chained as the SQL stores chain them. The `seq` of
    /// an event is its index plus one.
    audit: Vec<ChainedEvent>,
    /// Data keys in the order added.
    data_keys: Vec<StoredDataKey>,
    /// Application tokens by id.
    tokens: HashMap<Uuid, ApplicationTokenRecord>,
}

impl MemoryStore {
    /// Creates an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Methods change the state only after every check passed, so a panic elsewhere while
        // the lock was held cannot have left it half changed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Appends `event` to the audit chain.
    fn push_audit(&mut self, event: &AuditEvent) {
        let previous = self
            .audit
            .last()
            .map(|last| last.hash.clone())
            .unwrap_or_else(|| audit_chain::GENESIS_HASH.to_vec());
        let hash = audit_chain::chain_hash(&previous, event).to_vec();
        let seq = i64::try_from(self.audit.len()).unwrap_or(i64::MAX - 1) + 1;
        self.audit.push(ChainedEvent {
            seq,
            event: event.clone(),
            prev_hash: previous,
            hash,
            project_key: integrations_core::store::audit_project_key(event),
        });
    }

    /// Events matching `query`, newest first; among equal times the event written last first.
    fn search_audit(&self, query: &AuditQuery) -> Vec<AuditEvent> {
        let mut newest_first: Vec<&ChainedEvent> = self
            .audit
            .iter()
            .filter(|stored| query.matches(&stored.event))
            .collect();
        newest_first.sort_by_key(|stored| std::cmp::Reverse((stored.event.at, stored.seq)));
        let offset = usize::try_from(query.offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        newest_first
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|stored| stored.event.clone())
            .collect()
    }

    /// Returns an integration with its project identifiers filled in, sorted.
    fn resolved(&self, id: Uuid) -> Option<StoredIntegration> {
        let mut stored = self.integrations.get(&id)?.clone();
        let mut identifiers: Vec<String> = self
            .links
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|key| self.projects.get(key))
            .map(|project| project.identifier.clone())
            .collect();
        identifiers.sort();
        stored.integration.projects = identifiers;
        Some(stored)
    }

    /// Unsets the default of `category` other than `keep`, returning the ids it demoted.
    fn unset_default(
        &mut self,
        category: &str,
        keep: Uuid,
        updated_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Vec<Uuid> {
        let mut demoted = Vec::new();
        for stored in self.integrations.values_mut() {
            let integration = &mut stored.integration;
            if integration.category() == category
                && integration.is_default
                && integration.id != keep
            {
                integration.is_default = false;
                if let Some(updated_at) = updated_at {
                    integration.updated_at = updated_at;
                }
                demoted.push(integration.id);
            }
        }
        demoted
    }

    /// Ids of integrations linked to `key`, split into those scoped to it alone and the rest.
    fn linked(&self, key: &str) -> (Vec<Uuid>, Vec<Uuid>) {
        let mut sole = Vec::new();
        let mut shared = Vec::new();
        for (id, keys) in &self.links {
            if !keys.contains(key) {
                continue;
            }
            if keys.len() == 1 {
                sole.push(*id);
            } else {
                shared.push(*id);
            }
        }
        sole.sort();
        shared.sort();
        (sole, shared)
    }
}

/// The error a database reports when a non-global integration would be the default.
fn default_not_global() -> StoreError {
    StoreError::Database(
        "only a global integration can be the default (constraint integrations_default_is_global)"
            .to_owned(),
    )
}

#[async_trait]
impl IntegrationStore for MemoryStore {
    async fn insert_project(
        &self,
        project: &Project,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let key = project.key();
        if state.projects.contains_key(&key) {
            return Err(StoreError::DuplicateProject(project.identifier.clone()));
        }
        state.projects.insert(key, project.clone());
        state.push_audit(audit);
        Ok(())
    }

    async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        Ok(self.lock().projects.values().cloned().collect())
    }

    async fn find_project(&self, key: &str) -> Result<Option<Project>, StoreError> {
        Ok(self.lock().projects.get(key).cloned())
    }

    async fn delete_project(
        &self,
        key: &str,
        audit: &AuditEvent,
    ) -> Result<ProjectDeletion, StoreError> {
        let mut state = self.lock();
        if !state.projects.contains_key(key) {
            return Ok(ProjectDeletion::NotFound);
        }
        let (sole, detached) = state.linked(key);
        if !sole.is_empty() {
            return Err(StoreError::ProjectInUse(sole));
        }

        state.projects.remove(key);
        for id in &detached {
            if let Some(keys) = state.links.get_mut(id) {
                keys.remove(key);
            }
        }
        state.push_audit(audit);
        Ok(ProjectDeletion::Deleted {
            detached_integrations: detached,
        })
    }

    async fn insert_integration(
        &self,
        integration: &StoredIntegration,
        project_keys: &[String],
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let metadata = &integration.integration;
        if let Some(missing) = project_keys
            .iter()
            .find(|key| !state.projects.contains_key(*key))
        {
            return Err(StoreError::ProjectNotFound(missing.clone()));
        }
        if metadata.is_default && !metadata.is_global {
            return Err(default_not_global());
        }
        if state.integrations.contains_key(&metadata.id) {
            return Err(StoreError::Conflict(format!(
                "integration {} already exists",
                metadata.id
            )));
        }

        let demoted = if metadata.is_default {
            state.unset_default(metadata.category(), metadata.id, Some(metadata.updated_at))
        } else {
            Vec::new()
        };
        let mut stored = integration.clone();
        stored.integration.projects.clear();
        state.integrations.insert(metadata.id, stored);
        if !project_keys.is_empty() {
            state
                .links
                .insert(metadata.id, project_keys.iter().cloned().collect());
        }
        state.push_audit(&audit.clone().with_demoted_defaults(&demoted));
        Ok(())
    }

    async fn list_integrations(
        &self,
        query: &IntegrationQuery,
    ) -> Result<Vec<StoredIntegration>, StoreError> {
        let state = self.lock();
        let mut matches: Vec<StoredIntegration> = state
            .integrations
            .keys()
            .filter_map(|id| state.resolved(*id))
            .filter(|stored| {
                let integration = &stored.integration;
                let in_project = match &query.project_key {
                    Some(key) => state
                        .links
                        .get(&integration.id)
                        .is_some_and(|keys| keys.contains(key)),
                    None => true,
                };
                query
                    .provider
                    .is_none_or(|provider| integration.provider == provider)
                    && in_project
                    && (!query.global_only || integration.is_global)
                    && (!query.default_only || integration.is_default)
            })
            .collect();
        matches.sort_by(|left, right| {
            let left = &left.integration;
            let right = &right.integration;
            (!left.is_default, left.created_at, left.id).cmp(&(
                !right.is_default,
                right.created_at,
                right.id,
            ))
        });
        Ok(matches)
    }

    async fn find_integration(&self, id: Uuid) -> Result<Option<StoredIntegration>, StoreError> {
        Ok(self.lock().resolved(id))
    }

    async fn update_integration(
        &self,
        id: Uuid,
        changes: &IntegrationChanges,
        audit: &AuditEvent,
    ) -> Result<Option<StoredIntegration>, StoreError> {
        let mut state = self.lock();
        let Some(current) = state.integrations.get(&id) else {
            return Ok(None);
        };
        let current = &current.integration;
        let becomes_default = changes.is_default == Some(true) && !current.is_default;
        if becomes_default && !current.is_global {
            return Err(default_not_global());
        }

        let demoted = if becomes_default {
            let category = current.category();
            state.unset_default(category, id, changes.updated_at)
        } else {
            Vec::new()
        };
        let Some(stored) = state.integrations.get_mut(&id) else {
            return Ok(None);
        };
        if let Some((sealed, fields)) = &changes.sealed_credentials {
            stored.sealed_credentials = sealed.clone();
            stored.integration.credential_fields = fields.clone();
        }
        if let Some(config) = &changes.config {
            stored.integration.config = config.clone();
        }
        if let Some(is_default) = changes.is_default {
            stored.integration.is_default = is_default;
        }
        if let Some(updated_at) = changes.updated_at {
            stored.integration.updated_at = updated_at;
        }
        state.push_audit(&audit.clone().with_demoted_defaults(&demoted));
        Ok(state.resolved(id))
    }

    async fn delete_integration(&self, id: Uuid, audit: &AuditEvent) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if state.integrations.remove(&id).is_none() {
            return Ok(false);
        }
        state.links.remove(&id);
        state.push_audit(audit);
        Ok(true)
    }

    async fn list_data_keys(&self) -> Result<Vec<StoredDataKey>, StoreError> {
        Ok(self.lock().data_keys.clone())
    }

    async fn find_data_key(&self, id: &str) -> Result<Option<StoredDataKey>, StoreError> {
        Ok(self
            .lock()
            .data_keys
            .iter()
            .find(|key| key.id == id)
            .cloned())
    }

    async fn primary_data_key(&self) -> Result<Option<StoredDataKey>, StoreError> {
        Ok(self
            .lock()
            .data_keys
            .iter()
            .find(|key| key.is_primary)
            .cloned())
    }

    async fn insert_data_key(&self, key: &StoredDataKey) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.data_keys.iter().any(|existing| existing.id == key.id)
            || (key.state == DataKeyState::Rotating
                && state
                    .data_keys
                    .iter()
                    .any(|existing| existing.state == DataKeyState::Rotating))
        {
            return Err(StoreError::Conflict(format!(
                "data key {} or another unfinished rotation was added at the same time",
                key.id
            )));
        }
        let wrapping: Vec<String> = state
            .data_keys
            .iter()
            .map(|existing| existing.wrapping_key_id.clone())
            .collect();
        crate::check_same_wrapping(key, &wrapping)?;
        if key.is_primary {
            for existing in &mut state.data_keys {
                existing.is_primary = false;
            }
        }
        state.data_keys.push(key.clone());
        Ok(())
    }

    async fn set_data_key_state(&self, id: &str, state: DataKeyState) -> Result<bool, StoreError> {
        let mut guard = self.lock();
        match guard.data_keys.iter_mut().find(|key| key.id == id) {
            Some(key) => {
                key.state = state;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn rewrap_data_keys(&self, keys: &[StoredDataKey]) -> Result<(), StoreError> {
        let mut state = self.lock();
        let stored: Vec<String> = state.data_keys.iter().map(|key| key.id.clone()).collect();
        crate::check_all_named(keys, &stored)?;
        if let Some(missing) = keys
            .iter()
            .find(|key| !state.data_keys.iter().any(|existing| existing.id == key.id))
        {
            return Err(StoreError::Conflict(format!(
                "data key {} not found",
                missing.id
            )));
        }
        for key in keys {
            if let Some(existing) = state
                .data_keys
                .iter_mut()
                .find(|existing| existing.id == key.id)
            {
                existing.wrapped = key.wrapped.clone();
                existing.wrapping_key_id = key.wrapping_key_id.clone();
            }
        }
        Ok(())
    }

    async fn list_sealed(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<SealedRow>, StoreError> {
        let state = self.lock();
        // SQL stores order by the id's text form; UUIDs order the same way as bytes.
        let mut rows: Vec<SealedRow> = state
            .integrations
            .values()
            .filter(|stored| after.is_none_or(|after| stored.integration.id > after))
            .map(|stored| SealedRow {
                id: stored.integration.id,
                provider: stored.integration.provider,
                auth_type: stored.integration.auth_type,
                sealed_credentials: stored.sealed_credentials.clone(),
            })
            .collect();
        rows.sort_by_key(|row| row.id);
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(rows)
    }

    async fn replace_sealed(
        &self,
        id: Uuid,
        expected: &[u8],
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        match state.integrations.get_mut(&id) {
            Some(stored) if stored.sealed_credentials == expected => {
                stored.sealed_credentials = sealed.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.lock().push_audit(event);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn search_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self.lock().search_audit(query))
    }

    async fn list_audit_chain(
        &self,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<ChainedEvent>, StoreError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(self
            .lock()
            .audit
            .iter()
            .filter(|stored| stored.seq > after_seq)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn insert_application_token(
        &self,
        record: &ApplicationTokenRecord,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let id = record.token.id;
        let in_use = state
            .tokens
            .values()
            .any(|stored| stored.token.id == id || stored.token_hash == record.token_hash);
        if in_use {
            return Err(StoreError::Conflict(format!(
                "application token {id} or its hash already exists"
            )));
        }
        state.tokens.insert(id, record.clone());
        state.push_audit(audit);
        Ok(())
    }

    async fn list_application_tokens(&self) -> Result<Vec<ApplicationToken>, StoreError> {
        let state = self.lock();
        let mut tokens: Vec<ApplicationToken> = state
            .tokens
            .values()
            .map(|record| record.token.clone())
            .collect();
        tokens.sort_by_key(|token| (token.created_at, token.id));
        Ok(tokens)
    }

    async fn find_application_token_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ApplicationTokenRecord>, StoreError> {
        let state = self.lock();
        Ok(state
            .tokens
            .values()
            .find(|record| &record.token_hash == hash)
            .cloned())
    }

    async fn revoke_application_token(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<RevokeResult, StoreError> {
        let mut state = self.lock();
        let Some(record) = state.tokens.get_mut(&id) else {
            return Ok(RevokeResult::NotFound);
        };
        if record.token.revoked_at.is_some() {
            return Ok(RevokeResult::AlreadyRevoked);
        }
        record.token.revoked_at = Some(at);
        state.push_audit(audit);
        Ok(RevokeResult::Revoked)
    }
}

#[async_trait]
impl AuditSink for MemoryStore {
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.append_audit(event).await
    }
}

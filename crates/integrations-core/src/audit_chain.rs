//! The audit hash chain: each stored event carries the hash of the event before it, so an edited
//! or deleted event is detectable by walking the log in write order.
//!
//! The hash of an event is SHA-256 over a domain tag, the previous event's hash and the event's
//! fields, each prefixed with its length as a 64-bit big-endian integer. The first event's
//! previous hash is [`GENESIS_HASH`]. Stores compute the hash inside the transaction that
//! writes the event, after reading the hash of the newest event, so that concurrent writers
//! extend one chain instead of forking it.
//!
//! A chain alone cannot show that the newest events were removed, because the remaining
//! events still link up. Nor can it stop someone who rewrites an event and every later one.

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::store::{IntegrationStore, StoreError};

/// Length of a chain hash in bytes.
pub const HASH_LEN: usize = 32;

/// A SHA-256 chain hash.
pub type ChainHash = [u8; HASH_LEN];

/// Previous hash of the first event in the log.
pub const GENESIS_HASH: ChainHash = [0; HASH_LEN];

/// Domain tag that starts every hashed message, so the hash cannot be confused with another
/// SHA-256 use of the same fields.
const DOMAIN_TAG: &[u8] = b"integrations.audit-event.v1";

/// Events that [`verify_chain`] reads per store call.
pub const VERIFY_BATCH: u64 = 500;

/// Computes the chain hash of `event` linked to `previous`, the hash of the event before it.
///
/// `previous` is a slice so that a stored previous hash of the wrong length still hashes, and
/// then fails to match, instead of failing to decode.
pub fn chain_hash(previous: &[u8], event: &AuditEvent) -> ChainHash {
    let mut hasher = Sha256::new();
    field(&mut hasher, DOMAIN_TAG);
    field(&mut hasher, previous);
    field(&mut hasher, event.id.as_bytes());
    // Microseconds, the precision every store keeps.
    field(&mut hasher, &event.at.timestamp_micros().to_be_bytes());
    field(&mut hasher, event.actor_subject.as_bytes());
    field(&mut hasher, event.actor_role.as_str().as_bytes());
    field(&mut hasher, event.action.as_str().as_bytes());
    field(&mut hasher, &length(event.integration_ids.len()));
    for id in &event.integration_ids {
        field(&mut hasher, id.as_bytes());
    }
    // A BTreeMap iterates in key order, which makes the encoding canonical.
    field(&mut hasher, &length(event.filters.len()));
    for (name, value) in &event.filters {
        field(&mut hasher, name.as_bytes());
        field(&mut hasher, value.as_bytes());
    }
    field(&mut hasher, event.outcome.as_str().as_bytes());
    field(&mut hasher, &event.count.to_be_bytes());
    hasher.finalize().into()
}

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update(length(bytes.len()));
    hasher.update(bytes);
}

fn length(len: usize) -> [u8; 8] {
    // usize is at most 64 bits on every supported target.
    (len as u64).to_be_bytes()
}

/// An audit event as stored in the chain, in write order.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedEvent {
    /// Write order: increases with every stored event, with gaps where events were removed.
    pub seq: i64,
    /// The event's fields.
    pub event: AuditEvent,
    /// Stored hash of the event before it; empty when the row was never chained.
    pub prev_hash: Vec<u8>,
    /// Stored hash of this event; empty when the row was never chained.
    pub hash: Vec<u8>,
    /// Stored search key of the event's `project` filter. It is derived from the filters, which
    /// the hash covers, so a stored key that differs from them was edited.
    pub project_key: Option<String>,
}

/// Reason the chain is broken at an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainBreakReason {
    /// The event has no stored hash. Stores chain such events only while no event has a
    /// hash, so after that a missing hash means it was removed.
    Unchained,
    /// The event's hash does not match its contents: the event was edited.
    Edited,
    /// The event's previous hash does not match the event before it: an event was deleted or
    /// the events were reordered.
    PreviousMismatch,
}

impl fmt::Display for ChainBreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChainBreakReason::Unchained => {
                "the event has no chain hash (it was never chained, or its hash was removed)"
            }
            ChainBreakReason::Edited => {
                "the event's hash does not match its contents (the event was edited)"
            }
            ChainBreakReason::PreviousMismatch => {
                "the event's previous hash does not match the event before it (an event was \
                 deleted or the events were reordered)"
            }
        })
    }
}

/// The first event at which the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// Event id.
    pub id: Uuid,
    /// Write order of the event.
    pub seq: i64,
    /// Time of the event.
    pub at: DateTime<Utc>,
    /// The mismatch found.
    pub reason: ChainBreakReason,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} (seq {}, at {}): {}",
            self.id,
            self.seq,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.reason
        )
    }
}

/// Result of [`verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerification {
    /// Events checked, up to and including the first broken one.
    pub checked: u64,
    /// The first broken event, `None` when the chain is intact.
    pub first_break: Option<ChainBreak>,
}

/// Checks one stored event against the hash of the event before it.
pub fn check_link(previous: &[u8], stored: &ChainedEvent) -> Result<(), ChainBreakReason> {
    if stored.hash.is_empty() {
        return Err(ChainBreakReason::Unchained);
    }
    if chain_hash(&stored.prev_hash, &stored.event).as_slice() != stored.hash.as_slice()
        || stored.project_key != crate::store::audit_project_key(&stored.event)
    {
        return Err(ChainBreakReason::Edited);
    }
    if stored.prev_hash.as_slice() != previous {
        return Err(ChainBreakReason::PreviousMismatch);
    }
    Ok(())
}

/// Walks the whole audit log in write order and returns the first broken event, if any.
///
/// Reads [`VERIFY_BATCH`] events per call to
/// [`IntegrationStore::list_audit_chain`], so memory stays bounded on large logs.
pub async fn verify_chain(store: &dyn IntegrationStore) -> Result<ChainVerification, StoreError> {
    let mut previous: Vec<u8> = GENESIS_HASH.to_vec();
    // Stores number events from 1, but a row inserted by hand may carry any seq, and a forged
    // row below 1 must be walked too.
    let mut after_seq = i64::MIN;
    let mut checked = 0;
    loop {
        let batch = store.list_audit_chain(after_seq, VERIFY_BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(ChainVerification {
                checked,
                first_break: None,
            });
        };
        after_seq = last.seq;
        for stored in &batch {
            checked += 1;
            if let Err(reason) = check_link(&previous, stored) {
                return Ok(ChainVerification {
                    checked,
                    first_break: Some(ChainBreak {
                        id: stored.event.id,
                        seq: stored.seq,
                        at: stored.event.at,
                        reason,
                    }),
                });
            }
            previous.clone_from(&stored.hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditAction, AuditOutcome};
    use crate::model::{Actor, Role};

    fn event() -> AuditEvent {
        AuditEvent::new(
            &Actor::new("alice", Role::Owner),
            AuditAction::ProjectCreated,
            AuditOutcome::Success,
        )
        .with_filter("project", "owner/repo")
    }

    #[test]
    fn hash_changes_with_every_field() {
        let base = event();
        let hash = chain_hash(&GENESIS_HASH, &base);
        let variants = [
            AuditEvent {
                actor_subject: "alicE".into(),
                ..base.clone()
            },
            AuditEvent {
                actor_role: Role::Member,
                ..base.clone()
            },
            AuditEvent {
                action: AuditAction::ProjectDeleted,
                ..base.clone()
            },
            AuditEvent {
                outcome: AuditOutcome::Denied,
                ..base.clone()
            },
            AuditEvent {
                count: 2,
                ..base.clone()
            },
            AuditEvent {
                at: base.at + chrono::Duration::microseconds(1),
                ..base.clone()
            },
            base.clone().with_integrations([Uuid::nil()]),
            base.clone().with_filter("provider", "github"),
        ];
        for variant in &variants {
            assert_ne!(chain_hash(&GENESIS_HASH, variant), hash, "{variant:?}");
        }
        assert_ne!(chain_hash(&[1; HASH_LEN], &base), hash);
    }

    #[test]
    fn length_prefix_separates_fields() {
        let left = base_with_filter("ab", "c");
        let right = base_with_filter("a", "bc");
        assert_ne!(
            chain_hash(&GENESIS_HASH, &left),
            chain_hash(&GENESIS_HASH, &right)
        );
    }

    fn base_with_filter(name: &str, value: &str) -> AuditEvent {
        let mut event = event();
        event.filters.clear();
        event.filters.insert(name.into(), value.into());
        event
    }

    #[test]
    fn check_link_reports_reasons() {
        let first = event();
        let hash = chain_hash(&GENESIS_HASH, &first);
        let stored = ChainedEvent {
            seq: 1,
            event: first.clone(),
            prev_hash: GENESIS_HASH.to_vec(),
            hash: hash.to_vec(),
            project_key: crate::store::audit_project_key(&first),
        };
        assert_eq!(check_link(&GENESIS_HASH, &stored), Ok(()));
        let search_key_edited = ChainedEvent {
            project_key: Some("other/project".into()),
            ..stored.clone()
        };
        assert_eq!(
            check_link(&GENESIS_HASH, &search_key_edited),
            Err(ChainBreakReason::Edited)
        );

        let edited = ChainedEvent {
            event: AuditEvent {
                actor_subject: "mallory".into(),
                ..first
            },
            ..stored.clone()
        };
        assert_eq!(
            check_link(&GENESIS_HASH, &edited),
            Err(ChainBreakReason::Edited)
        );
        assert_eq!(
            check_link(&[7; HASH_LEN], &stored),
            Err(ChainBreakReason::PreviousMismatch)
        );
        let unchained = ChainedEvent {
            hash: Vec::new(),
            ..stored
        };
        assert_eq!(
            check_link(&GENESIS_HASH, &unchained),
            Err(ChainBreakReason::Unchained)
        );
    }

    #[test]
    fn new_event_time_has_micros() {
        let at = event().at;
        assert_eq!(at.timestamp_subsec_nanos() % 1_000, 0);
    }
}

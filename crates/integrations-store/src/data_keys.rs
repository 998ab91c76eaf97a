//! Rules every store checks inside the transaction that changes data keys, so that a rotation
//! and a master key change running at the same time cannot leave keys wrapped by two masters.

use integrations_core::{StoreError, StoredDataKey};

/// Rejects a new data key wrapped by another key than the stored ones. `stored` lists the
/// distinct wrapping key ids in the database.
pub(crate) fn check_same_wrapping(
    key: &StoredDataKey,
    stored: &[String],
) -> Result<(), StoreError> {
    match stored.iter().find(|id| **id != key.wrapping_key_id) {
        Some(other) => Err(StoreError::Conflict(format!(
            "data key {} is wrapped by master key {}, but the stored data keys are wrapped by master key {other}; the master key was changed, so run with the new one",
            key.id, key.wrapping_key_id
        ))),
        None => Ok(()),
    }
}

/// Rejects a rewrap that does not name every stored data key, such as one added by a rotation
/// after the rewrap listed the keys. `stored` lists the ids in the database.
pub(crate) fn check_all_named(keys: &[StoredDataKey], stored: &[String]) -> Result<(), StoreError> {
    match stored
        .iter()
        .find(|id| !keys.iter().any(|key| key.id == **id))
    {
        Some(missing) => Err(StoreError::Conflict(format!(
            "data key {missing} was added while the data keys were being rewrapped; run the master key change again"
        ))),
        None => Ok(()),
    }
}

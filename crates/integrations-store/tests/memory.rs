//! The conformance suite on the in-memory store.

use integrations_store::conformance::Fixture;
use integrations_store::MemoryStore;

async fn setup() -> Result<Fixture<MemoryStore>, String> {
    Ok(Fixture::new(MemoryStore::new()))
}

integrations_store::conformance_tests!(setup);

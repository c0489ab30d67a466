//! What unit tests of services share: a real SQLite store in a temporary
//! directory, a clock standing still, and the services wired as startup
//! wires them.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::SubjectCache;
use crate::changes::Changes;
use crate::clock::{Clock, ManualClock};
use crate::ledger::Ledger;
use crate::policy::Policy;
use crate::reviews::Reviews;
use crate::store::{self, Store, StoreOptions};

pub(crate) struct Services {
    /// Keeps the database file alive.
    _dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub clock: Arc<ManualClock>,
    pub cache: Arc<SubjectCache>,
    pub ledger: Arc<Ledger>,
    pub reviews: Arc<Reviews>,
}

/// Unix seconds the clock starts at: 2027-01-15T08:00:00Z.
pub(crate) const NOW: i64 = 1_800_000_000;

pub(crate) async fn services() -> Services {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store::connect(&StoreOptions {
        url: format!("sqlite://{}", dir.path().join("t.db").display()),
        busy_timeout: Duration::from_secs(5),
        max_connections: 2,
        writers: 1,
    })
    .await
    .expect("store opens");
    let clock = Arc::new(ManualClock::at_secs(NOW));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let cache = Arc::new(SubjectCache::new(
        1 << 20,
        Duration::from_secs(600),
        Duration::from_secs(60),
    ));
    let changes = Arc::new(Changes::new(
        dyn_clock.clone(),
        cache.clone(),
        Policy::default(),
        false,
    ));
    let ledger = Ledger::new(
        store.clone(),
        dyn_clock.clone(),
        changes.clone(),
        "user_id".to_owned(),
        crate::livemode::Livemode::Any,
        Arc::new(crate::related::RelatedReader::new(
            None,
            dyn_clock.clone(),
            Duration::from_secs(1),
        )),
    );
    let reviews = Arc::new(Reviews::new(store.clone(), dyn_clock, changes));
    Services {
        _dir: dir,
        store,
        clock,
        cache,
        ledger,
        reviews,
    }
}

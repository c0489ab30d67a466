//! Service state, write probes, health, and reconciler leadership.

use super::*;

on_both_backends!(
    state_is_set_replaced_and_deleted,
    probe_write_commits_a_write,
    ping_and_backend,
    writers_are_as_asked_on_postgres_and_one_on_sqlite,
    try_lead_is_held_by_one_replica,
);

async fn state_is_set_replaced_and_deleted(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let set = |value: Option<&'static str>| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.set_state("cursor", value).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    assert_eq!(store.get_state("cursor").await.unwrap(), None);
    set(Some("evt_1")).await;
    assert_eq!(
        store.get_state("cursor").await.unwrap().as_deref(),
        Some("evt_1")
    );
    set(Some("evt_2")).await;
    assert_eq!(
        store.get_state("cursor").await.unwrap().as_deref(),
        Some("evt_2")
    );
    set(None).await;
    assert_eq!(store.get_state("cursor").await.unwrap(), None);
    set(None).await;
    assert_eq!(store.get_state("other").await.unwrap(), None);
}

async fn probe_write_commits_a_write(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    store.probe_write(1234).await.unwrap();
    store.probe_write(5678).await.unwrap();
    assert_eq!(
        store
            .get_state("readyz.last_write_probe_ms")
            .await
            .unwrap()
            .as_deref(),
        Some("5678")
    );
}

async fn ping_and_backend(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    store.ping().await.unwrap();
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(store.backend(), expected);
}

/// PostgreSQL runs the ledger writers asked for, and its pool holds a
/// connection for each besides `max_connections`: that many transactions
/// can be open at once. SQLite has one write lock: one writer.
async fn writers_are_as_asked_on_postgres_and_one_on_sqlite(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = store::connect(&StoreOptions {
        // A pool with no connection left fails in about a second.
        busy_timeout: Duration::from_secs(1),
        max_connections: 2,
        writers: 3,
        ..options(&db.url)
    })
    .await
    .expect("store opens");
    match backend {
        Backend::Sqlite => assert_eq!(store.writers(), 1),
        Backend::Postgres => {
            assert_eq!(store.writers(), 3);
            let mut open = Vec::new();
            for n in 0..5 {
                let tx = store.begin().await;
                open.push(tx.unwrap_or_else(|e| panic!("transaction {n} of 5: {e:?}")));
            }
            for tx in open {
                tx.rollback().await.unwrap();
            }
        }
    }
}

async fn try_lead_is_held_by_one_replica(backend: Backend) {
    let Fresh { store, db } = fresh(backend).await;
    assert!(store.try_lead().await.unwrap());
    assert!(store.try_lead().await.unwrap(), "a leader keeps leading");
    let other = another_handle(&db).await;
    match backend {
        // One process owns a SQLite file: whoever asks leads.
        Backend::Sqlite => assert!(other.try_lead().await.unwrap()),
        Backend::Postgres => {
            assert!(!other.try_lead().await.unwrap(), "one leader at a time");
            drop(store);
            let deadline = tokio::time::Instant::now() + SOON;
            while !other.try_lead().await.unwrap() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never took over from a leader that went away"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

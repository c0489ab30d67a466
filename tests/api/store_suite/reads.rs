//! The lease pools (HasAccess's reads, write transactions) on PostgreSQL,
//! where a server can end a connection and a read can wait on a lock:
//! reads do not wait for the connections writes use, connections the
//! server closed while idle are replaced, and reads cut short give their
//! connections back. On SQLite the same pools are covered by every other
//! test that reads a subject or writes.

use super::*;
use sqlx::{Connection, Executor};

/// Fresh PostgreSQL, or `None` when it is not here (and not required).
async fn postgres(test: &str) -> Option<Fresh> {
    if !crate::helpers::backend_ready(Backend::Postgres, test).await {
        return None;
    }
    Some(fresh(Backend::Postgres).await)
}

/// Ends every session of the database but this one's, as a server restart
/// or an administrator would.
async fn end_every_other_session(url: &str) {
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_the_server_closed_the_idle_read_connections_still_answers() {
    let Some(Fresh { store, db }) = postgres("read pool reconnects").await else {
        return;
    };
    save(&*store, "sub_1", "cus_1", status(Status::Active)).await;
    // Several reads at once: the pool keeps several connections idle.
    let reads = (0..4).map(|_| store.subscriptions_for_customer("cus_1"));
    for read in futures::future::join_all(reads).await {
        assert_eq!(ids(read.unwrap()), ["sub_1"]);
    }

    end_every_other_session(&db.url).await;

    for _ in 0..6 {
        let read = store.subscriptions_for_customer("cus_1").await;
        assert_eq!(
            ids(read.expect("a dead idle connection is replaced, not reported")),
            ["sub_1"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_after_the_server_closed_the_idle_write_connections_still_begins() {
    let Some(Fresh { store, db }) = postgres("transactions reconnect").await else {
        return;
    };
    // Several transactions at once, each committed: their connections
    // go back to the pool, idle.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(store.begin().await.unwrap());
    }
    for tx in open {
        tx.commit().await.unwrap();
    }

    end_every_other_session(&db.url).await;

    for n in 0..4 {
        let mut tx = store
            .begin()
            .await
            .expect("a dead idle connection is replaced, not reported");
        let id = format!("sub_{n}");
        tx.lock_subscription(&id, "cus_1", 1).await.unwrap();
        tx.commit().await.unwrap();
    }
    let stored = store.subscriptions_for_customer("cus_1").await.unwrap();
    assert_eq!(ids(stored), ["sub_0", "sub_1", "sub_2", "sub_3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_cut_short_give_their_connections_back_and_leave_no_stale_rows() {
    let Some(Fresh { store, db }) = postgres("read pool after cancelled reads").await else {
        return;
    };
    save(&*store, "sub_1", "cus_1", status(Status::Active)).await;
    save(&*store, "sub_2", "cus_2", status(Status::Active)).await;

    // Every read blocks behind a table lock, and its caller gives up.
    let mut admin = crate::helpers::lock_table(&db, "subscriptions").await;
    // More than the pool's connections (`options`: 4).
    for _ in 0..8 {
        let read = store.subscriptions_for_customer("cus_1");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), read)
                .await
                .is_err(),
            "the read waits for the lock"
        );
    }
    admin.execute("COMMIT").await.unwrap();

    // Were a connection or its permit kept by a cancelled read, these
    // would wait out the pool's timeout (10 s) or read cus_1's rows.
    for _ in 0..8 {
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            store.subscriptions_for_customer("cus_2"),
        )
        .await
        .expect("a connection is free");
        assert_eq!(ids(read.unwrap()), ["sub_2"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_answered_while_every_connection_of_the_write_pool_is_taken() {
    let Some(Fresh { store, db: _db }) = postgres("read pool apart from writes").await else {
        return;
    };
    save(&*store, "sub_1", "cus_1", status(Status::Active)).await;
    // Every connection for transactions (`options`: half of 4, and 1
    // writer's share) held by open ones, as busy writers and a busy
    // console would.
    let mut held = Vec::new();
    for _ in 0..4 / 2 + tollgate::store::CONNECTIONS_PER_WRITER {
        let begun = tokio::time::timeout(SOON, store.begin()).await;
        held.push(begun.expect("the pool has a connection").unwrap());
    }
    assert!(
        tokio::time::timeout(BLOCKED, store.begin()).await.is_err(),
        "the transactions' connections are all taken"
    );

    let read = tokio::time::timeout(
        Duration::from_secs(5),
        store.subscriptions_for_customer("cus_1"),
    )
    .await
    .expect("a read does not wait for the write pool");
    assert_eq!(ids(read.unwrap()), ["sub_1"]);
    drop(held);
}

//! Whole transactions: rollback and drop, and what commits publish to
//! other replicas.

use super::*;

on_both_backends!(
    rollback_to_a_savepoint_undoes_only_what_came_after_it,
    rollback_leaves_nothing_behind_and_keeps_the_store_working,
    dropping_a_transaction_leaves_nothing_behind_and_keeps_the_store_working,
    publish_changes_reaches_watchers_on_postgres_only,
    publish_with_users_returns_the_customers_users_and_publishes_them_too,
    publish_and_commit_commits_and_returns_the_customers_users,
    record_save_and_publish_publishes_with_the_events_on_postgres_and_leaves_it_to_the_commit_elsewhere,
    record_and_save_if_unchanged_writes_only_a_new_event_on_the_row_it_was_decided_on,
    record_and_save_if_unchanged_writes_nothing_when_a_transaction_changes_the_row_meanwhile,
    record_and_save_if_unchanged_writes_after_a_transaction_that_held_the_row_and_left_it_as_it_was,
);

/// Writes through every `Tx` method that writes.
async fn write_everything(tx: &mut dyn tollgate::store::Tx) {
    let event = Event::new("evt_gone", "payload");
    assert_eq!(
        tx.insert_event(&event.as_new()).await.unwrap(),
        Recorded::New
    );
    tx.finish_event("evt_gone", Outcome::Applied, None, 1)
        .await
        .unwrap();
    let mut record = tx
        .lock_subscription("sub_gone", "cus_gone", 1)
        .await
        .unwrap();
    record.status = Some(Status::Active);
    record.user_id = Some("user_gone".to_owned());
    tx.save_subscription(&record, 1).await.unwrap();
    tx.link_customer("cus_gone", "user_linked", 1)
        .await
        .unwrap();
    let review_id = tx.flag_review(&review("cus_gone", None, 1)).await.unwrap();
    tx.set_hold("sub_gone", review_id).await.unwrap();
    tx.queue_notification(&change(1), 1).await.unwrap();
    tx.set_state("gone", Some("value")).await.unwrap();
    tx.publish_changes(&Affected::default()).await.unwrap();
}

async fn rollback_to_a_savepoint_undoes_only_what_came_after_it(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    tx.savepoint().await.unwrap();
    tx.set_state("kept", Some("1")).await.unwrap();
    tx.savepoint().await.unwrap();
    write_everything(&mut *tx).await;
    tx.rollback_to_savepoint().await.unwrap();
    // The mark stays: what follows it can be undone again.
    tx.set_state("undone", Some("2")).await.unwrap();
    tx.rollback_to_savepoint().await.unwrap();
    let event = Event::new("evt_kept", "payload");
    assert_eq!(
        tx.insert_event(&event.as_new()).await.unwrap(),
        Recorded::New
    );
    // A statement the database refuses (PostgreSQL takes no NUL in text)
    // leaves the transaction usable once rolled back to the mark.
    tx.savepoint().await.unwrap();
    let refused = tx
        .flag_review(&NewReview {
            details: "\0",
            ..review("cus_kept", None, 1)
        })
        .await;
    assert_eq!(
        matches!(refused, Err(StoreError::Rejected(_))),
        backend == Backend::Postgres,
        "{refused:?}"
    );
    tx.rollback_to_savepoint().await.unwrap();
    tx.commit().await.unwrap();

    assert!(store.get_event("evt_kept").await.unwrap().is_some());
    assert_eq!(store.get_event("evt_gone").await.unwrap(), None);
    assert_eq!(store.get_state("kept").await.unwrap().as_deref(), Some("1"));
    assert_eq!(store.get_state("undone").await.unwrap(), None);
    assert_eq!(store.get_state("gone").await.unwrap(), None);
    assert!(store
        .subscriptions_for_customer("cus_gone")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.counts().await.unwrap(), Counts::default());
}

/// Nothing of [`write_everything`] is stored, and writing works.
async fn assert_nothing_behind(store: &dyn Store) {
    assert_eq!(store.get_event("evt_gone").await.unwrap(), None);
    assert!(store
        .subscriptions_for_customer("cus_gone")
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .subscriptions_for_user("user_linked")
        .await
        .unwrap()
        .is_empty());
    assert!(store.list_reviews(false).await.unwrap().is_empty());
    assert!(store
        .list_notifications(0, 10, true)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.get_state("gone").await.unwrap(), None);
    assert_eq!(store.counts().await.unwrap(), Counts::default());
    let mut tx = store.begin().await.expect("the store keeps working");
    write_everything(&mut *tx).await;
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .get_event("evt_gone")
            .await
            .unwrap()
            .map(|e| e.outcome),
        Some("applied".to_owned())
    );
    assert_eq!(
        store.get_state("gone").await.unwrap().as_deref(),
        Some("value")
    );
    assert_eq!(
        ids(store.subscriptions_for_customer("cus_gone").await.unwrap()),
        ["sub_gone"]
    );
    assert_eq!(store.counts().await.unwrap().queued_notifications, 1);
}

async fn rollback_leaves_nothing_behind_and_keeps_the_store_working(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    write_everything(&mut *tx).await;
    tx.rollback().await.unwrap();
    assert_nothing_behind(&*store).await;
}

async fn dropping_a_transaction_leaves_nothing_behind_and_keeps_the_store_working(
    backend: Backend,
) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    write_everything(&mut *tx).await;
    drop(tx);
    assert_nothing_behind(&*store).await;

    // A transaction dropped while it waits (a cancelled request) too.
    let mut holder = store.begin().await.unwrap();
    holder
        .lock_subscription("sub_gone", "cus_gone", 1)
        .await
        .unwrap();
    let waiting = async {
        let mut tx = store.begin().await?;
        tx.lock_subscription("sub_gone", "cus_gone", 2).await?;
        Ok::<_, StoreError>(tx)
    };
    assert!(tokio::time::timeout(BLOCKED, waiting).await.is_err());
    holder.commit().await.unwrap();
    store.probe_write(1).await.unwrap();
}

async fn publish_changes_reaches_watchers_on_postgres_only(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let affected = |customer: &str, user: &str| Affected {
        customers: vec![customer.to_owned()],
        users: vec![user.to_owned()],
        products: Vec::new(),
    };
    let publish = |what: Affected, commit: bool| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.publish_changes(&what).await.unwrap();
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
        }
    };
    let (mut heard, stop, watcher) = watching(&store);

    match backend {
        Backend::Sqlite => {
            // Nothing to hear: `watch` returns at once, and publishing is a
            // no-op that commits.
            tokio::time::timeout(SOON, watcher)
                .await
                .expect("watch returns")
                .unwrap();
            publish(affected("cus_1", "user_1"), true).await;
            assert_eq!(heard.recv().await, None);
        }
        Backend::Postgres => {
            assert_eq!(next(&mut heard).await, Some(StoreEvent::Listening));
            // Rolled back: never delivered. Not yet committed: not yet.
            publish(affected("cus_rolled_back", "user_0"), false).await;
            let mut tx = store.begin().await.unwrap();
            tx.publish_changes(&affected("cus_1", "user_1"))
                .await
                .unwrap();
            tokio::time::sleep(BLOCKED).await;
            assert!(heard.try_recv().is_err(), "nothing before commit");
            tx.commit().await.unwrap();
            assert_eq!(
                next(&mut heard).await,
                Some(StoreEvent::Changed(affected("cus_1", "user_1")))
            );
            // Too many subjects for one notification: forget everything.
            let many = Affected {
                customers: (0..1000).map(|i| format!("cus_{i}")).collect(),
                ..Affected::default()
            };
            publish(many, true).await;
            assert_eq!(next(&mut heard).await, Some(StoreEvent::Unknown));
            stop.cancel();
            tokio::time::timeout(SOON, watcher)
                .await
                .expect("watch stops")
                .unwrap();
        }
    }
}

async fn publish_with_users_returns_the_customers_users_and_publishes_them_too(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    link_two_users(&mut *tx).await;
    tx.link_customer("cus_other", "user_elsewhere", 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let (mut heard, stop, watcher) = listening(&store, backend).await;
    let affected = Affected {
        customers: vec!["cus_1".to_owned()],
        users: vec!["user_given".to_owned()],
        products: vec!["prod_1".to_owned()],
    };
    let mut tx = store.begin().await.unwrap();
    let mut users = tx.publish_with_users(&affected).await.unwrap();
    tx.commit().await.unwrap();
    users.sort();
    assert_eq!(users, ["user_linked", "user_of_sub"]);
    if backend == Backend::Postgres {
        let Some(StoreEvent::Changed(mut published)) = next(&mut heard).await else {
            panic!("a change is published");
        };
        published.users.sort();
        assert_eq!(published, given_and_linked());
        // Too many subjects for one notification: forget everything.
        let many = Affected {
            customers: (0..1000).map(|i| format!("cus_many_{i}")).collect(),
            ..Affected::default()
        };
        let mut tx = store.begin().await.unwrap();
        assert!(tx.publish_with_users(&many).await.unwrap().is_empty());
        tx.commit().await.unwrap();
        assert_eq!(next(&mut heard).await, Some(StoreEvent::Unknown));
    }
    stop_watching(stop, watcher).await;
}

async fn publish_and_commit_commits_and_returns_the_customers_users(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    link_two_users(&mut *tx).await;
    // Nothing touched: committed all the same, no users read.
    assert!(tx
        .publish_and_commit(&Affected::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .subscriptions_for_user("user_linked")
            .await
            .unwrap()
            .len(),
        1
    );

    let (mut heard, stop, watcher) = listening(&store, backend).await;
    let affected = Affected {
        customers: vec!["cus_1".to_owned()],
        users: vec!["user_given".to_owned()],
        products: Vec::new(),
    };
    let mut tx = store.begin().await.unwrap();
    tx.link_customer("cus_1", "user_new", 2).await.unwrap();
    let mut users = tx.publish_and_commit(&affected).await.unwrap();
    users.sort();
    // The transaction's own link is read, and committed.
    assert_eq!(users, ["user_linked", "user_new", "user_of_sub"]);
    assert_eq!(
        store
            .subscriptions_for_user("user_new")
            .await
            .unwrap()
            .len(),
        1
    );
    if backend == Backend::Postgres {
        let Some(StoreEvent::Changed(mut published)) = next(&mut heard).await else {
            panic!("a change is published");
        };
        published.users.sort();
        assert_eq!(
            published.users,
            ["user_given", "user_linked", "user_new", "user_of_sub"]
        );
    }
    // The writer goes on after a commit that read users.
    let mut tx = store.begin().await.unwrap();
    tx.set_state("after", Some("1")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.get_state("after").await.unwrap().as_deref(),
        Some("1")
    );
    stop_watching(stop, watcher).await;
}

async fn record_save_and_publish_publishes_with_the_events_on_postgres_and_leaves_it_to_the_commit_elsewhere(
    backend: Backend,
) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    link_two_users(&mut *tx).await;
    tx.commit().await.unwrap();
    let (mut heard, stop, watcher) = listening(&store, backend).await;
    let affected = Affected {
        customers: vec!["cus_1".to_owned()],
        users: vec!["user_given".to_owned()],
        products: vec!["prod_1".to_owned()],
    };
    let status = |store: Arc<dyn Store>| async move {
        let records = store.subscriptions_for_customer("cus_1").await.unwrap();
        records.first().and_then(|r| r.status)
    };

    let one = Event::new("evt_1", "one");
    let mut tx = store.begin().await.unwrap();
    let mut record = tx.lock_subscription("sub_1", "cus_1", 2).await.unwrap();
    record.status = Some(Status::Active);
    let (inserted, published) = tx
        .record_save_and_publish(&[one.as_new()], &[&record], 2, &affected)
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    match backend {
        Backend::Sqlite => assert_eq!(published, None),
        Backend::Postgres => {
            let mut users = published.expect("published with the events");
            users.sort();
            assert_eq!(users, ["user_linked", "user_of_sub"]);
        }
    }
    tx.commit().await.unwrap();
    assert_eq!(status(store.clone()).await, Some(Status::Active));
    assert!(store.get_event("evt_1").await.unwrap().is_some());
    if backend == Backend::Postgres {
        let Some(StoreEvent::Changed(mut heard_now)) = next(&mut heard).await else {
            panic!("a change is published at commit");
        };
        heard_now.users.sort();
        assert_eq!(heard_now, given_and_linked());
    }

    // Recorded before: nothing stored, and once undone nothing heard.
    let mut tx = store.begin().await.unwrap();
    let mut record = tx.lock_subscription("sub_1", "cus_1", 3).await.unwrap();
    record.status = Some(Status::Canceled);
    let (inserted, _) = tx
        .record_save_and_publish(&[one.as_new()], &[&record], 3, &affected)
        .await
        .unwrap();
    assert_eq!(inserted, 0);
    tx.rollback().await.unwrap();
    assert_eq!(status(store.clone()).await, Some(Status::Active));
    if backend == Backend::Postgres {
        let marker = Affected {
            customers: vec!["cus_marker".to_owned()],
            ..Affected::default()
        };
        let mut tx = store.begin().await.unwrap();
        tx.publish_changes(&marker).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(next(&mut heard).await, Some(StoreEvent::Changed(marker)));
    }
    stop_watching(stop, watcher).await;
}

async fn record_and_save_if_unchanged_writes_only_a_new_event_on_the_row_it_was_decided_on(
    backend: Backend,
) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    link_two_users(&mut *tx).await;
    tx.commit().await.unwrap();
    let (mut heard, stop, watcher) = listening(&store, backend).await;
    let read = |store: Arc<dyn Store>| async move {
        let records = store.subscriptions_for_customer("cus_1").await.unwrap();
        records.into_iter().next().expect("sub_1 is stored")
    };
    let affected = Affected {
        customers: vec!["cus_1".to_owned()],
        users: vec!["user_given".to_owned()],
        products: vec!["prod_1".to_owned()],
    };

    // As read: written, published, the users read.
    let before = read(store.clone()).await;
    let mut after = before.clone();
    after.status = Some(Status::PastDue);
    let one = Event::new("evt_1", "one");
    let mut users = store
        .record_and_save_if_unchanged(&one.as_new(), &before, Some(&after), &affected, 5)
        .await
        .unwrap()
        .expect("written");
    users.sort();
    assert_eq!(users, ["user_linked", "user_of_sub"]);
    assert_eq!(read(store.clone()).await, after);
    assert!(store.get_event("evt_1").await.unwrap().is_some());
    if backend == Backend::Postgres {
        let Some(StoreEvent::Changed(mut published)) = next(&mut heard).await else {
            panic!("a change is published");
        };
        published.users.sort();
        assert_eq!(published, given_and_linked());
    }

    // Decided on a row that has changed since: nothing written.
    let mut canceled = before.clone();
    canceled.status = Some(Status::Canceled);
    let two = Event::new("evt_2", "two");
    let written = store
        .record_and_save_if_unchanged(&two.as_new(), &before, Some(&canceled), &affected, 6)
        .await
        .unwrap();
    assert_eq!(written, None);
    assert_eq!(read(store.clone()).await, after);
    assert!(store.get_event("evt_2").await.unwrap().is_none());

    // An event recorded before: nothing written either.
    let written = store
        .record_and_save_if_unchanged(&one.as_new(), &after, Some(&canceled), &affected, 6)
        .await
        .unwrap();
    assert_eq!(written, None);
    assert_eq!(read(store.clone()).await, after);

    // A subscription never stored: nothing.
    let absent = SubscriptionRecord::placeholder("sub_absent", "cus_1");
    let three = Event::new("evt_3", "three");
    let written = store
        .record_and_save_if_unchanged(&three.as_new(), &absent, Some(&canceled), &affected, 6)
        .await
        .unwrap();
    assert_eq!(written, None);
    assert!(store.get_event("evt_3").await.unwrap().is_none());

    // An event that changes nothing: recorded alone.
    let written = store
        .record_and_save_if_unchanged(&three.as_new(), &after, None, &Affected::default(), 7)
        .await
        .unwrap();
    assert_eq!(written, Some(Vec::new()));
    assert!(store.get_event("evt_3").await.unwrap().is_some());
    assert_eq!(read(store.clone()).await, after);

    // Nothing heard of what was not written.
    if backend == Backend::Postgres {
        let marker = Affected {
            customers: vec!["cus_marker".to_owned()],
            ..Affected::default()
        };
        let mut tx = store.begin().await.unwrap();
        tx.publish_changes(&marker).await.unwrap();
        tx.commit().await.unwrap();
        // Not even the event that changed nothing.
        assert_eq!(next(&mut heard).await, Some(StoreEvent::Changed(marker)));
    }
    stop_watching(stop, watcher).await;
}

async fn record_and_save_if_unchanged_writes_nothing_when_a_transaction_changes_the_row_meanwhile(
    backend: Backend,
) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let (written, stored, recorded) =
        unlocked_write_behind_a_transaction(&store, Some(Status::Unpaid)).await;
    assert_eq!(written, None);
    assert_eq!(stored, Some(Status::Unpaid));
    assert!(!recorded);
}

/// PostgreSQL checks the row again after waiting for the lock: a lock
/// taken and let go with the row as it was (the no-op update of
/// `lock_subscription`) leaves it to be written.
async fn record_and_save_if_unchanged_writes_after_a_transaction_that_held_the_row_and_left_it_as_it_was(
    backend: Backend,
) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let (written, stored, recorded) = unlocked_write_behind_a_transaction(&store, None).await;
    assert_eq!(written, Some(Vec::new()));
    assert_eq!(stored, Some(Status::Canceled));
    assert!(recorded);
}

/// Stores `sub_1` active, then holds its row in a transaction (SQLite:
/// the writer) that stores it as `held_as`, or leaves it as it was, while
/// an unlocked write of `evt_1` decided on the active row (canceling it)
/// waits; commits once the write is seen waiting. What the write returned,
/// the status stored after both, and whether `evt_1` is recorded.
async fn unlocked_write_behind_a_transaction(
    store: &Arc<dyn Store>,
    held_as: Option<Status>,
) -> (Option<Vec<String>>, Option<Status>, bool) {
    save(&**store, "sub_1", "cus_1", status(Status::Active)).await;
    let before = store.subscriptions_for_customer("cus_1").await.unwrap()[0].clone();

    let mut tx = store.begin().await.unwrap();
    let mut held = tx.lock_subscription("sub_1", "cus_1", 2).await.unwrap();
    if let Some(held_as) = held_as {
        held.status = Some(held_as);
        tx.save_subscription(&held, 2).await.unwrap();
    }
    let write = tokio::spawn({
        let (store, before) = (store.clone(), before.clone());
        async move {
            let mut after = before.clone();
            after.status = Some(Status::Canceled);
            let event = Event::new("evt_1", "one");
            store
                .record_and_save_if_unchanged(
                    &event.as_new(),
                    &before,
                    Some(&after),
                    &Affected::default(),
                    3,
                )
                .await
        }
    });
    tokio::time::sleep(BLOCKED).await;
    assert!(!write.is_finished(), "the write waits for the transaction");
    tx.commit().await.unwrap();

    let written = write.await.unwrap().unwrap();
    let stored = store.subscriptions_for_customer("cus_1").await.unwrap();
    let recorded = store.get_event("evt_1").await.unwrap().is_some();
    (written, stored[0].status, recorded)
}

/// What the tests publish for `cus_1`, with its users read by
/// [`link_two_users`].
fn given_and_linked() -> Affected {
    Affected {
        customers: vec!["cus_1".to_owned()],
        users: vec![
            "user_given".to_owned(),
            "user_linked".to_owned(),
            "user_of_sub".to_owned(),
        ],
        products: vec!["prod_1".to_owned()],
    }
}

/// `cus_1` gets `user_linked` directly and `user_of_sub` through `sub_1`.
async fn link_two_users(tx: &mut dyn tollgate::store::Tx) {
    tx.link_customer("cus_1", "user_linked", 1).await.unwrap();
    let mut record = tx.lock_subscription("sub_1", "cus_1", 1).await.unwrap();
    record.user_id = Some("user_of_sub".to_owned());
    tx.save_subscription(&record, 1).await.unwrap();
}

/// [`watching`], once PostgreSQL's listener listens.
async fn listening(
    store: &Arc<dyn Store>,
    backend: Backend,
) -> (
    mpsc::Receiver<StoreEvent>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (mut heard, stop, watcher) = watching(store);
    if backend == Backend::Postgres {
        assert_eq!(next(&mut heard).await, Some(StoreEvent::Listening));
    }
    (heard, stop, watcher)
}

async fn stop_watching(stop: CancellationToken, watcher: tokio::task::JoinHandle<()>) {
    stop.cancel();
    tokio::time::timeout(SOON, watcher)
        .await
        .expect("watch stops")
        .unwrap();
}

/// `store.watch` running: what it hears, how to stop it, and its task.
fn watching(
    store: &Arc<dyn Store>,
) -> (
    mpsc::Receiver<StoreEvent>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (events, heard) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let watcher = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move { store.watch(events, stop).await }
    });
    (heard, stop, watcher)
}

async fn next(heard: &mut mpsc::Receiver<StoreEvent>) -> Option<StoreEvent> {
    tokio::time::timeout(SOON, heard.recv())
        .await
        .expect("heard in time")
}

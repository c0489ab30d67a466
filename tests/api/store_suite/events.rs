//! Recording events exactly once, reading them back, setting their outcome.

use super::*;

on_both_backends!(
    insert_event_records_once_and_reports_the_stored_hashes,
    insert_event_racing_the_same_id_gives_one_new_and_duplicates,
    record_and_save_records_several_events_and_counts_only_those_not_recorded_before,
    record_and_save_stores_the_subscriptions_only_when_every_event_is_new,
    an_insert_waiting_on_a_rolled_back_insert_of_the_same_id_is_new,
    load_event_and_finish_event_read_and_set_the_outcome,
    an_event_reporting_a_recorded_change_is_a_twin_in_either_order,
    twins_racing_give_one_new_and_twins,
    knows_change_finds_an_event_by_id_or_by_the_change_it_reports,
);

async fn insert_event_records_once_and_reports_the_stored_hashes(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert_eq!(store.get_event("evt_1").await.unwrap(), None);
    let first = Event::new("evt_1", "first");

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.insert_event(&first.as_new()).await.unwrap(),
        Recorded::New
    );
    // The same id again, even in the same transaction, is a duplicate.
    assert!(matches!(
        tx.insert_event(&first.as_new()).await.unwrap(),
        Recorded::Duplicate { .. }
    ));
    tx.commit().await.unwrap();

    let row = store.get_event("evt_1").await.unwrap().expect("stored");
    assert_eq!(row.id, "evt_1");
    assert_eq!(row.event_type, "customer.subscription.updated");
    assert_eq!(row.created, 1_700_000_000);
    assert!(row.livemode);
    assert_eq!(row.api_version, None);
    assert_eq!(row.payload_sha256, "sha-of-first");
    assert_eq!(row.source, "webhook");
    assert_eq!(row.received_at_ms, 1_700_000_000_123);
    // Recorded with its outcome, once its effect is written.
    assert_eq!(row.processed_at_ms, Some(1_700_000_000_124));
    assert_eq!(row.outcome, "applied");
    assert_eq!(row.error, None);

    // Another payload under the same id: a duplicate, with what was stored.
    let other = Event::new("evt_1", "second");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.insert_event(&other.as_new()).await.unwrap(),
        Recorded::Duplicate {
            payload_sha256: "sha-of-first".to_owned(),
            content_sha256: Some("sha-of-first".to_owned()),
        }
    );
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.load_event("evt_1").await.unwrap(),
        Some(("first".to_owned(), "applied".to_owned()))
    );
    tx.rollback().await.unwrap();
    assert_eq!(store.get_event("evt_2").await.unwrap(), None);
}

async fn record_and_save_records_several_events_and_counts_only_those_not_recorded_before(
    backend: Backend,
) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let (one, two) = (Event::new("evt_1", "one"), Event::new("evt_2", "two"));
    let mut tx = store.begin().await.unwrap();
    let inserted = tx
        .record_and_save(&[one.as_new(), two.as_new()], &[], 1)
        .await
        .unwrap();
    assert_eq!(inserted, 2);
    tx.commit().await.unwrap();
    for event in [&one, &two] {
        let mut tx = store.begin().await.unwrap();
        // Stored as one at a time stores it: the same row.
        assert_eq!(
            tx.insert_event(&event.as_new()).await.unwrap(),
            Recorded::Duplicate {
                payload_sha256: event.sha.clone(),
                content_sha256: Some(event.sha.clone()),
            }
        );
        tx.rollback().await.unwrap();
        let row = store.get_event(&event.id).await.unwrap().unwrap();
        assert_eq!(
            (
                row.outcome.as_str(),
                row.processed_at_ms,
                row.source.as_str()
            ),
            ("applied", Some(1_700_000_000_124), "webhook")
        );
    }

    // A recorded id, and a thin event whose twin is recorded: only the
    // new one of each pair counts.
    let three = Event::new("evt_3", "three");
    let mut tx = store.begin().await.unwrap();
    let again = Event::new("evt_1", "one again");
    assert_eq!(
        tx.record_and_save(&[three.as_new(), again.as_new()], &[], 1)
            .await
            .unwrap(),
        1
    );
    tx.rollback().await.unwrap();
    let twin = Event::thin("evt_thin", "evt_2");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.record_and_save(&[twin.as_new(), three.as_new()], &[], 1)
            .await
            .unwrap(),
        1
    );
    tx.rollback().await.unwrap();
    assert_eq!(store.get_event("evt_3").await.unwrap(), None);
}

async fn record_and_save_stores_the_subscriptions_only_when_every_event_is_new(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.record_and_save(&[Event::new("evt_1", "one").as_new()], &[], 1)
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
    let status = |store: Arc<dyn Store>| async move {
        let records = store.subscriptions_for_customer("cus_1").await.unwrap();
        records.first().and_then(|r| r.status)
    };

    // One of the two is recorded: the subscription is not stored.
    let mut tx = store.begin().await.unwrap();
    let mut record = tx.lock_subscription("sub_1", "cus_1", 1).await.unwrap();
    record.status = Some(Status::Active);
    let (again, two) = (Event::new("evt_1", "one"), Event::new("evt_2", "two"));
    let inserted = tx
        .record_and_save(&[two.as_new(), again.as_new()], &[&record], 2)
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    tx.commit().await.unwrap();
    assert_eq!(status(store.clone()).await, None, "the placeholder only");

    // A lone event recorded before (SQLite writes one in one string): not
    // stored either.
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscription("sub_1", "cus_1", 2).await.unwrap();
    let inserted = tx
        .record_and_save(&[Event::new("evt_2", "two").as_new()], &[&record], 2)
        .await
        .unwrap();
    assert_eq!(inserted, 0);
    tx.commit().await.unwrap();
    assert_eq!(status(store.clone()).await, None, "the placeholder only");

    // All new: stored with them.
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscription("sub_1", "cus_1", 3).await.unwrap();
    let three = Event::new("evt_3", "three");
    let inserted = tx
        .record_and_save(&[three.as_new()], &[&record], 4)
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    tx.commit().await.unwrap();
    assert_eq!(status(store.clone()).await, Some(Status::Active));
    assert!(store.get_event("evt_3").await.unwrap().is_some());
    // Nothing to store is fine too.
    let mut tx = store.begin().await.unwrap();
    let four = Event::new("evt_4", "four");
    assert_eq!(
        tx.record_and_save(&[four.as_new()], &[], 5).await.unwrap(),
        1
    );
    tx.commit().await.unwrap();
    assert!(store.get_event("evt_4").await.unwrap().is_some());
}

async fn insert_event_racing_the_same_id_gives_one_new_and_duplicates(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;

    // Two transactions, the second inserting while the first is open: it
    // waits, then sees a duplicate of what the first committed.
    let first = Event::new("evt_race", "first");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.insert_event(&first.as_new()).await.unwrap(),
        Recorded::New
    );
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let event = Event::new("evt_race", "second");
            let mut tx = store.begin().await?;
            let recorded = tx.insert_event(&event.as_new()).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(recorded)
        }
    });
    tokio::time::sleep(BLOCKED).await;
    assert!(
        !second.is_finished(),
        "the second insert waits for the first"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        second.await.unwrap().unwrap(),
        Recorded::Duplicate {
            payload_sha256: "sha-of-first".to_owned(),
            content_sha256: Some("sha-of-first".to_owned()),
        }
    );

    // Eight at once: one is new, the others duplicates of it, none fails.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let event = Event::new("evt_crowd", &format!("payload {i}"));
                let mut tx = store.begin().await?;
                let recorded = tx.insert_event(&event.as_new()).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(recorded)
            })
        })
        .collect();
    let mut new = 0;
    let mut duplicate_hashes = Vec::new();
    for racer in racers {
        match racer.await.unwrap().expect("no racer fails") {
            Recorded::New => new += 1,
            Recorded::Duplicate { payload_sha256, .. } => duplicate_hashes.push(payload_sha256),
            Recorded::Twin => panic!("one id is never a twin of itself"),
        }
    }
    assert_eq!((new, duplicate_hashes.len()), (1, 7));
    let stored = store.get_event("evt_crowd").await.unwrap().unwrap();
    assert!(duplicate_hashes.iter().all(|h| *h == stored.payload_sha256));
}

async fn an_insert_waiting_on_a_rolled_back_insert_of_the_same_id_is_new(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let first = Event::new("evt_undone", "first");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.insert_event(&first.as_new()).await.unwrap(),
        Recorded::New
    );
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let event = Event::new("evt_undone", "second");
            let mut tx = store.begin().await?;
            let recorded = tx.insert_event(&event.as_new()).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(recorded)
        }
    });
    tokio::time::sleep(BLOCKED).await;
    tx.rollback().await.unwrap();
    assert_eq!(second.await.unwrap().unwrap(), Recorded::New);
    let stored = store.get_event("evt_undone").await.unwrap().unwrap();
    assert_eq!(stored.payload_sha256, "sha-of-second");
}

async fn load_event_and_finish_event_read_and_set_the_outcome(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let event = Event::new("evt_done", "the payload");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.load_event("evt_done").await.unwrap(), None);
    tx.insert_event(&event.as_new()).await.unwrap();
    assert_eq!(
        tx.load_event("evt_done").await.unwrap(),
        Some(("the payload".to_owned(), "applied".to_owned()))
    );
    tx.finish_event("evt_done", Outcome::Failed, Some("no snapshot"), 42)
        .await
        .unwrap();
    // An unknown id changes nothing and is no error.
    tx.finish_event("evt_unknown", Outcome::Applied, None, 43)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let row = store.get_event("evt_done").await.unwrap().unwrap();
    assert_eq!(
        (
            row.outcome.as_str(),
            row.error.as_deref(),
            row.processed_at_ms
        ),
        ("failed", Some("no snapshot"), Some(42))
    );
    assert_eq!(store.get_event("evt_unknown").await.unwrap(), None);

    // Finishing again (a replay) replaces outcome and error.
    let mut tx = store.begin().await.unwrap();
    tx.finish_event("evt_done", Outcome::Applied, None, 44)
        .await
        .unwrap();
    assert_eq!(
        tx.load_event("evt_done").await.unwrap(),
        Some(("the payload".to_owned(), "applied".to_owned()))
    );
    tx.commit().await.unwrap();
    let row = store.get_event("evt_done").await.unwrap().unwrap();
    assert_eq!(
        (
            row.outcome.as_str(),
            row.error.as_deref(),
            row.processed_at_ms
        ),
        ("applied", None, Some(44))
    );
}

async fn an_event_reporting_a_recorded_change_is_a_twin_in_either_order(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    // Snapshot first, then its thin twin.
    let mut tx = store.begin().await.unwrap();
    let snapshot = Event::new("evt_snap_1", "snapshot");
    assert_eq!(
        tx.insert_event(&snapshot.as_new()).await.unwrap(),
        Recorded::New
    );
    let thin = Event::thin("evt_thin_1", "evt_snap_1");
    assert_eq!(
        tx.insert_event(&thin.as_new()).await.unwrap(),
        Recorded::Twin
    );
    // Thin first, then its snapshot twin.
    let thin = Event::thin("evt_thin_2", "evt_snap_2");
    assert_eq!(
        tx.insert_event(&thin.as_new()).await.unwrap(),
        Recorded::New
    );
    let snapshot = Event::new("evt_snap_2", "snapshot");
    assert_eq!(
        tx.insert_event(&snapshot.as_new()).await.unwrap(),
        Recorded::Twin
    );
    // The thin one again is a duplicate of itself, not a twin.
    assert!(matches!(
        tx.insert_event(&thin.as_new()).await.unwrap(),
        Recorded::Duplicate { .. }
    ));
    tx.commit().await.unwrap();
    assert!(store.get_event("evt_snap_1").await.unwrap().is_some());
    assert_eq!(store.get_event("evt_thin_1").await.unwrap(), None);
    assert!(store.get_event("evt_thin_2").await.unwrap().is_some());
    assert_eq!(store.get_event("evt_snap_2").await.unwrap(), None);
}

async fn twins_racing_give_one_new_and_twins(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let event = if i % 2 == 0 {
                    Event::new("evt_snap_race", "snapshot")
                } else {
                    Event::thin(&format!("evt_thin_race_{i}"), "evt_snap_race")
                };
                let mut tx = store.begin().await?;
                let recorded = tx.insert_event(&event.as_new()).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(recorded)
            })
        })
        .collect();
    let mut new = 0;
    for racer in racers {
        if racer.await.unwrap().expect("no racer fails") == Recorded::New {
            new += 1;
        }
    }
    assert_eq!(new, 1, "one change, recorded once");
}

async fn knows_change_finds_an_event_by_id_or_by_the_change_it_reports(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert!(!store
        .knows_change("evt_thin_3", "evt_snap_3")
        .await
        .unwrap());
    let mut tx = store.begin().await.unwrap();
    let thin = Event::thin("evt_thin_3", "evt_snap_3");
    tx.insert_event(&thin.as_new()).await.unwrap();
    tx.commit().await.unwrap();
    // By its own id, and as the twin of the snapshot event it names.
    assert!(store
        .knows_change("evt_thin_3", "evt_thin_3")
        .await
        .unwrap());
    assert!(store
        .knows_change("evt_snap_3", "evt_snap_3")
        .await
        .unwrap());
    assert!(store.knows_change("evt_other", "evt_snap_3").await.unwrap());
    assert!(!store.knows_change("evt_other", "evt_other").await.unwrap());
}

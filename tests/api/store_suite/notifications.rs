//! The notification outbox: queueing, listing, acknowledging, and the
//! claims and leases of pushes.

use super::*;

on_both_backends!(
    queue_notification_and_list_notifications_page_oldest_first,
    queue_notifications_queues_several_in_order_at_once,
    ack_notification_acknowledges_once,
    claim_notifications_leases_due_rows_for_one_attempt,
    delivery_failed_ends_the_lease_and_schedules_the_next_attempt,
    concurrent_claims_never_hand_out_the_same_row,
    counts_queued_dead_and_open_reviews,
);

async fn queue_notification_and_list_notifications_page_oldest_first(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert!(store
        .list_notifications(0, 10, true)
        .await
        .unwrap()
        .is_empty());
    let ids = queue(&*store, &[1000, 2000, 3000]).await;
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let all = store.list_notifications(0, 10, false).await.unwrap();
    assert_eq!(all.iter().map(|n| n.id).collect::<Vec<_>>(), ids);
    let n = &all[1];
    let expected = change(1);
    assert_eq!(n.kind, "ACCESS_REVOKED");
    assert_eq!(
        (&n.user_id, &n.customer_id, &n.subscription_id),
        (
            &expected.user_id,
            &expected.customer_id,
            &expected.subscription_id
        )
    );
    assert_eq!((&*n.old_status, &*n.new_status), ("active", "canceled"));
    assert_eq!((n.old_access, n.new_access), (true, false));
    assert_eq!((n.old_access_until, n.new_access_until), (101, 0));
    assert_eq!((n.reason.as_str(), n.created_at_ms), ("canceled", 2000));
    assert_eq!(
        (n.acked_at_ms, n.attempts, n.dead, n.last_error.clone()),
        (None, 0, false, None)
    );

    let page = |after: i64, limit: i64, acked: bool| {
        let store = store.clone();
        async move {
            let rows = store.list_notifications(after, limit, acked).await.unwrap();
            rows.into_iter().map(|n| n.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(ids[0], 10, false).await, &ids[1..]);
    assert_eq!(page(0, 2, false).await, &ids[..2]);
    assert!(page(ids[2], 10, true).await.is_empty());
    assert!(store.ack_notification(ids[1], 5000).await.unwrap());
    assert_eq!(page(0, 10, false).await, [ids[0], ids[2]]);
    assert_eq!(page(0, 10, true).await, ids);
}

async fn queue_notifications_queues_several_in_order_at_once(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let before = queue(&*store, &[500]).await;
    let changes: Vec<AccessChange> = (1..=3).map(change).collect();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.queue_notifications(&[], 1000).await.unwrap().is_empty());
    let queued = tx.queue_notifications(&changes, 1000).await.unwrap();
    tx.commit().await.unwrap();
    let customers: Vec<&str> = queued.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(customers, ["cus_1", "cus_2", "cus_3"]);
    let ids: Vec<i64> = queued.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > before[0],
        "ids follow the order given: {ids:?}"
    );

    let all = store.list_notifications(before[0], 10, true).await.unwrap();
    assert_eq!(all.iter().map(|n| n.id).collect::<Vec<_>>(), ids);
    for (n, expected) in all.iter().zip(&changes) {
        assert_eq!(n.kind, expected.kind.as_str());
        assert_eq!(
            (&n.user_id, &n.customer_id, &n.subscription_id),
            (
                &expected.user_id,
                &expected.customer_id,
                &expected.subscription_id
            )
        );
        assert_eq!(
            (&n.old_status, &n.new_status, n.old_access, n.new_access),
            (
                &expected.old_status,
                &expected.new_status,
                expected.old_access,
                expected.new_access
            )
        );
        assert_eq!(
            (n.old_access_until, n.new_access_until, &n.reason),
            (
                expected.old_access_until,
                expected.new_access_until,
                &expected.reason
            )
        );
        assert_eq!(
            (n.created_at_ms, n.attempts, n.acked_at_ms),
            (1000, 0, None)
        );
    }
    assert_eq!(
        claim(&*store, 999, 100, 10).await.len(),
        1,
        "the first attempt is due at creation"
    );
    assert_eq!(claim(&*store, 1000, 100, 10).await.len(), 3);
}

async fn ack_notification_acknowledges_once(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let ids = queue(&*store, &[1000]).await;
    assert!(store.ack_notification(ids[0], 5000).await.unwrap());
    assert!(!store.ack_notification(ids[0], 6000).await.unwrap());
    assert!(!store.ack_notification(ids[0] + 100, 6000).await.unwrap());
    let row = &store.list_notifications(0, 10, true).await.unwrap()[0];
    assert_eq!(row.acked_at_ms, Some(5000), "the first ack stands");
    assert!(
        claim(&*store, 10_000, 100, 10).await.is_empty(),
        "an acked notification is never pushed"
    );
}

async fn claim_notifications_leases_due_rows_for_one_attempt(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert!(claim(&*store, 1000, 100, 10).await.is_empty());
    let ids = queue(&*store, &[1000, 1000, 5000]).await;
    let (n1, n2, n3) = (ids[0], ids[1], ids[2]);

    assert!(
        claim(&*store, 999, 100, 10).await.is_empty(),
        "none due yet"
    );
    assert_eq!(
        claim(&*store, 1000, 100, 1).await,
        [(n1, 1)],
        "oldest first, limit"
    );
    assert_eq!(
        claim(&*store, 1050, 100, 10).await,
        [(n2, 1)],
        "n1 is leased"
    );
    assert!(claim(&*store, 1099, 100, 10).await.is_empty());
    // A lease that ends makes the row due for another attempt.
    assert_eq!(claim(&*store, 1100, 100, 10).await, [(n1, 2)]);
    assert_eq!(claim(&*store, 1150, 100, 10).await, [(n2, 2)]);
    assert_eq!(
        claim(&*store, 5000, 1000, 10).await,
        [(n1, 3), (n2, 3), (n3, 1)]
    );
    assert!(claim(&*store, 5999, 1000, 0).await.is_empty(), "limit 0");
    let listed = store.list_notifications(0, 10, false).await.unwrap();
    assert_eq!(
        listed.iter().map(|n| n.attempts).collect::<Vec<_>>(),
        [3, 3, 1]
    );
}

async fn delivery_failed_ends_the_lease_and_schedules_the_next_attempt(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let id = queue(&*store, &[1000]).await[0];
    assert_eq!(claim(&*store, 1000, 60_000, 10).await, [(id, 1)]);
    assert!(claim(&*store, 2000, 60_000, 10).await.is_empty(), "leased");

    store
        .delivery_failed(id, 1, 5000, "HTTP 500", false)
        .await
        .unwrap();
    assert!(
        claim(&*store, 4999, 60_000, 10).await.is_empty(),
        "released, but not due before its next attempt"
    );
    let again = store.claim_notifications(5000, 60_000, 10).await.unwrap();
    assert_eq!((again[0].id, again[0].attempts), (id, 2));
    assert_eq!(again[0].last_error.as_deref(), Some("HTTP 500"));
    assert!(!again[0].dead);

    store
        .delivery_failed(id, 2, 6000, "gave up", true)
        .await
        .unwrap();
    assert!(
        claim(&*store, i64::MAX / 2, 1, 10).await.is_empty(),
        "a dead notification is never claimed"
    );
    let row = &store.list_notifications(0, 10, false).await.unwrap()[0];
    assert_eq!(
        (row.dead, row.attempts, row.last_error.as_deref()),
        (true, 2, Some("gave up"))
    );
    store
        .delivery_failed(id + 100, 1, 1, "unknown", false)
        .await
        .unwrap();
}

async fn concurrent_claims_never_hand_out_the_same_row(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let queued = queue(&*store, &[1000; 40]).await;
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let rows = store.claim_notifications(2000, 60_000, 3).await?;
                    if rows.is_empty() {
                        return Ok::<_, StoreError>(mine);
                    }
                    mine.extend(rows.into_iter().map(|n| (n.id, n.attempts)));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap().unwrap());
    }
    assert!(claimed.iter().all(|(_, attempts)| *attempts == 1));
    assert_eq!(
        sorted(claimed.into_iter().map(|(id, _)| id).collect()),
        queued,
        "every row handed out exactly once"
    );
}

async fn counts_queued_dead_and_open_reviews(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert_eq!(store.counts().await.unwrap(), Counts::default());
    let ids = queue(&*store, &[1, 2, 3]).await;
    store.ack_notification(ids[0], 10).await.unwrap();
    store
        .delivery_failed(ids[1], 5, 10, "gave up", true)
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    let open = tx.flag_review(&review("cus_1", None, 1)).await.unwrap();
    let resolved = tx.flag_review(&review("cus_2", None, 2)).await.unwrap();
    tx.resolve_review(resolved, "done", 3).await.unwrap();
    tx.commit().await.unwrap();
    assert!(open != resolved);
    assert_eq!(
        store.counts().await.unwrap(),
        Counts {
            queued_notifications: 1,
            dead_notifications: 1,
            open_reviews: 1,
        }
    );
}

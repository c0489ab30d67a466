//! What the admin console reads (timelines, payloads, overview counts,
//! a subject's queued notifications, review pages) and its audit log.

use super::*;
use tollgate::store::NewAudit;

on_both_backends!(
    record_audit_and_list_audit_keep_entries_newest_first_by_target,
    an_audit_entry_rolled_back_with_its_action_is_not_kept,
    events_for_subscription_finds_the_events_naming_it_newest_first,
    event_payload_returns_the_raw_body_or_nothing,
    open_reviews_by_reason_and_failed_events_since_count_for_the_overview,
    notifications_about_lists_a_subjects_unacknowledged_ones,
    find_reviews_filters_by_reason_and_pages_before_an_id,
);

fn entry<'a>(at_ms: i64, action: &'a str, target: &'a str) -> NewAudit<'a> {
    NewAudit {
        at_ms,
        actor: "session:abcd1234",
        action,
        target,
        note: "checked with finance",
    }
}

async fn record_audit_and_list_audit_keep_entries_newest_first_by_target(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert!(store.list_audit(None, 0, 10).await.unwrap().is_empty());
    let mut tx = store.begin().await.unwrap();
    let a = tx
        .record_audit(&entry(1, "refresh", "review:1"))
        .await
        .unwrap();
    let b = tx
        .record_audit(&entry(2, "replay", "event:evt_1"))
        .await
        .unwrap();
    let c = tx
        .record_audit(&entry(3, "resolve", "review:1"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(a < b && b < c);

    let all = store.list_audit(None, 0, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![c, b, a]);
    assert_eq!(
        all[0],
        tollgate::store::AuditRow {
            id: c,
            at_ms: 3,
            actor: "session:abcd1234".to_owned(),
            action: "resolve".to_owned(),
            target: "review:1".to_owned(),
            note: "checked with finance".to_owned(),
        }
    );
    let review = store.list_audit(Some("review:1"), 0, 10).await.unwrap();
    assert_eq!(review.iter().map(|e| e.id).collect::<Vec<_>>(), vec![c, a]);
    // Paging: before an id, and a limit.
    let older = store.list_audit(None, c, 1).await.unwrap();
    assert_eq!(older.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
    assert!(store
        .list_audit(Some("review:2"), 0, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn an_audit_entry_rolled_back_with_its_action_is_not_kept(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    tx.record_audit(&entry(1, "resolve", "review:9"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(store.list_audit(None, 0, 10).await.unwrap().is_empty());
}

async fn events_for_subscription_finds_the_events_naming_it_newest_first(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let events = [
        Event::new("evt_a", r#"{"object":{"id":"sub_1","customer":"cus_1"}}"#),
        Event::new("evt_b", r#"{"object":{"id":"sub_12","customer":"cus_1"}}"#),
        // `_` is a LIKE wildcard: "subX1" must not match "sub_1".
        Event::new("evt_c", r#"{"object":{"id":"subX1"}}"#),
        Event::new("evt_d", r#"{"related_object":{"id":"sub_1"}}"#),
    ];
    let mut tx = store.begin().await.unwrap();
    for (n, e) in events.iter().enumerate() {
        let mut new = e.as_new();
        new.created += n as i64;
        tx.insert_event(&new).await.unwrap();
    }
    tx.commit().await.unwrap();
    let ids = |rows: Vec<tollgate::store::EventRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(
        ids(store.events_for_subscription("sub_1", 10).await.unwrap()),
        vec!["evt_d", "evt_a"]
    );
    assert_eq!(
        ids(store.events_for_subscription("sub_1", 1).await.unwrap()),
        vec!["evt_d"]
    );
    assert!(store
        .events_for_subscription("sub_9", 10)
        .await
        .unwrap()
        .is_empty());
}

async fn event_payload_returns_the_raw_body_or_nothing(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let e = Event::new("evt_p", r#"{"id":"evt_p","data":{}}"#);
    let mut tx = store.begin().await.unwrap();
    tx.insert_event(&e.as_new()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.event_payload("evt_p").await.unwrap().as_deref(),
        Some(r#"{"id":"evt_p","data":{}}"#)
    );
    assert_eq!(store.event_payload("evt_none").await.unwrap(), None);
}

async fn open_reviews_by_reason_and_failed_events_since_count_for_the_overview(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert!(store.open_reviews_by_reason().await.unwrap().is_empty());
    assert_eq!(store.failed_events_since(0).await.unwrap(), 0);
    let mut tx = store.begin().await.unwrap();
    let first = tx
        .flag_review(&review("cus_1", Some("sub_1"), 1))
        .await
        .unwrap();
    tx.flag_review(&review("cus_2", Some("sub_2"), 2))
        .await
        .unwrap();
    tx.flag_review(&NewReview {
        reason: ReviewReason::SameSecondTie,
        ..review("cus_3", None, 3)
    })
    .await
    .unwrap();
    tx.resolve_review(first, "done", 4).await.unwrap();
    // Failed at 1_700_000_000_123 (received), one applied.
    for (id, outcome) in [("evt_f", Outcome::Failed), ("evt_ok", Outcome::Applied)] {
        tx.insert_event(&Event::new(id, id).as_new()).await.unwrap();
        tx.finish_event(id, outcome, None, 5).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(
        store.open_reviews_by_reason().await.unwrap(),
        vec![
            ("impossible_transition".to_owned(), 1),
            ("same_second_tie".to_owned(), 1)
        ]
    );
    assert_eq!(
        store.failed_events_since(1_700_000_000_123).await.unwrap(),
        1
    );
    assert_eq!(
        store.failed_events_since(1_700_000_000_124).await.unwrap(),
        0
    );
}

async fn notifications_about_lists_a_subjects_unacknowledged_ones(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    // change(n) is about user_n and cus_n.
    let ids = queue(&*store, &[10, 20, 30]).await;
    assert!(store.ack_notification(ids[2], 40).await.unwrap());
    let about = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .notifications_about(id, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(about("user_0").await, vec![ids[0]]);
    assert_eq!(about("cus_1").await, vec![ids[1]]);
    assert!(about("cus_2").await.is_empty(), "acknowledged");
    assert!(about("cus_9").await.is_empty());
}

async fn find_reviews_filters_by_reason_and_pages_before_an_id(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            tx.flag_review(&review("cus_1", Some("sub_1"), n))
                .await
                .unwrap(),
        );
    }
    tx.flag_review(&NewReview {
        reason: ReviewReason::SameSecondTie,
        ..review("cus_1", None, 9)
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let page = |before_id: Option<i64>| ReviewFilter {
        open: Some(true),
        subject: None,
        limit: 2,
        reason: Some("impossible_transition".to_owned()),
        before_id,
    };
    let first: Vec<i64> = store
        .find_reviews(&page(None))
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(first, vec![ids[2], ids[1]]);
    let next: Vec<i64> = store
        .find_reviews(&page(Some(ids[1])))
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(next, vec![ids[0]]);
}

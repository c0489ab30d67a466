//! Review records: flagging, reading, noting, resolving, finding.

use super::*;

on_both_backends!(
    flag_review_and_get_review,
    note_review_outcome_keeps_the_review_open_and_resolve_review_resolves_once,
    find_reviews_and_list_reviews_filter_by_state_subject_and_limit,
);

async fn flag_review_and_get_review(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert_eq!(store.get_review(1).await.unwrap(), None);
    let mut tx = store.begin().await.unwrap();
    let first = tx
        .flag_review(&review("cus_r", Some("sub_r"), 1000))
        .await
        .unwrap();
    let second = tx
        .flag_review(&NewReview {
            subject: "user_r",
            subscription_id: None,
            event_id: None,
            reason: ReviewReason::CustomerWithoutUser,
            details: "",
            created_at_ms: 2000,
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(second > first, "ids increase");

    let row = store.get_review(first).await.unwrap().expect("stored");
    assert_eq!(row.id, first);
    assert_eq!(row.subject, "cus_r");
    assert_eq!(row.subscription_id.as_deref(), Some("sub_r"));
    assert_eq!(row.event_id.as_deref(), Some("evt_review"));
    assert_eq!(row.reason, "impossible_transition");
    assert_eq!(row.details, "canceled -> active");
    assert_eq!(row.created_at_ms, 1000);
    assert_eq!(
        (row.resolved_at_ms, row.resolution, row.refresh_outcome),
        (None, None, None)
    );
    let row = store.get_review(second).await.unwrap().unwrap();
    assert_eq!(
        (row.subscription_id, row.event_id, row.reason.as_str()),
        (None, None, "customer_without_user")
    );
    assert_eq!(store.get_review(second + 100).await.unwrap(), None);
}

async fn note_review_outcome_keeps_the_review_open_and_resolve_review_resolves_once(
    backend: Backend,
) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    let id = tx.flag_review(&review("cus_r", None, 1)).await.unwrap();
    tx.note_review_outcome(id, "stripe says canceled")
        .await
        .unwrap();
    tx.note_review_outcome(id + 100, "unknown review")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let row = store.get_review(id).await.unwrap().unwrap();
    assert_eq!(row.refresh_outcome.as_deref(), Some("stripe says canceled"));
    assert_eq!(row.resolved_at_ms, None, "still open");

    let mut tx = store.begin().await.unwrap();
    assert!(tx
        .resolve_review(id, "granted by hand", 5000)
        .await
        .unwrap());
    assert!(!tx.resolve_review(id, "again", 6000).await.unwrap());
    assert!(!tx.resolve_review(id + 100, "unknown", 6000).await.unwrap());
    tx.commit().await.unwrap();
    let row = store.get_review(id).await.unwrap().unwrap();
    assert_eq!(
        (row.resolved_at_ms, row.resolution.as_deref()),
        (Some(5000), Some("granted by hand")),
        "the first resolution stands"
    );
    assert_eq!(row.refresh_outcome.as_deref(), Some("stripe says canceled"));
}

async fn find_reviews_and_list_reviews_filter_by_state_subject_and_limit(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let filter = |open: Option<bool>, subject: Option<&str>, limit: i64| ReviewFilter {
        open,
        subject: subject.map(str::to_owned),
        limit,
        reason: None,
        before_id: None,
    };
    assert!(store
        .find_reviews(&filter(None, None, 10))
        .await
        .unwrap()
        .is_empty());
    let mut tx = store.begin().await.unwrap();
    let r1 = tx
        .flag_review(&review("cus_a", Some("sub_a"), 1))
        .await
        .unwrap();
    let r2 = tx.flag_review(&review("cus_b", None, 2)).await.unwrap();
    let r3 = tx
        .flag_review(&review("user_c", Some("sub_c"), 3))
        .await
        .unwrap();
    let r4 = tx.flag_review(&review("cus_a", None, 4)).await.unwrap();
    assert!(tx.resolve_review(r2, "done", 5).await.unwrap());
    tx.commit().await.unwrap();

    let found = |f: ReviewFilter| {
        let store = store.clone();
        async move {
            let rows = store.find_reviews(&f).await.unwrap();
            rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        found(filter(None, None, 10)).await,
        [r4, r3, r2, r1],
        "newest first"
    );
    assert_eq!(found(filter(Some(true), None, 10)).await, [r4, r3, r1]);
    assert_eq!(found(filter(Some(false), None, 10)).await, [r2]);
    assert_eq!(found(filter(None, Some("cus_a"), 10)).await, [r4, r1]);
    assert_eq!(
        found(filter(None, Some("sub_c"), 10)).await,
        [r3],
        "a subscription id matches too"
    );
    assert!(found(filter(Some(false), Some("cus_a"), 10))
        .await
        .is_empty());
    assert!(found(filter(None, Some("nobody"), 10)).await.is_empty());
    assert_eq!(found(filter(None, None, 2)).await, [r4, r3]);
    assert_eq!(
        found(filter(None, Some(""), 10)).await.len(),
        4,
        "'' is any"
    );

    let listed = |open_only: bool| {
        let store = store.clone();
        async move {
            let rows = store.list_reviews(open_only).await.unwrap();
            rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(true).await, [r4, r3, r1]);
    assert_eq!(listed(false).await, [r4, r3, r2, r1]);
}

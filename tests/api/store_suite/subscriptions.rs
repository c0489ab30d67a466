//! Subscriptions: locking, saving, the reads by user and customer, the
//! sweeps, customer links and holds.

use super::*;

on_both_backends!(
    lock_subscription_starts_from_a_placeholder_and_save_round_trips_every_field,
    lock_subscription_serializes_writers_of_one_subscription,
    lock_subscriptions_and_record_and_save_write_several_rows_at_once,
    saves_that_change_the_user_or_customer_move_the_subscription_in_the_reads,
    customer_records_sees_the_transaction_and_readers_see_only_commits,
    customers_records_reads_every_subscription_of_several_customers_at_once,
    subscriptions_for_user_and_customer_follow_metadata_and_links,
    subscriptions_of_subjects_reads_several_at_once_as_each_alone,
    non_terminal_subscriptions_leave_out_canceled_and_expired,
    unlinked_customers_lists_live_customers_no_user_is_linked_to,
    link_customer_is_idempotent_and_users_of_customer_unions_both_sources,
    first_users_of_customers_names_the_least_linked_user_of_each,
    holds_are_set_and_released_per_review,
    unreadable_rows_are_reported_as_corrupt,
);

/// A record with every field set, each to a value of its own.
fn full_record(id: &str, customer: &str) -> SubscriptionRecord {
    SubscriptionRecord {
        id: id.to_owned(),
        customer_id: customer.to_owned(),
        status: Some(Status::PastDue),
        current_period_end: Some(11),
        paid_through: Some(12),
        trial_end: Some(13),
        cancel_at_period_end: true,
        cancel_at: Some(15),
        pause: Some(PauseKind::FirstPaymentFailure),
        past_due_since: Some(14),
        recovered_at: Some(13),
        items: vec![
            Item {
                price_id: "price_1".to_owned(),
                product_id: Some("prod_1".to_owned()),
                lookup_key: Some("pro".to_owned()),
            },
            Item {
                price_id: "price_2".to_owned(),
                product_id: None,
                lookup_key: None,
            },
        ],
        user_id: Some("user_rt".to_owned()),
        snapshot_created: 15,
        snapshot_event_id: "evt_rt".to_owned(),
        verified_at: 16,
        hold_review_id: Some(17),
    }
}

async fn lock_subscription_starts_from_a_placeholder_and_save_round_trips_every_field(
    backend: Backend,
) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let mut tx = store.begin().await.unwrap();
    let placeholder = tx.lock_subscription("sub_rt", "cus_rt", 100).await.unwrap();
    assert_eq!(
        placeholder,
        SubscriptionRecord::placeholder("sub_rt", "cus_rt")
    );
    let record = full_record("sub_rt", "cus_rt");
    tx.save_subscription(&record, 200).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.subscriptions_for_customer("cus_rt").await.unwrap(),
        vec![record.clone()]
    );

    // Locking again reads what was saved; the customer given is only for a
    // new placeholder.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.lock_subscription("sub_rt", "cus_elsewhere", 300)
            .await
            .unwrap(),
        record
    );
    // Saving empties every optional field again.
    let emptied = SubscriptionRecord::placeholder("sub_rt", "cus_moved");
    tx.save_subscription(&emptied, 400).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.subscriptions_for_customer("cus_moved").await.unwrap(),
        vec![emptied]
    );
    assert!(store
        .subscriptions_for_customer("cus_rt")
        .await
        .unwrap()
        .is_empty());

    // Saving a subscription that was never locked stores nothing.
    let mut tx = store.begin().await.unwrap();
    tx.save_subscription(&full_record("sub_never", "cus_never"), 500)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(store
        .subscriptions_for_customer("cus_never")
        .await
        .unwrap()
        .is_empty());
}

async fn lock_subscriptions_and_record_and_save_write_several_rows_at_once(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let stored = full_record("sub_old", "cus_old");
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscription("sub_old", "cus_old", 100)
        .await
        .unwrap();
    tx.save_subscription(&stored, 100).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let keys = [("sub_new", "cus_new"), ("sub_old", "cus_elsewhere")];
    let mut locked = tx.lock_subscriptions(&keys, 200).await.unwrap();
    locked.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        locked,
        vec![
            SubscriptionRecord::placeholder("sub_new", "cus_new"),
            stored.clone()
        ]
    );
    let filled = full_record("sub_new", "cus_new");
    let emptied = SubscriptionRecord::placeholder("sub_old", "cus_old");
    // One never locked: stored nowhere, as with `save_subscription`.
    let never = full_record("sub_never", "cus_never");
    let event = Event::new("evt_saving", "saving");
    let saved = tx
        .record_and_save(&[event.as_new()], &[&filled, &emptied, &never], 300)
        .await
        .unwrap();
    assert_eq!(saved, 1);
    tx.commit().await.unwrap();
    let read = |customer: &'static str| {
        let store = store.clone();
        async move { store.subscriptions_for_customer(customer).await.unwrap() }
    };
    assert_eq!(read("cus_new").await, vec![filled]);
    assert_eq!(read("cus_old").await, vec![emptied]);
    assert!(read("cus_never").await.is_empty());

    // Undone with the transaction, placeholders too.
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscriptions(&[("sub_gone", "cus_gone")], 400)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(read("cus_gone").await.is_empty());
}

/// SQLite leaves a subscription's indexed columns (customer, user) out of a
/// save that does not change them: a save that does must still move the
/// subscription in the reads by user and customer, alone, in a batch, and
/// after a rollback to a savepoint undid a save of the same value.
async fn saves_that_change_the_user_or_customer_move_the_subscription_in_the_reads(
    backend: Backend,
) {
    let Fresh { store, db: _db } = fresh(backend).await;
    let user = |user: &'static str| {
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store
                .subscriptions_for_user(user)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let with_user = |id: &str, customer: &str, user: &str| SubscriptionRecord {
        user_id: Some(user.to_owned()),
        ..full_record(id, customer)
    };

    // Alone: the first save sets the user.
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscription("sub_1", "cus_1", 1).await.unwrap();
    let first = with_user("sub_1", "cus_1", "u_1");
    let saved = tx
        .record_and_save(&[Event::new("evt_1", "one").as_new()], &[&first], 1)
        .await
        .unwrap();
    assert_eq!(saved, 1);
    tx.commit().await.unwrap();
    assert_eq!(user("u_1").await, ["sub_1"]);

    // In a batch: one moves to another user, one gets its first.
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscriptions(&[("sub_1", "cus_1"), ("sub_2", "cus_2")], 2)
        .await
        .unwrap();
    let (moved, second) = (
        with_user("sub_1", "cus_1", "u_2"),
        with_user("sub_2", "cus_2", "u_3"),
    );
    let events = [Event::new("evt_2", "two"), Event::new("evt_3", "three")];
    tx.record_and_save(
        &[events[0].as_new(), events[1].as_new()],
        &[&moved, &second],
        2,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(user("u_1").await.is_empty());
    assert_eq!(user("u_2").await, ["sub_1"]);
    assert_eq!(user("u_3").await, ["sub_2"]);

    // Unchanged keys, another status: saved, still found by its user.
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscription("sub_1", "cus_1", 3).await.unwrap();
    let active = SubscriptionRecord {
        status: Some(Status::Active),
        ..moved.clone()
    };
    tx.record_and_save(&[Event::new("evt_4", "four").as_new()], &[&active], 3)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let read = store.subscriptions_for_user("u_2").await.unwrap();
    assert_eq!(read, vec![active.clone()]);

    // A save undone by a rollback to its savepoint, then the same save
    // again: the second one is not taken for a no-op.
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscription("sub_1", "cus_1", 4).await.unwrap();
    tx.savepoint().await.unwrap();
    let again = with_user("sub_1", "cus_1", "u_4");
    tx.record_and_save(&[Event::new("evt_5", "five").as_new()], &[&again], 4)
        .await
        .unwrap();
    tx.rollback_to_savepoint().await.unwrap();
    tx.record_and_save(&[Event::new("evt_6", "six").as_new()], &[&again], 4)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(user("u_2").await.is_empty());
    assert_eq!(user("u_4").await, ["sub_1"]);

    // A save of its own (an event written one at a time) moves it too,
    // and one that keeps the user keeps it found.
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscription("sub_1", "cus_1", 5).await.unwrap();
    let saved_alone = with_user("sub_1", "cus_1", "u_5");
    tx.save_subscription(&saved_alone, 5).await.unwrap();
    tx.commit().await.unwrap();
    assert!(user("u_4").await.is_empty());
    assert_eq!(user("u_5").await, ["sub_1"]);
    let mut tx = store.begin().await.unwrap();
    tx.lock_subscription("sub_1", "cus_1", 6).await.unwrap();
    let kept = SubscriptionRecord {
        status: Some(Status::Active),
        ..saved_alone
    };
    tx.save_subscription(&kept, 6).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.subscriptions_for_user("u_5").await.unwrap(),
        vec![kept]
    );
}

async fn lock_subscription_serializes_writers_of_one_subscription(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    // First on a subscription nobody has stored yet, then on one that exists.
    for round in 1..=2_i64 {
        let mut first = store.begin().await.unwrap();
        let mut record = first.lock_subscription("sub_q", "cus_q", 1).await.unwrap();
        let second = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                let mut seen = tx.lock_subscription("sub_q", "cus_q", 2).await?;
                let before = seen.clone();
                seen.snapshot_created += 1;
                seen.snapshot_event_id = format!("second {round}");
                tx.save_subscription(&seen, 2).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(before)
            }
        });
        tokio::time::sleep(BLOCKED).await;
        assert!(
            !second.is_finished(),
            "round {round}: the second writer waits"
        );
        record.snapshot_created += 10;
        record.snapshot_event_id = format!("first {round}");
        first.save_subscription(&record, 1).await.unwrap();
        first.commit().await.unwrap();

        let seen = second.await.unwrap().unwrap();
        assert_eq!(
            seen, record,
            "round {round}: the second sees the first's write"
        );
        let stored = store.subscriptions_for_customer("cus_q").await.unwrap();
        assert_eq!(stored[0].snapshot_created, 11 * round, "no update is lost");
        assert_eq!(stored[0].snapshot_event_id, format!("second {round}"));
    }

    // Writers of different subscriptions: PostgreSQL locks rows, so they
    // run side by side; SQLite's single writer serializes whole
    // transactions.
    let mut first = store.begin().await.unwrap();
    first.lock_subscription("sub_a", "cus_a", 1).await.unwrap();
    match backend {
        Backend::Postgres => {
            let mut other = store.begin().await.unwrap();
            tokio::time::timeout(SOON, other.lock_subscription("sub_b", "cus_b", 1))
                .await
                .expect("no wait on another subscription")
                .unwrap();
            other.commit().await.unwrap();
        }
        Backend::Sqlite => {
            assert!(
                tokio::time::timeout(BLOCKED, store.begin()).await.is_err(),
                "a second transaction waits for the writer"
            );
        }
    }
    first.commit().await.unwrap();
}

async fn customer_records_sees_the_transaction_and_readers_see_only_commits(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    save(&*store, "sub_c1", "cus_c", status(Status::Active)).await;
    save(&*store, "sub_other", "cus_other", status(Status::Active)).await;

    let mut tx = store.begin().await.unwrap();
    let mut record = tx.lock_subscription("sub_c2", "cus_c", 1).await.unwrap();
    record.status = Some(Status::Trialing);
    tx.save_subscription(&record, 1).await.unwrap();
    let inside = tx.customer_records("cus_c").await.unwrap();
    assert_eq!(ids(inside.clone()), ["sub_c1", "sub_c2"]);
    assert!(inside.contains(&record));
    assert!(tx.customer_records("cus_none").await.unwrap().is_empty());
    // Readers outside the transaction see only what is committed.
    assert_eq!(
        ids(store.subscriptions_for_customer("cus_c").await.unwrap()),
        ["sub_c1"]
    );
    tx.commit().await.unwrap();
    assert_eq!(
        ids(store.subscriptions_for_customer("cus_c").await.unwrap()),
        ["sub_c1", "sub_c2"]
    );
}

async fn customers_records_reads_every_subscription_of_several_customers_at_once(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    save(&*store, "sub_a1", "cus_a", status(Status::Active)).await;
    save(&*store, "sub_a2", "cus_a", status(Status::Canceled)).await;
    save(&*store, "sub_b1", "cus_b", status(Status::Active)).await;
    save(&*store, "sub_other", "cus_other", status(Status::Active)).await;

    let mut tx = store.begin().await.unwrap();
    let mut record = tx.lock_subscription("sub_b2", "cus_b", 1).await.unwrap();
    record.status = Some(Status::Trialing);
    tx.save_subscription(&record, 1).await.unwrap();
    let read = tx
        .customers_records(&["cus_a", "cus_b", "cus_none"])
        .await
        .unwrap();
    assert_eq!(
        sorted(ids(read.clone())),
        ["sub_a1", "sub_a2", "sub_b1", "sub_b2"],
        "every subscription of the customers named, none of others"
    );
    assert!(read.contains(&record), "as the transaction wrote it");
    let one = tx.customer_records("cus_a").await.unwrap();
    assert!(one.iter().all(|r| read.contains(r)), "whole records");
    assert!(tx.customers_records(&[]).await.unwrap().is_empty());
    assert!(tx
        .customers_records(&["cus_none"])
        .await
        .unwrap()
        .is_empty());
    tx.rollback().await.unwrap();
}

async fn subscriptions_for_user_and_customer_follow_metadata_and_links(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    seed_users(&*store).await;

    assert_eq!(
        ids(store.subscriptions_for_user("user_1").await.unwrap()),
        ["sub_both", "sub_linked", "sub_meta"],
        "each subscription once"
    );
    assert_eq!(
        ids(store.subscriptions_for_user("user_2").await.unwrap()),
        ["sub_other"]
    );
    assert!(store
        .subscriptions_for_user("user_nobody")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(store.subscriptions_for_customer("cus_2").await.unwrap()),
        ["sub_both", "sub_linked"]
    );
    assert!(store
        .subscriptions_for_customer("cus_nobody")
        .await
        .unwrap()
        .is_empty());
}

async fn subscriptions_of_subjects_reads_several_at_once_as_each_alone(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    seed_users(&*store).await;

    // Users and customers mixed, one asked twice, some with nothing.
    let subjects = [
        Subject::User("user_1".into()),
        Subject::Customer("cus_2".into()),
        Subject::User("user_nobody".into()),
        Subject::User("user_2".into()),
        Subject::Customer("cus_nobody".into()),
        Subject::User("user_1".into()),
        Subject::Customer("cus_1".into()),
    ];
    let together = store.subscriptions_of_subjects(&subjects).await.unwrap();
    assert_eq!(together.len(), subjects.len(), "one answer per subject");
    for (subject, records) in subjects.iter().zip(together) {
        let alone = match subject {
            Subject::User(id) => store.subscriptions_for_user(id).await.unwrap(),
            Subject::Customer(id) => store.subscriptions_for_customer(id).await.unwrap(),
        };
        assert_eq!(
            ids(records.clone()),
            ids(alone.clone()),
            "{subject:?}: the same subscriptions as read alone"
        );
        assert!(
            records.iter().all(|r| alone.contains(r)),
            "{subject:?}: whole records"
        );
    }
    let expected: Vec<Vec<&str>> = vec![
        vec!["sub_both", "sub_linked", "sub_meta"],
        vec!["sub_both", "sub_linked"],
        vec![],
        vec!["sub_other"],
        vec![],
        vec!["sub_both", "sub_linked", "sub_meta"],
        vec!["sub_meta"],
    ];
    let read = store.subscriptions_of_subjects(&subjects).await.unwrap();
    assert_eq!(read.into_iter().map(ids).collect::<Vec<_>>(), expected);
    assert!(store
        .subscriptions_of_subjects(&[])
        .await
        .unwrap()
        .is_empty());
}

/// user_1 reaches sub_meta by metadata, sub_linked by a link to cus_2,
/// and sub_both both ways; user_2 reaches sub_other by metadata.
async fn seed_users(store: &dyn Store) {
    let user = |u: &str| {
        let u = u.to_owned();
        move |r: &mut SubscriptionRecord| r.user_id = Some(u)
    };
    save(store, "sub_meta", "cus_1", user("user_1")).await;
    save(store, "sub_linked", "cus_2", status(Status::Active)).await;
    save(store, "sub_both", "cus_2", user("user_1")).await;
    save(store, "sub_other", "cus_3", user("user_2")).await;
    let mut tx = store.begin().await.unwrap();
    tx.link_customer("cus_2", "user_1", 1).await.unwrap();
    tx.commit().await.unwrap();
}

/// Customers in every state the sweeps tell apart.
async fn seed_customers(store: &dyn Store) {
    // cus_a: live and unlinked, its placeholder has no status yet.
    save(store, "sub_a2", "cus_a", status(Status::Active)).await;
    save(store, "sub_a1", "cus_a", |_| {}).await;
    // cus_b: its subscription names a user.
    save(store, "sub_b", "cus_b", |r| {
        r.status = Some(Status::Active);
        r.user_id = Some("user_b".to_owned());
    })
    .await;
    // cus_c: linked to a user.
    save(store, "sub_c", "cus_c", status(Status::Active)).await;
    let mut tx = store.begin().await.unwrap();
    tx.link_customer("cus_c", "user_c", 1).await.unwrap();
    tx.commit().await.unwrap();
    // cus_d: over.
    save(store, "sub_d", "cus_d", status(Status::Canceled)).await;
    save(store, "sub_x", "cus_d", status(Status::IncompleteExpired)).await;
    // cus_e: one over, one live.
    save(store, "sub_e1", "cus_e", status(Status::Canceled)).await;
    save(store, "sub_e2", "cus_e", status(Status::PastDue)).await;
}

async fn non_terminal_subscriptions_leave_out_canceled_and_expired(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert!(store.non_terminal_subscriptions().await.unwrap().is_empty());
    seed_customers(&*store).await;
    assert_eq!(
        store.non_terminal_subscriptions().await.unwrap(),
        ["sub_a1", "sub_a2", "sub_b", "sub_c", "sub_e2"],
        "ordered by id"
    );
}

async fn unlinked_customers_lists_live_customers_no_user_is_linked_to(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    assert!(store.unlinked_customers().await.unwrap().is_empty());
    seed_customers(&*store).await;
    let pair = |c: &str, s: &str| (c.to_owned(), s.to_owned());
    assert_eq!(
        store.unlinked_customers().await.unwrap(),
        [pair("cus_a", "sub_a1"), pair("cus_e", "sub_e2")],
        "ordered by customer, with its first live subscription"
    );
}

async fn link_customer_is_idempotent_and_users_of_customer_unions_both_sources(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    save(&*store, "sub_1", "cus_1", |r| {
        r.user_id = Some("user_meta".to_owned())
    })
    .await;
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.users_of_customer("cus_1").await.unwrap(), ["user_meta"]);
    tx.link_customer("cus_1", "user_linked", 1).await.unwrap();
    tx.link_customer("cus_1", "user_linked", 2).await.unwrap();
    tx.link_customer("cus_1", "user_meta", 3).await.unwrap();
    assert_eq!(
        sorted(tx.users_of_customer("cus_1").await.unwrap()),
        ["user_linked", "user_meta"],
        "each user once"
    );
    assert!(tx.users_of_customer("cus_nobody").await.unwrap().is_empty());
    save_in(&mut *tx, "sub_2", "cus_2", Some("user_meta")).await;
    save_in(&mut *tx, "sub_3", "cus_3", Some("user_3")).await;
    let customers = Affected {
        customers: ["cus_1", "cus_2", "cus_nobody"].map(str::to_owned).to_vec(),
        ..Affected::default()
    };
    assert_eq!(
        sorted(tx.publish_with_users(&customers).await.unwrap()),
        ["user_linked", "user_meta"],
        "the users of every customer named, each once"
    );
    let nobody = Affected::default();
    assert!(tx.publish_with_users(&nobody).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    assert_eq!(
        ids(store.subscriptions_for_user("user_linked").await.unwrap()),
        ["sub_1"]
    );
}

async fn first_users_of_customers_names_the_least_linked_user_of_each(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    save(&*store, "sub_1", "cus_1", |r| {
        r.user_id = Some("user_m".to_owned())
    })
    .await;
    save(&*store, "sub_2", "cus_2", |r| {
        r.user_id = Some("user_z".to_owned())
    })
    .await;
    save(&*store, "sub_3", "cus_3", |_| {}).await;
    let mut tx = store.begin().await.unwrap();
    // A link sorts before the metadata user on cus_1, after it on cus_2.
    tx.link_customer("cus_1", "user_a", 1).await.unwrap();
    tx.link_customer("cus_2", "user_zz", 1).await.unwrap();
    tx.link_customer("cus_4", "user_4", 1).await.unwrap();
    let mut first = tx
        .first_users_of_customers(&["cus_1", "cus_2", "cus_3", "cus_4", "cus_none"])
        .await
        .unwrap();
    first.sort();
    let pair = |c: &str, u: &str| (c.to_owned(), u.to_owned());
    assert_eq!(
        first,
        [
            pair("cus_1", "user_a"),
            pair("cus_2", "user_z"),
            pair("cus_4", "user_4")
        ],
        "the least user of each customer that has one"
    );
    let least = |users: Vec<String>| users.into_iter().min();
    assert_eq!(
        least(tx.users_of_customer("cus_2").await.unwrap()),
        Some("user_z".to_owned()),
        "the least of users_of_customer"
    );
    assert!(tx.first_users_of_customers(&[]).await.unwrap().is_empty());
    tx.rollback().await.unwrap();
}

async fn holds_are_set_and_released_per_review(backend: Backend) {
    let Fresh { store, db: _db } = fresh(backend).await;
    for n in 1..=3 {
        save(
            &*store,
            &format!("sub_h{n}"),
            &format!("cus_h{n}"),
            status(Status::Active),
        )
        .await;
    }
    let mut tx = store.begin().await.unwrap();
    tx.set_hold("sub_h1", 7).await.unwrap();
    tx.set_hold("sub_h2", 7).await.unwrap();
    tx.set_hold("sub_h3", 8).await.unwrap();
    tx.set_hold("sub_unknown", 7).await.unwrap();
    tx.commit().await.unwrap();
    let hold = |customer: &'static str| {
        let store = store.clone();
        async move { store.subscriptions_for_customer(customer).await.unwrap()[0].hold_review_id }
    };
    assert_eq!(hold("cus_h1").await, Some(7));
    assert_eq!(hold("cus_h3").await, Some(8));

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        sorted(tx.release_holds(7).await.unwrap()),
        ["cus_h1", "cus_h2"]
    );
    assert!(tx.release_holds(7).await.unwrap().is_empty());
    assert!(tx.release_holds(999).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    assert_eq!(hold("cus_h1").await, None);
    assert_eq!(hold("cus_h2").await, None);
    assert_eq!(hold("cus_h3").await, Some(8));
}

async fn unreadable_rows_are_reported_as_corrupt(backend: Backend) {
    use sqlx::{Connection, Executor};
    let Fresh { store, db } = fresh(backend).await;
    save(&*store, "sub_bad", "cus_bad", status(Status::Active)).await;
    save(&*store, "sub_items", "cus_items", status(Status::Active)).await;
    let edits = "UPDATE subscriptions SET status = 'bogus' WHERE id = 'sub_bad'; \
                 UPDATE subscriptions SET items = 'not json' WHERE id = 'sub_items'";
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            conn.execute(edits).await.unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            conn.execute(edits).await.unwrap();
            conn.close().await.unwrap();
        }
    }
    for customer in ["cus_bad", "cus_items"] {
        let err = store
            .subscriptions_for_customer(customer)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert!(!err.is_transient());
    }
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .lock_subscription("sub_bad", "cus_bad", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

/// Locks and saves a subscription of `customer` for `user` inside `tx`.
async fn save_in(tx: &mut dyn tollgate::store::Tx, id: &str, customer: &str, user: Option<&str>) {
    let mut record = tx.lock_subscription(id, customer, 1).await.unwrap();
    record.user_id = user.map(str::to_owned);
    tx.save_subscription(&record, 2).await.unwrap();
}

//! Subscription state built from events, in any arrival order and in both
//! API shapes, answered over gRPC.

use tollgate::proto::Reason;

use crate::helpers::{now, spawn_app_on, Backend, TestApp};
use crate::on_both_backends;
use crate::stripe::{checkout_completed, invoice_event, subscription_event, Shape, Sub};

on_both_backends!(
    a_full_lifecycle_ends_in_the_same_state_in_every_arrival_order,
    checkout_arriving_last_still_links_the_user,
    both_api_shapes_give_the_same_answer,
    a_stale_past_due_after_a_newer_active_keeps_access,
    a_paid_invoice_seen_before_its_renewal_extends_access,
    past_due_keeps_access_through_the_grace_window,
    the_grace_counts_from_the_run_start_whatever_order_the_webhooks_came_in,
    product_filter_counts_only_matching_subscriptions,
    has_access_refuses_anything_but_exactly_one_subject,
    a_subscription_that_moves_to_another_user_is_invalidated_for_both,
);

const DAY: i64 = 86_400;

/// trial -> active -> past_due -> active [-> canceled], one event each, a
/// minute apart, for subscription `n`.
fn lifecycle(
    n: usize,
    shape: Shape,
    with_cancel: bool,
    now: i64,
) -> (String, Vec<serde_json::Value>) {
    let t0 = now - 3600;
    let customer = format!("cus_life_{n}");
    let base = Sub {
        trial_end: Some(now + 3 * DAY),
        ..Sub::new(
            &format!("sub_life_{n}"),
            &customer,
            "trialing",
            now + 3 * DAY,
        )
    };
    let renewed = Sub {
        period_end: now + 30 * DAY,
        trial_end: None,
        ..base.clone()
    };
    let mut steps = vec![
        ("customer.subscription.created", base.clone()),
        ("customer.subscription.updated", renewed.status("active")),
        ("customer.subscription.updated", renewed.status("past_due")),
        ("customer.subscription.updated", renewed.status("active")),
    ];
    if with_cancel {
        steps.push(("customer.subscription.deleted", renewed.status("canceled")));
    }
    let events = steps
        .into_iter()
        .enumerate()
        .map(|(i, (ty, sub))| {
            subscription_event(
                &format!("evt_life_{n}_{i}"),
                ty,
                t0 + 60 * i as i64,
                &sub,
                shape,
            )
        })
        .collect();
    (customer, events)
}

/// Every ordering of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

async fn final_answer(app: &TestApp, customer: &str) -> (bool, i32, String, i64, i64) {
    let r = app.access_for_customer(customer).await;
    (
        r.has_access,
        r.reason,
        r.status,
        r.current_period_end,
        r.verified_at,
    )
}

async fn a_full_lifecycle_ends_in_the_same_state_in_every_arrival_order(backend: Backend) {
    let app = spawn_app_on(backend).await;
    // One clock for every run, so runs differ only by arrival order.
    let t = now();
    let mut n = 0;
    for shape in Shape::BOTH {
        for with_cancel in [true, false] {
            let (customer, events) = lifecycle(n, shape, with_cancel, t);
            n += 1;
            for e in &events {
                app.deliver(e).await;
            }
            let expected = final_answer(&app, &customer).await;
            let expected_status = if with_cancel { "canceled" } else { "active" };
            assert_eq!(expected.2, expected_status);
            assert_eq!(expected.0, !with_cancel);

            for order in permutations(events.len()) {
                let (customer, events) = lifecycle(n, shape, with_cancel, t);
                n += 1;
                for i in &order {
                    app.deliver(&events[*i]).await;
                }
                let got = final_answer(&app, &customer).await;
                assert_eq!(got, expected, "order {order:?} {shape:?}");
            }
        }
    }
}

async fn checkout_arriving_last_still_links_the_user(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let sub = Sub::new("sub_late", "cus_late", "active", t + 30 * DAY);
    app.deliver(&subscription_event(
        "evt_late_1",
        "customer.subscription.created",
        t - 50,
        &sub,
        Shape::Basil,
    ))
    .await;
    app.deliver(&invoice_event(
        "evt_late_2",
        "invoice.paid",
        t - 40,
        "sub_late",
        "cus_late",
        t + 30 * DAY,
        Shape::Basil,
    ))
    .await;
    let before = app.access_for_user("user_late").await;
    assert_eq!(
        before.reason,
        Reason::NoSubscription as i32,
        "not linked yet"
    );

    let checkout = checkout_completed("evt_late_3", t - 60, "user_late", "cus_late", "sub_late");
    assert_eq!(app.deliver(&checkout).await, "applied");
    let after = app.access_for_user("user_late").await;
    assert!(after.has_access, "{after:?}");
    assert_eq!(after.reason, Reason::Active as i32);
    assert_eq!(after.subscription_id, "sub_late");
}

async fn both_api_shapes_give_the_same_answer(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let mut answers = Vec::new();
    for shape in Shape::BOTH {
        let customer = format!("cus_shape_{shape:?}");
        let sub = Sub {
            user_id: Some(format!("user_shape_{shape:?}")),
            ..Sub::new(
                &format!("sub_shape_{shape:?}"),
                &customer,
                "active",
                t + 10 * DAY,
            )
        };
        app.deliver(&subscription_event(
            &format!("evt_shape_{shape:?}"),
            "customer.subscription.created",
            t - 5,
            &sub,
            shape,
        ))
        .await;
        let by_user = app.access_for_user(&format!("user_shape_{shape:?}")).await;
        assert!(
            by_user.has_access,
            "metadata user_id links the user ({shape:?})"
        );
        let r = app.access_for_customer(&customer).await;
        answers.push((
            r.has_access,
            r.reason,
            r.status,
            r.current_period_end,
            r.access_until,
            r.verified_at,
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].3, t + 10 * DAY);
    assert_eq!(
        answers[0].5,
        t - 5,
        "verified_at is the event's created, not the arrival time"
    );
}

async fn a_stale_past_due_after_a_newer_active_keeps_access(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let sub = Sub::new("sub_stale", "cus_stale", "active", t + 30 * DAY);
    app.deliver(&subscription_event(
        "evt_stale_new",
        "customer.subscription.updated",
        t - 10,
        &sub,
        Shape::Basil,
    ))
    .await;
    let old = subscription_event(
        "evt_stale_old",
        "customer.subscription.updated",
        t - 3 * DAY,
        &sub.status("past_due"),
        Shape::Basil,
    );
    assert_eq!(app.deliver(&old).await, "stale");
    let r = app.access_for_customer("cus_stale").await;
    assert_eq!((r.has_access, r.status.as_str()), (true, "active"));
}

async fn a_paid_invoice_seen_before_its_renewal_extends_access(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    // The period on record has just ended; the renewal's invoice.paid comes
    // in before the subscription update that would move the period.
    let sub = Sub::new("sub_inv", "cus_inv", "active", t - 60);
    app.deliver(&subscription_event(
        "evt_inv_1",
        "customer.subscription.updated",
        t - 100, // heard of recently: the lapse is not re-checked with Stripe
        &sub,
        Shape::Acacia,
    ))
    .await;
    assert_eq!(
        app.access_for_customer("cus_inv").await.reason,
        Reason::Expired as i32
    );
    for (i, shape) in Shape::BOTH.into_iter().enumerate() {
        let paid = invoice_event(
            &format!("evt_inv_paid_{i}"),
            "invoice.paid",
            t - 5,
            "sub_inv",
            "cus_inv",
            t + 30 * DAY + i as i64,
            shape,
        );
        assert_eq!(app.deliver(&paid).await, "applied");
    }
    let r = app.access_for_customer("cus_inv").await;
    assert_eq!((r.has_access, r.reason), (true, Reason::Active as i32));
    assert_eq!(r.access_until, t + 30 * DAY + 1);
    // A failed payment is recorded but never changes status by itself.
    let failed = invoice_event(
        "evt_inv_failed",
        "invoice.payment_failed",
        t - 1,
        "sub_inv",
        "cus_inv",
        t + 60 * DAY,
        Shape::Basil,
    );
    assert_eq!(app.deliver(&failed).await, "ignored");
    assert_eq!(app.access_for_customer("cus_inv").await.status, "active");
}

async fn past_due_keeps_access_through_the_grace_window(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let recent = Sub::new("sub_pd_recent", "cus_pd_recent", "past_due", t + DAY);
    app.deliver(&subscription_event(
        "evt_pd_1",
        "customer.subscription.updated",
        t - 2 * DAY,
        &recent,
        Shape::Basil,
    ))
    .await;
    let r = app.access_for_customer("cus_pd_recent").await;
    assert_eq!(
        (r.has_access, r.reason),
        (true, Reason::PastDueGrace as i32)
    );
    assert_eq!(r.access_until, t - 2 * DAY + 7 * DAY);
    assert!(r.detail.contains("past_due since"), "{}", r.detail);

    let old = Sub::new("sub_pd_old", "cus_pd_old", "past_due", t + DAY);
    app.deliver(&subscription_event(
        "evt_pd_2",
        "customer.subscription.updated",
        t - 8 * DAY,
        &old,
        Shape::Basil,
    ))
    .await;
    let r = app.access_for_customer("cus_pd_old").await;
    assert_eq!((r.has_access, r.reason), (false, Reason::PastDue as i32));
}

/// Two dunning runs with a payment between them, and one run's two
/// webhooks newest first: each grace counts from where its run began, as
/// if the webhooks had come in order.
async fn the_grace_counts_from_the_run_start_whatever_order_the_webhooks_came_in(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let updated = |id: &str, at: i64, sub: &Sub| {
        subscription_event(id, "customer.subscription.updated", at, sub, Shape::Basil)
    };

    // past_due 10 days ago, paid 5 days ago, past_due again a day ago; the
    // payment arrives last. Until it does, one run seems to have begun 10
    // days ago (its 7-day grace over); once it does, the run began a day
    // ago.
    let sub = Sub::new("sub_runs", "cus_runs", "past_due", t + DAY);
    app.deliver(&updated("evt_runs_1", t - 10 * DAY, &sub))
        .await;
    app.deliver(&updated("evt_runs_3", t - DAY, &sub)).await;
    let r = app.access_for_customer("cus_runs").await;
    assert_eq!((r.has_access, r.reason), (false, Reason::PastDue as i32));
    let paid = updated("evt_runs_2", t - 5 * DAY, &sub.status("active"));
    assert_eq!(app.deliver(&paid).await, "stale");
    let r = app.access_for_customer("cus_runs").await;
    assert_eq!(
        (r.has_access, r.reason, r.access_until),
        (true, Reason::PastDueGrace as i32, t - DAY + 7 * DAY)
    );

    // past_due 2 days ago arrives before past_due 8 days ago: the run
    // began 8 days ago and its grace is over.
    let sub = Sub::new("sub_late_start", "cus_late_start", "past_due", t + DAY);
    app.deliver(&updated("evt_start_2", t - 2 * DAY, &sub))
        .await;
    let r = app.access_for_customer("cus_late_start").await;
    assert_eq!(r.access_until, t - 2 * DAY + 7 * DAY);
    assert_eq!(
        app.deliver(&updated("evt_start_1", t - 8 * DAY, &sub))
            .await,
        "stale"
    );
    let r = app.access_for_customer("cus_late_start").await;
    assert_eq!((r.has_access, r.reason), (false, Reason::PastDue as i32));
}

async fn product_filter_counts_only_matching_subscriptions(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let pro = Sub {
        product: "prod_pro".into(),
        lookup_key: Some("pro_monthly".into()),
        ..Sub::new("sub_pro", "cus_prod", "active", t + DAY)
    };
    let basic = Sub {
        product: "prod_basic".into(),
        ..Sub::new("sub_basic", "cus_prod", "canceled", t + DAY)
    };
    app.deliver(&subscription_event(
        "evt_prod_1",
        "customer.subscription.created",
        t - 5,
        &pro,
        Shape::Basil,
    ))
    .await;
    app.deliver(&subscription_event(
        "evt_prod_2",
        "customer.subscription.deleted",
        t - 5,
        &basic,
        Shape::Basil,
    ))
    .await;
    for (product, access, sub) in [
        ("prod_pro", true, "sub_pro"),
        ("pro_monthly", true, "sub_pro"),
        ("prod_basic", false, "sub_basic"),
        ("", true, "sub_pro"),
    ] {
        let r = app.has_access("", "cus_prod", product).await.unwrap();
        assert_eq!(
            (r.has_access, r.subscription_id.as_str()),
            (access, sub),
            "product {product:?}"
        );
    }
    let r = app.has_access("", "cus_prod", "prod_none").await.unwrap();
    assert_eq!(r.reason, Reason::NoSubscription as i32);
}

async fn has_access_refuses_anything_but_exactly_one_subject(backend: Backend) {
    let app = spawn_app_on(backend).await;
    for (user, customer) in [("", ""), ("u", "cus"), ("  ", "")] {
        let err = app.has_access(user, customer, "").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("exactly one"), "{}", err.message());
    }
    let r = app.access_for_user("nobody").await;
    assert_eq!(
        (r.has_access, r.reason),
        (false, Reason::NoSubscription as i32)
    );
}

async fn a_subscription_that_moves_to_another_user_is_invalidated_for_both(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let sub = Sub {
        user_id: Some("u_before".into()),
        ..Sub::new("sub_move", "cus_move", "active", t + 30 * DAY)
    };
    let created = "customer.subscription.created";
    app.deliver(&subscription_event(
        "evt_move_1",
        created,
        t - 60,
        &sub,
        Shape::Basil,
    ))
    .await;
    // Both answers are cached now.
    assert!(app.access_for_user("u_before").await.has_access);
    assert!(!app.access_for_user("u_after").await.has_access);

    let moved = Sub {
        user_id: Some("u_after".into()),
        ..sub
    };
    let updated = "customer.subscription.updated";
    app.deliver(&subscription_event(
        "evt_move_2",
        updated,
        t - 30,
        &moved,
        Shape::Basil,
    ))
    .await;
    let before = app.access_for_user("u_before").await;
    assert_eq!(
        (before.has_access, before.reason()),
        (false, Reason::NoSubscription),
        "the previous user's cached answer was dropped: {before:?}"
    );
    assert!(app.access_for_user("u_after").await.has_access);
}

//! Stripe events as Stripe sends them, in both API shapes.
//!
//! The layouts follow the integration suite's builders (`tests/api/stripe.rs`,
//! copied rather than imported), with the extra fields a real object carries
//! (billing settings, the full price, `previous_attributes`), so bodies are
//! about as large as real deliveries (~2-3 KB compact JSON).

use serde_json::{json, Value};

/// Which API version's object layout to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Up to 2025-02-24.acacia: period end on the subscription,
    /// `invoice.subscription`.
    Acacia,
    /// From 2025-03-31.basil: period end on each item,
    /// `invoice.parent.subscription_details.subscription`.
    Basil,
}

impl Shape {
    fn api_version(self) -> &'static str {
        match self {
            Shape::Acacia => "2025-02-24.acacia",
            Shape::Basil => "2025-03-31.basil",
        }
    }
}

/// What a subscription snapshot says.
#[derive(Debug, Clone)]
pub struct Sub {
    pub id: String,
    pub customer: String,
    pub status: &'static str,
    pub period_end: i64,
    pub user_id: Option<String>,
    pub product: String,
}

pub fn envelope(id: &str, event_type: &str, created: i64, shape: Shape, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": shape.api_version(),
        "created": created,
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type,
    })
}

fn price(product: &str) -> Value {
    json!({
        "id": format!("price_{product}"),
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "created": 1_721_948_530,
        "currency": "usd",
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": null,
        "metadata": {},
        "nickname": null,
        "product": product,
        "recurring": {
            "aggregate_usage": null,
            "interval": "month",
            "interval_count": 1,
            "meter": null,
            "trial_period_days": null,
            "usage_type": "licensed"
        },
        "tax_behavior": "unspecified",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": "recurring",
        "unit_amount": 2000,
        "unit_amount_decimal": "2000"
    })
}

pub fn subscription_object(sub: &Sub, shape: Shape) -> Value {
    let start = sub.period_end - 30 * 86400;
    let mut item = json!({
        "id": format!("si_{}", sub.id),
        "object": "subscription_item",
        "created": start,
        "discounts": [],
        "metadata": {},
        "price": price(&sub.product),
        "quantity": 1,
        "subscription": sub.id,
        "tax_rates": []
    });
    let mut obj = json!({
        "id": sub.id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": { "enabled": false, "liability": null, "disabled_reason": null },
        "billing_cycle_anchor": start,
        "billing_thresholds": null,
        "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": null,
        "cancellation_details": { "comment": null, "feedback": null, "reason": null },
        "collection_method": "charge_automatically",
        "created": start - 86400,
        "currency": "usd",
        "customer": sub.customer,
        "days_until_due": null,
        "default_payment_method": format!("pm_{}", sub.customer),
        "default_source": null,
        "default_tax_rates": [],
        "description": null,
        "discounts": [],
        "ended_at": null,
        "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
        "latest_invoice": format!("in_{}", sub.id),
        "livemode": false,
        "metadata": {},
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": {
            "payment_method_options": null,
            "payment_method_types": null,
            "save_default_payment_method": "off"
        },
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": start - 86400,
        "status": sub.status,
        "test_clock": null,
        "transfer_data": null,
        "trial_end": null,
        "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
        "trial_start": null,
        "items": { "object": "list", "data": [], "has_more": false, "total_count": 1 },
    });
    match shape {
        Shape::Acacia => {
            obj["current_period_end"] = json!(sub.period_end);
            obj["current_period_start"] = json!(start);
        }
        Shape::Basil => {
            item["current_period_end"] = json!(sub.period_end);
            item["current_period_start"] = json!(start);
        }
    }
    obj["items"]["data"] = json!([item]);
    if let Some(user) = &sub.user_id {
        obj["metadata"] = json!({ "user_id": user });
    }
    obj
}

/// `customer.subscription.updated` with Stripe's `previous_attributes`.
pub fn subscription_updated(id: &str, created: i64, sub: &Sub, shape: Shape) -> Value {
    let mut event = envelope(
        id,
        "customer.subscription.updated",
        created,
        shape,
        subscription_object(sub, shape),
    );
    event["data"]["previous_attributes"] = json!({
        "latest_invoice": format!("in_prev_{}", sub.id),
        "current_period_end": sub.period_end - 30 * 86400,
    });
    event
}

pub fn invoice_event(
    id: &str,
    event_type: &str,
    created: i64,
    subscription: &str,
    customer: &str,
    line_period_end: i64,
    shape: Shape,
) -> Value {
    let mut line = json!({
        "id": format!("il_{id}"),
        "object": "line_item",
        "amount": 2000,
        "currency": "usd",
        "description": "1 × Basic (at $20.00 / month)",
        "discountable": true,
        "discounts": [],
        "livemode": false,
        "metadata": {},
        "period": { "start": line_period_end - 30 * 86400, "end": line_period_end },
        "pricing": { "price_details": { "price": "price_prod_basic", "product": "prod_basic" }, "type": "price_details", "unit_amount_decimal": "2000" },
        "quantity": 1,
    });
    let mut obj = json!({
        "id": format!("in_{id}"),
        "object": "invoice",
        "account_country": "US",
        "account_name": "Example Inc.",
        "amount_due": 2000,
        "amount_paid": 2000,
        "amount_remaining": 0,
        "attempt_count": 1,
        "attempted": true,
        "auto_advance": false,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "usd",
        "customer": customer,
        "customer_email": format!("{customer}@example.com"),
        "hosted_invoice_url": format!("https://invoice.stripe.com/i/acct_x/test_{id}"),
        "livemode": false,
        "metadata": {},
        "number": format!("ABCD-{:04}", created % 10_000),
        "period_end": line_period_end - 30 * 86400,
        "period_start": line_period_end - 60 * 86400,
        "status": "paid",
        "status_transitions": { "finalized_at": created, "paid_at": created, "voided_at": null },
        "subtotal": 2000,
        "total": 2000,
        "lines": { "object": "list", "data": [], "has_more": false, "total_count": 1 },
    });
    match shape {
        Shape::Acacia => {
            obj["subscription"] = json!(subscription);
            obj["paid"] = json!(true);
            line["subscription"] = json!(subscription);
        }
        Shape::Basil => {
            obj["parent"] = json!({
                "type": "subscription_details",
                "subscription_details": { "subscription": subscription, "metadata": {} },
            });
            line["parent"] = json!({
                "type": "subscription_item_details",
                "subscription_item_details": { "subscription": subscription, "subscription_item": format!("si_{subscription}") },
            });
        }
    }
    obj["lines"]["data"] = json!([line]);
    envelope(id, event_type, created, shape, obj)
}

/// One generated delivery.
#[derive(Debug, Clone)]
pub struct Generated {
    pub id: String,
    pub event_type: &'static str,
    pub created: i64,
    pub body: Vec<u8>,
}

/// Builds `count` distinct events over `subs` subscriptions starting at
/// preloaded index `sub_offset` (wrapping at `users`): ~60%
/// `customer.subscription.updated`, ~30% `invoice.paid`, ~10%
/// `invoice.payment_succeeded`, half in each API shape. Events of one
/// subscription get increasing `created` (from `now - 50`), so each applies
/// on top of the previous one rather than being stale.
pub fn generate(
    count: usize,
    subs: usize,
    sub_offset: u64,
    users: u64,
    prefix: &str,
    now: i64,
    seed: u64,
) -> Vec<Generated> {
    let subs = subs.max(1);
    let mut rng = crate::Rng::new(seed);
    let mut seq = vec![0i64; subs];
    (0..count)
        .map(|i| {
            let k = rng.below(subs as u64) as usize;
            let j = seq[k];
            seq[k] += 1;
            let idx = (sub_offset + k as u64) % users.max(1);
            let sub_id = format!("sub_{idx}");
            let customer = format!("cus_{idx}");
            let created = now - 50 + j;
            let period_end = now + 30 * 86400 + j * 86400;
            let shape = if rng.below(2) == 0 {
                Shape::Acacia
            } else {
                Shape::Basil
            };
            let id = format!("evt_{prefix}_{i}");
            let roll = rng.below(10);
            let (event_type, value) = if roll < 6 {
                let sub = Sub {
                    id: sub_id,
                    customer,
                    status: "active",
                    period_end,
                    user_id: None,
                    product: "prod_basic".to_owned(),
                };
                let t = "customer.subscription.updated";
                (t, subscription_updated(&id, created, &sub, shape))
            } else {
                let t = if roll < 9 {
                    "invoice.paid"
                } else {
                    "invoice.payment_succeeded"
                };
                let v = invoice_event(&id, t, created, &sub_id, &customer, period_end, shape);
                (t, v)
            };
            Generated {
                id,
                event_type,
                created,
                body: serde_json::to_vec(&value).expect("events serialize"),
            }
        })
        .collect()
}

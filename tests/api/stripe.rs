//! Builders for Stripe events in both API shapes, as Stripe sends them.

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
    pub const BOTH: [Shape; 2] = [Shape::Acacia, Shape::Basil];

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
    pub trial_end: Option<i64>,
    pub user_id: Option<String>,
    pub product: String,
    pub lookup_key: Option<String>,
}

impl Sub {
    pub fn new(id: &str, customer: &str, status: &'static str, period_end: i64) -> Sub {
        Sub {
            id: id.to_owned(),
            customer: customer.to_owned(),
            status,
            period_end,
            trial_end: None,
            user_id: None,
            product: "prod_basic".to_owned(),
            lookup_key: None,
        }
    }

    pub fn status(&self, status: &'static str) -> Sub {
        Sub {
            status,
            ..self.clone()
        }
    }
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

pub fn subscription_object(sub: &Sub, shape: Shape) -> Value {
    let mut item = json!({
        "id": format!("si_{}", sub.id),
        "object": "subscription_item",
        "price": {
            "id": format!("price_{}", sub.product),
            "object": "price",
            "product": sub.product,
            "lookup_key": sub.lookup_key,
        },
        "quantity": 1,
        "subscription": sub.id,
    });
    let mut obj = json!({
        "id": sub.id,
        "object": "subscription",
        "customer": sub.customer,
        "status": sub.status,
        "cancel_at_period_end": false,
        "trial_end": sub.trial_end,
        "metadata": {},
        "items": { "object": "list", "data": [], "has_more": false },
    });
    match shape {
        Shape::Acacia => {
            obj["current_period_end"] = json!(sub.period_end);
            obj["current_period_start"] = json!(sub.period_end - 30 * 86400);
        }
        Shape::Basil => {
            item["current_period_end"] = json!(sub.period_end);
            item["current_period_start"] = json!(sub.period_end - 30 * 86400);
        }
    }
    obj["items"]["data"] = json!([item]);
    if let Some(user) = &sub.user_id {
        obj["metadata"] = json!({ "user_id": user });
    }
    obj
}

pub fn subscription_event(
    id: &str,
    event_type: &str,
    created: i64,
    sub: &Sub,
    shape: Shape,
) -> Value {
    envelope(
        id,
        event_type,
        created,
        shape,
        subscription_object(sub, shape),
    )
}

pub fn checkout_completed(
    id: &str,
    created: i64,
    user: &str,
    customer: &str,
    subscription: &str,
) -> Value {
    envelope(
        id,
        "checkout.session.completed",
        created,
        Shape::Basil,
        json!({
            "id": format!("cs_test_{id}"),
            "object": "checkout.session",
            "client_reference_id": user,
            "customer": customer,
            "subscription": subscription,
            "mode": "subscription",
            "status": "complete",
            "metadata": {},
        }),
    )
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
        "period": { "start": line_period_end - 30 * 86400, "end": line_period_end },
    });
    let mut obj = json!({
        "id": format!("in_{id}"),
        "object": "invoice",
        "customer": customer,
        "status": "paid",
        "lines": { "object": "list", "data": [], "has_more": false },
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
                "subscription_item_details": { "subscription": subscription, "subscription_item": "si_x" },
            });
        }
    }
    obj["lines"]["data"] = json!([line]);
    envelope(id, event_type, created, shape, obj)
}

/// A thin event (`v2.core.event`) as an event destination delivers it to a
/// webhook endpoint: an RFC 3339 `created`, a `v1.` type, and only a
/// reference to the object; `twin` is its `snapshot_event`.
pub fn thin_event(
    id: &str,
    v1_type: &str,
    created: i64,
    (object_type, object_id): (&str, &str),
    twin: Option<&str>,
) -> Value {
    let path = match object_type {
        "subscription" => "subscriptions",
        "invoice" => "invoices",
        "checkout.session" => "checkout/sessions",
        "customer" => "customers",
        other => other,
    };
    json!({
        "id": id,
        "object": "v2.core.event",
        "type": format!("v1.{v1_type}"),
        "created": tollgate::clock::rfc3339(created),
        "livemode": false,
        "context": null,
        "related_object": {
            "id": object_id,
            "type": object_type,
            "url": format!("/v1/{path}/{object_id}"),
        },
        "snapshot_event": twin,
    })
}

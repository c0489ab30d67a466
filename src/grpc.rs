//! The gRPC edge: `tollgate.v1.Entitlements`. Converts messages to domain
//! calls and back, nothing more.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::access::{Access, Query};
use crate::policy::{Decision, Reason};
use crate::proto;
use crate::proto::entitlements_server::Entitlements;
use crate::subject::Subject;

pub struct EntitlementsService {
    pub access: Arc<Access>,
}

#[tonic::async_trait]
impl Entitlements for EntitlementsService {
    async fn has_access(
        &self,
        request: Request<proto::HasAccessRequest>,
    ) -> Result<Response<proto::HasAccessResponse>, Status> {
        crate::error::guarded(async move {
            let req = request.into_inner();
            let subject = Subject::from_parts(&req.user_id, &req.customer_id)?;
            crate::subject::check_field("product", &req.product)?;
            crate::subject::check_field("feature", &req.feature)?;
            let query = Query {
                product: Some(req.product.trim()).filter(|p| !p.is_empty()),
                feature: Some(req.feature.trim()).filter(|f| !f.is_empty()),
            };
            let decision = self.access.has_access(&subject, query).await?;
            Ok(Response::new(to_proto(decision)))
        })
        .await
    }

    async fn list_entitlements(
        &self,
        request: Request<proto::ListEntitlementsRequest>,
    ) -> Result<Response<proto::ListEntitlementsResponse>, Status> {
        crate::error::guarded(async move {
            let req = request.into_inner();
            let subject = Subject::from_parts(&req.user_id, &req.customer_id)?;
            let listed = self.access.entitlements(&subject).await?;
            Ok(Response::new(proto::ListEntitlementsResponse {
                entitlements: listed
                    .into_iter()
                    .map(|(feature, d)| entitlement_to_proto(feature, d))
                    .collect(),
            }))
        })
        .await
    }
}

pub fn entitlement_to_proto(feature: String, d: Decision) -> proto::Entitlement {
    proto::Entitlement {
        feature,
        has_access: d.has_access,
        reason: reason_to_proto(d.reason) as i32,
        access_until: d.access_until,
        subscription_id: d.subscription_id,
        detail: d.detail,
    }
}

pub fn to_proto(d: Decision) -> proto::HasAccessResponse {
    proto::HasAccessResponse {
        has_access: d.has_access,
        reason: reason_to_proto(d.reason) as i32,
        subscription_id: d.subscription_id,
        status: d.status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        current_period_end: d.current_period_end,
        access_until: d.access_until,
        verified_at: d.verified_at,
        detail: d.detail,
    }
}

fn reason_to_proto(r: Reason) -> proto::Reason {
    match r {
        Reason::Active => proto::Reason::Active,
        Reason::Trialing => proto::Reason::Trialing,
        Reason::PastDueGrace => proto::Reason::PastDueGrace,
        Reason::StaleGrace => proto::Reason::StaleGrace,
        Reason::NoSubscription => proto::Reason::NoSubscription,
        Reason::Expired => proto::Reason::Expired,
        Reason::Canceled => proto::Reason::Canceled,
        Reason::PastDue => proto::Reason::PastDue,
        Reason::Unpaid => proto::Reason::Unpaid,
        Reason::Incomplete => proto::Reason::Incomplete,
        Reason::Paused => proto::Reason::Paused,
        Reason::ReviewHold => proto::Reason::ReviewHold,
        Reason::FeatureNotIncluded => proto::Reason::FeatureNotIncluded,
    }
}

/// `tollgate.v1.Admin`: converts messages and calls [`crate::admin::Admin`].
pub struct AdminService {
    pub admin: Arc<crate::admin::Admin>,
}

/// Checks `authorization: Bearer <token>` on every admin call. Without a
/// configured token the service is disabled.
pub fn admin_auth(
    token: Option<Arc<str>>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(expected) = token.as_deref() else {
            return Err(Status::unavailable(
                "admin API disabled: set TOLLGATE_ADMIN_TOKEN to enable it",
            ));
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if token_matches(given, expected) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong admin token"))
        }
    }
}

/// Whether `given` is `expected`, compared in constant time.
pub fn token_matches(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// With `TOLLGATE_API_TOKEN` set, `Entitlements` calls need
/// `authorization: Bearer <token>`; without it they are open (the gRPC
/// port binds to localhost by default).
pub fn api_auth(
    token: Option<Arc<str>>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(expected) = token.as_deref() else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if token_matches(given, expected) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong API token"))
        }
    }
}

fn review_to_proto(r: crate::store::ReviewRow) -> proto::Review {
    proto::Review {
        id: r.id,
        subject: r.subject,
        subscription_id: r.subscription_id.unwrap_or_default(),
        event_id: r.event_id.unwrap_or_default(),
        reason: r.reason,
        details: r.details,
        created_at_ms: r.created_at_ms,
        resolved_at_ms: r.resolved_at_ms.unwrap_or(0),
        resolution: r.resolution.unwrap_or_default(),
        refresh_outcome: r.refresh_outcome.unwrap_or_default(),
    }
}

fn event_to_proto(e: crate::store::EventRow) -> proto::Event {
    proto::Event {
        id: e.id,
        r#type: e.event_type,
        created: e.created,
        livemode: e.livemode,
        api_version: e.api_version.unwrap_or_default(),
        payload_sha256: e.payload_sha256,
        source: e.source,
        received_at_ms: e.received_at_ms,
        processed_at_ms: e.processed_at_ms.unwrap_or(0),
        outcome: e.outcome,
        error: e.error.unwrap_or_default(),
    }
}

fn audit_to_proto(a: crate::store::AuditRow) -> proto::AuditEntry {
    proto::AuditEntry {
        id: a.id,
        at_ms: a.at_ms,
        actor: a.actor,
        action: a.action,
        target: a.target,
        note: a.note,
    }
}

fn notification_to_proto(n: crate::store::NotificationRow) -> proto::Notification {
    proto::Notification {
        id: n.id,
        kind: n.kind,
        user_id: n.user_id,
        customer_id: n.customer_id,
        subscription_id: n.subscription_id,
        old_status: n.old_status,
        new_status: n.new_status,
        old_access: n.old_access,
        new_access: n.new_access,
        old_access_until: n.old_access_until,
        new_access_until: n.new_access_until,
        reason: n.reason,
        created_at_ms: n.created_at_ms,
        acked: n.acked_at_ms.is_some(),
        attempts: i32::try_from(n.attempts).unwrap_or(i32::MAX),
        dead: n.dead,
    }
}

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn list_reviews(
        &self,
        request: Request<proto::ListReviewsRequest>,
    ) -> Result<Response<proto::ListReviewsResponse>, Status> {
        crate::error::guarded(async move {
            let req = request.into_inner();
            let open = match proto::ReviewState::try_from(req.state).unwrap_or_default() {
                proto::ReviewState::Unspecified | proto::ReviewState::Open => Some(true),
                proto::ReviewState::Resolved => Some(false),
                proto::ReviewState::All => None,
            };
            let reviews = self
                .admin
                .list_reviews(open, &req.subject, req.limit)
                .await?;
            Ok(Response::new(proto::ListReviewsResponse {
                reviews: reviews.into_iter().map(review_to_proto).collect(),
            }))
        })
        .await
    }

    async fn resolve_review(
        &self,
        request: Request<proto::ResolveReviewRequest>,
    ) -> Result<Response<proto::Review>, Status> {
        crate::error::guarded(async move {
            let req = request.into_inner();
            let action = match proto::ResolveAction::try_from(req.action).unwrap_or_default() {
                proto::ResolveAction::Accept => crate::admin::Resolution::Accept,
                proto::ResolveAction::Refresh => crate::admin::Resolution::Refresh,
                proto::ResolveAction::Unspecified => {
                    return Err(Status::invalid_argument("action must be ACCEPT or REFRESH"))
                }
            };
            let review = self.admin.resolve_review(req.id, &req.note, action).await?;
            Ok(Response::new(review_to_proto(review)))
        })
        .await
    }

    async fn get_event(
        &self,
        request: Request<proto::GetEventRequest>,
    ) -> Result<Response<proto::Event>, Status> {
        crate::error::guarded(async move {
            let event = self.admin.get_event(&request.into_inner().id).await?;
            Ok(Response::new(event_to_proto(event)))
        })
        .await
    }

    async fn replay_event(
        &self,
        request: Request<proto::ReplayEventRequest>,
    ) -> Result<Response<proto::Event>, Status> {
        crate::error::guarded(async move {
            let event = self.admin.replay_event(&request.into_inner().id).await?;
            Ok(Response::new(event_to_proto(event)))
        })
        .await
    }

    async fn refresh_subject(
        &self,
        request: Request<proto::RefreshSubjectRequest>,
    ) -> Result<Response<proto::RefreshSubjectResponse>, Status> {
        crate::error::guarded(async move {
            let req = request.into_inner();
            let (refreshed, decision) = self
                .admin
                .refresh_subject(&req.user_id, &req.customer_id)
                .await?;
            Ok(Response::new(proto::RefreshSubjectResponse {
                subscriptions_refreshed: i32::try_from(refreshed).unwrap_or(i32::MAX),
                access: Some(to_proto(decision)),
            }))
        })
        .await
    }

    async fn reconcile(
        &self,
        _request: Request<proto::ReconcileRequest>,
    ) -> Result<Response<proto::ReconcileResponse>, Status> {
        crate::error::guarded(async move {
            let r = self.admin.reconcile().await?;
            Ok(Response::new(proto::ReconcileResponse {
                events_seen: r.events_seen,
                events_applied: r.events_applied,
                events_duplicate: r.events_duplicate,
                events_other: r.events_other,
                pages: r.pages,
                subscriptions_swept: r.subscriptions_swept,
                access_corrections: r.access_corrections,
                errors: r.errors,
                swept: r.swept,
                product_maps_changed: r.product_maps_changed,
            }))
        })
        .await
    }

    async fn list_notifications(
        &self,
        request: Request<proto::ListNotificationsRequest>,
    ) -> Result<Response<proto::ListNotificationsResponse>, Status> {
        crate::error::guarded(async move {
            let req = request.into_inner();
            let rows = self
                .admin
                .list_notifications(req.cursor, req.limit, req.include_acked)
                .await?;
            let next_cursor = rows.last().map_or(req.cursor.max(0), |n| n.id);
            Ok(Response::new(proto::ListNotificationsResponse {
                notifications: rows.into_iter().map(notification_to_proto).collect(),
                next_cursor,
            }))
        })
        .await
    }

    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        crate::error::guarded(async move {
            let req = request.into_inner();
            let limit = if req.limit <= 0 {
                100
            } else {
                req.limit.min(1000)
            };
            let rows = self
                .admin
                .list_audit(&req.target, req.before_id, limit)
                .await?;
            let full = i32::try_from(rows.len()).unwrap_or(i32::MAX) == limit;
            let next_before_id = if full {
                rows.last().map_or(0, |e| e.id)
            } else {
                0
            };
            Ok(Response::new(proto::ListAuditResponse {
                entries: rows.into_iter().map(audit_to_proto).collect(),
                next_before_id,
            }))
        })
        .await
    }

    async fn ack_notifications(
        &self,
        request: Request<proto::AckNotificationsRequest>,
    ) -> Result<Response<proto::AckNotificationsResponse>, Status> {
        crate::error::guarded(async move {
            let acked = self
                .admin
                .ack_notifications(&request.into_inner().ids)
                .await?;
            Ok(Response::new(proto::AckNotificationsResponse {
                acked: i32::try_from(acked).unwrap_or(i32::MAX),
            }))
        })
        .await
    }
}

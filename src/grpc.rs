//! The gRPC edge: `tollgate.v1.Entitlements`. Converts messages to domain
//! calls and back, nothing more.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::access::{Access, Subject};
use crate::policy::{Decision, Reason};
use crate::proto;
use crate::proto::entitlements_server::Entitlements;

pub struct EntitlementsService {
    pub access: Arc<Access>,
}

#[tonic::async_trait]
impl Entitlements for EntitlementsService {
    async fn has_access(
        &self,
        request: Request<proto::HasAccessRequest>,
    ) -> Result<Response<proto::HasAccessResponse>, Status> {
        let req = request.into_inner();
        let subject = Subject::from_parts(&req.user_id, &req.customer_id)?;
        let product = Some(req.product.trim()).filter(|p| !p.is_empty());
        let decision = self.access.has_access(&subject, product).await?;
        Ok(Response::new(to_proto(decision)))
    }
}

fn to_proto(d: Decision) -> proto::HasAccessResponse {
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
    }
}

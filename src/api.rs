//! The HTTP/JSON edge: the same answers as gRPC `Entitlements` for
//! backends that don't speak gRPC. Served on the HTTP port only when
//! `TOLLGATE_API_TOKEN` is set, behind `Authorization: Bearer <token>`.
//!
//! - `GET /v1/access?user_id=…|customer_id=…[&product=…][&feature=…]`
//! - `GET /v1/entitlements?user_id=…|customer_id=…`
//!
//! Field names are HasAccess's in snake_case, the reason is its enum name
//! (`"REASON_ACTIVE"`), times are unix seconds.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::{self, Access, AccessError};
use crate::grpc::{entitlement_to_proto, to_proto};
use crate::proto;
use crate::subject::{check_field, Subject, SubjectError};

pub struct ApiState {
    pub access: Arc<Access>,
    pub token: Arc<str>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/access", get(has_access))
        .route("/v1/entitlements", get(entitlements))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    customer_id: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    feature: String,
}

/// Why a call was refused; turned into a status and `{"error": "..."}`.
#[derive(Debug)]
enum ApiError {
    Unauthorized,
    BadRequest(String),
    Access(AccessError),
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Subject(e) => ApiError::BadRequest(e.to_string()),
            other => ApiError::Access(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token".to_owned(),
            ),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Access(AccessError::Store(e)) if e.is_transient() => {
                tracing::error!(error = ?e, "api store read failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database unavailable; retry later".to_owned(),
                )
            }
            ApiError::Access(e) => {
                tracing::error!(error = ?e, "api call failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::grpc::token_matches(given, &state.token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

impl From<SubjectError> for ApiError {
    fn from(e: SubjectError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// What every call does first: the token, the query string, and exactly
/// one subject.
fn asked(
    state: &ApiState,
    headers: &HeaderMap,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<(Params, Subject), ApiError> {
    authorize(state, headers)?;
    let Query(p) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let subject = Subject::from_parts(&p.user_id, &p.customer_id)?;
    Ok((p, subject))
}

fn optional(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

async fn has_access(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (p, subject) = asked(&state, &headers, query)?;
    check_field("product", &p.product)?;
    check_field("feature", &p.feature)?;
    let query = access::Query {
        product: optional(&p.product),
        feature: optional(&p.feature),
    };
    let decision = state.access.has_access(&subject, query).await?;
    Ok(Json(access_json(&to_proto(decision))))
}

async fn entitlements(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (p, subject) = asked(&state, &headers, query)?;
    if !p.product.is_empty() || !p.feature.is_empty() {
        return Err(ApiError::BadRequest(
            "entitlements take only user_id or customer_id".to_owned(),
        ));
    }
    let listed = state.access.entitlements(&subject).await?;
    let entitlements: Vec<Value> = listed
        .into_iter()
        .map(|(feature, d)| entitlement_json(&entitlement_to_proto(feature, d)))
        .collect();
    Ok(Json(json!({ "entitlements": entitlements })))
}

fn reason_name(reason: i32) -> &'static str {
    proto::Reason::try_from(reason)
        .unwrap_or(proto::Reason::Unspecified)
        .as_str_name()
}

/// A HasAccess answer as JSON, field for field.
pub fn access_json(a: &proto::HasAccessResponse) -> Value {
    json!({
        "has_access": a.has_access,
        "reason": reason_name(a.reason),
        "subscription_id": a.subscription_id,
        "status": a.status,
        "current_period_end": a.current_period_end,
        "access_until": a.access_until,
        "verified_at": a.verified_at,
        "detail": a.detail,
    })
}

fn entitlement_json(e: &proto::Entitlement) -> Value {
    json!({
        "feature": e.feature,
        "has_access": e.has_access,
        "reason": reason_name(e.reason),
        "access_until": e.access_until,
        "subscription_id": e.subscription_id,
        "detail": e.detail,
    })
}

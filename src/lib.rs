//! Tollgate: access entitlements for products that bill with Stripe.
//!
//! Stripe's webhooks come in verified and are recorded exactly once; their
//! effects build a subscription store; product backends ask `HasAccess` over
//! gRPC and get an answer computed from that store.
//!
//! # Layout
//! - [`clock`]: unix seconds as text, total over every `i64`; the sane range.
//! - [`signature`]: `Stripe-Signature` verification, as Stripe's SDKs do it.
//! - [`event`]: event envelope and object parsing, in both API shapes.
//! - [`subscription`]: the subscription model, ordering and state machine.
//! - [`policy`]: the access decision, a pure function of (records, now, policy).
//! - [`ledger`]: the exactly-once pipeline: record an event, apply it, commit.
//! - [`store`]: the store trait, with SQLite and PostgreSQL implementations.
//! - [`access`]: HasAccess in domain terms: cached records, decide, refresh
//!   when stale, stale grace when Stripe cannot be asked.
//! - [`cache`]: the moka cache of each subject's records, with race-free
//!   invalidation.
//! - [`stripe`]: the Stripe API client (timeouts, SDK-style retries, rate
//!   limit).
//! - [`refresh`]: on-demand, single-flight refresh of records from Stripe.
//! - [`http`]: the webhook endpoint and health checks (axum).
//! - [`serve`]: both ports' accept loops: connection caps, slow-client
//!   timeouts, the shutdown deadline.
//! - [`grpc`]: the `tollgate.v1.Entitlements` service (tonic); [`codec`]
//!   answers undecodable requests with `INVALID_ARGUMENT`.
//! - [`error`]: the one place domain errors become HTTP and gRPC statuses.
//! - [`reconciler`]: catch-up on missed events and the drift sweep.
//! - [`notify`]: the access-change outbox and its signed HTTP push.
//! - [`admin`]: review, forensics and repair operations behind gRPC `Admin`.
//! - [`cli`]: `tollgate admin ...`, a client of the Admin service.
//! - [`tasks`]: supervised background tasks, restarted after a panic.
//! - [`config`], [`telemetry`], [`startup`]: options, logs, wiring.

pub mod access;
pub mod access_change;
pub mod admin;
pub mod cache;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod error;
pub mod event;
pub mod grpc;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod policy;
pub mod reconciler;
pub mod refresh;
pub mod reviews;
pub mod serve;
pub mod signature;
pub mod startup;
pub mod store;
pub mod stripe;
pub mod subject;
pub mod subscription;
pub mod tasks;
pub mod telemetry;

#[cfg(test)]
mod testing;

/// Generated protobuf and gRPC code for `tollgate.v1`.
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("tollgate.v1");

    /// The encoded descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tollgate_descriptor.bin"));
}

//! Tollgate: access entitlements for products that bill with Stripe.
//!
//! Stripe's webhooks come in verified and are recorded exactly once; their
//! effects build a subscription store; product backends ask `HasAccess` over
//! gRPC and get an answer computed from that store.
//!
//! # Layout
//! Layers, bottom to top; a module imports only from its own layer or
//! below (`../shared/tools/layering.py src` finds no cycle).
//!
//! **Domain**: pure types and decisions; no I/O, and no clock reads (the
//! time is an argument).
//! - [`clock`]: the [`clock::Clock`] services read (system or manual), and
//!   total RFC 3339 formatting; the one duration syntax of every option;
//!   the sane range 2000–2100.
//! - [`signature`]: `Stripe-Signature` verification, as Stripe's SDKs do it.
//! - [`event`]: event envelopes and objects in every API shape Tollgate
//!   reads; dispatch on event types happens once, in `classify`.
//! - [`subscription`]: the subscription record, its ordering key and the
//!   state machine (`apply_snapshot`).
//! - [`policy`]: the access decision, a pure function of (records, now,
//!   policy), and the feature decision over a [`catalog::Catalog`].
//! - [`catalog`]: which Entitlements features each product carries.
//! - [`compact`]: records as the cache holds them: the decision's inputs
//!   only, item lists interned process-wide.
//! - [`subject`]: who access is asked about ([`subject::Subject`]) and what
//!   a commit touched ([`subject::Affected`]).
//! - [`outcome`]: how an event was handled and why a record needs review.
//! - [`livemode`]: which of Stripe's live and test worlds is applied.
//! - [`access_change`]: whether two decisions differ in a way the product
//!   must hear about, and what it is told.
//!
//! **Store**: [`store`], the `Store`/`Tx` traits with their row and DTO
//! types, and the SQLite and PostgreSQL implementations with their own
//! migrations; HasAccess's reads go through a read pool of their own on
//! either backend. It publishes what it hears from other replicas as
//! [`store::StoreEvent`]s and knows nothing of the cache.
//!
//! **Adapters**: [`stripe`] (the API client: timeouts, SDK-style retries, a
//! rate limit) and [`cache`] (each subject's records in memory, weighed in
//! bytes, invalidated without races).
//!
//! **Services**: each gets its collaborators and the clock at construction.
//! - [`ledger`]: the exactly-once pipeline, shared by first deliveries,
//!   replays and API reads: apply, record, commit; a writer task commits
//!   every write waiting for it together (group commit), each in its
//!   savepoint (one writer on SQLite, several by customer on PostgreSQL).
//! - [`related`]: reads a thin event's object from Stripe before the
//!   ledger records it; reads of one object are shared only when safe.
//! - [`changes`]: what every write does around its commit: announce access
//!   changes, invalidate what it touched.
//! - [`reviews`]: the manual-review workflow.
//! - [`access`]: HasAccess: cached records (concurrent misses share store
//!   reads), decide, refresh when stale, stale grace when Stripe can't be
//!   asked.
//! - [`features`]: product feature maps for feature checks: memory, store,
//!   then one bounded, shared Stripe read per product.
//! - [`refresh`]: on-demand, single-flight re-reads from Stripe, with a
//!   separate budget for customers never seen.
//! - [`reconciler`]: catch-up on missed events and the drift sweep, with
//!   its progress in [`reconciler::Progress`].
//! - [`notify`]: the outbox dispatcher and its signed push payload.
//! - [`admin`]: review, forensics and repair operations behind gRPC `Admin`.
//! - [`oversight`]: what the admin console shows (pages composed from the
//!   store, HasAccess and the reconciler's progress) and its audited actions.
//!
//! **Edges**: convert and wire, nothing more.
//! - [`http`]: the webhook endpoint, health, readiness and metrics (axum);
//!   [`serve`]: both ports' accept loops (connection caps, slow clients, the
//!   shutdown deadline).
//! - [`api`]: the HTTP/JSON API (`/v1/access`, `/v1/entitlements`): the
//!   same answers as gRPC, behind `TOLLGATE_API_TOKEN`.
//! - [`console`]: the admin console, HTML pages on their own port (login,
//!   sessions, CSRF), served only with an admin token.
//! - [`grpc`]: the `Entitlements` and `Admin` services (tonic); [`codec`]
//!   answers undecodable requests with `INVALID_ARGUMENT`.
//! - [`error`]: the one place errors become HTTP statuses and gRPC codes.
//! - [`cli`]: the command-line clients of a running server: `tollgate
//!   admin ...` (the Admin service), `check` (one HasAccess, answered by
//!   the exit status) and `demo` (a signed test-mode lifecycle).
//! - [`startup`]: builds everything and runs it until shutdown; [`tasks`]
//!   supervises background loops; [`config`], [`telemetry`] and [`metrics`]:
//!   options, logs and Prometheus names.

pub mod access;
pub mod access_change;
pub mod admin;
pub mod api;
pub mod cache;
pub mod catalog;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod compact;
pub mod config;
pub mod console;
pub mod error;
pub mod event;
pub mod features;
pub mod grpc;
pub mod http;
pub mod ledger;
pub mod livemode;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod oversight;
pub mod policy;
pub mod reconciler;
pub mod refresh;
pub mod related;
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

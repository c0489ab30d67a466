//! Prometheus metrics, served at `GET /metrics` on the HTTP port.
//!
//! Every name has the `tollgate_` prefix. Counters and histograms are
//! recorded where things happen (through the `metrics` facade); sizes that
//! live in the database (queue depth, dead notifications, open reviews) are
//! read at scrape time.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const WEBHOOKS: &str = "tollgate_webhooks_received_total";
pub const SIGNATURE_FAILURES: &str = "tollgate_webhook_signature_failures_total";
pub const WEBHOOK_ERRORS: &str = "tollgate_webhook_errors_total";
pub const HAS_ACCESS: &str = "tollgate_has_access_total";
pub const HAS_ACCESS_SECONDS: &str = "tollgate_has_access_duration_seconds";
pub const CACHE_HITS: &str = "tollgate_cache_hits_total";
pub const CACHE_MISSES: &str = "tollgate_cache_misses_total";
pub const SUBJECT_LOADS: &str = "tollgate_subject_loads_total";
pub const SUBJECT_READS: &str = "tollgate_subject_reads_total";
pub const STRIPE_REQUESTS: &str = "tollgate_stripe_requests_total";
pub const REFRESHES: &str = "tollgate_refreshes_total";
pub const RECONCILER_LAG: &str = "tollgate_reconciler_lag_seconds";
pub const RECONCILER_LAST_RUN: &str = "tollgate_reconciler_last_run_timestamp_seconds";
pub const NOTIFICATIONS_QUEUED: &str = "tollgate_notifications_queued";
pub const NOTIFICATIONS_DEAD: &str = "tollgate_notifications_dead";
pub const REVIEWS_OPEN: &str = "tollgate_reviews_open";
pub const TASK_RESTARTS: &str = "tollgate_task_restarts_total";
pub const REQUEST_PANICS: &str = "tollgate_request_panics_total";
pub const INPUTS_REFUSED: &str = "tollgate_inputs_refused_total";
pub const CONNECTIONS_DROPPED: &str = "tollgate_connections_dropped_total";
pub const LIVEMODE_MISMATCHES: &str = "tollgate_livemode_mismatches_total";
pub const LEDGER_BATCH_SIZE: &str = "tollgate_ledger_batch_size";
pub const LEDGER_QUEUED: &str = "tollgate_ledger_queued";
pub const LEDGER_BATCHES_LOST: &str = "tollgate_ledger_batches_lost_total";
pub const LEDGER_BULK_WRITES: &str = "tollgate_ledger_bulk_writes_total";
pub const LEDGER_BULK_UNDONE: &str = "tollgate_ledger_bulk_undone_total";
pub const LEDGER_UNLOCKED_WRITES: &str = "tollgate_ledger_unlocked_writes_total";

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HAS_ACCESS_SECONDS.to_owned()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(LEDGER_BATCH_SIZE.to_owned()), &sizes)
                })
                .expect("BUG: bucket lists are not empty");
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (an embedding program's):
                // keep a private one so /metrics still answers.
                Err(_) => builder_fallback(),
            };
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .expect("BUG: a thread can be spawned at startup");
            describe();
            handle
        })
        .clone()
}

fn builder_fallback() -> PrometheusHandle {
    PrometheusBuilder::new().build_recorder().handle()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        WEBHOOKS,
        "Verified webhook deliveries, by event type and outcome (duplicate for redeliveries)."
    );
    describe_counter!(
        SIGNATURE_FAILURES,
        "Webhook deliveries refused by the signature check, by cause."
    );
    describe_counter!(
        WEBHOOK_ERRORS,
        "Webhook deliveries refused for other reasons, by kind."
    );
    describe_counter!(HAS_ACCESS, "HasAccess answers, by reason.");
    describe_histogram!(
        HAS_ACCESS_SECONDS,
        Unit::Seconds,
        "HasAccess latency inside the service."
    );
    describe_counter!(
        CACHE_HITS,
        "HasAccess lookups answered from the in-memory cache."
    );
    describe_counter!(
        CACHE_MISSES,
        "HasAccess lookups not answered from the in-memory cache."
    );
    describe_counter!(
        SUBJECT_LOADS,
        "Loads of a subject's records from the store: concurrent misses of one subject share one."
    );
    describe_counter!(
        SUBJECT_READS,
        "Store reads for subject loads: the loads waiting when a read starts share it."
    );
    describe_counter!(
        STRIPE_REQUESTS,
        "Stripe API requests, by endpoint and HTTP status (error when none)."
    );
    describe_counter!(REFRESHES, "On-demand refreshes, by outcome.");
    describe_gauge!(
        RECONCILER_LAG,
        Unit::Seconds,
        "Now minus the created time of the newest event the reconciler saw."
    );
    describe_gauge!(
        RECONCILER_LAST_RUN,
        Unit::Seconds,
        "Unix time of the last finished reconcile pass."
    );
    describe_gauge!(
        NOTIFICATIONS_QUEUED,
        "Notifications not yet acknowledged (dead ones excluded)."
    );
    describe_gauge!(
        NOTIFICATIONS_DEAD,
        "Notifications that could not be delivered."
    );
    describe_gauge!(REVIEWS_OPEN, "Open manual-review records.");
    describe_counter!(
        TASK_RESTARTS,
        "Background tasks restarted after a panic, by task."
    );
    describe_counter!(
        REQUEST_PANICS,
        "Requests whose handler panicked (answered 500 or INTERNAL), by port."
    );
    describe_counter!(
        INPUTS_REFUSED,
        "Inputs refused for their size or content (over-long ids, invalid UTF-8, NUL bytes, bodies over the limit), by kind."
    );
    describe_counter!(
        LIVEMODE_MISMATCHES,
        "Events of the mode this deployment does not serve (TOLLGATE_LIVEMODE), recorded as ignored; by the event's mode."
    );
    describe_histogram!(
        LEDGER_BATCH_SIZE,
        "Writes (events, API reads) per transaction of the ledger's writer; 1 when they come one at a time."
    );
    describe_gauge!(
        LEDGER_QUEUED,
        "Writes queued for the ledger's writer, not yet taken into a transaction."
    );
    describe_counter!(
        LEDGER_BATCHES_LOST,
        "Transactions of the ledger's writer that failed as a whole (commit failed, connection lost): every write in them was answered with an error and none was stored."
    );
    describe_counter!(
        LEDGER_BULK_WRITES,
        "Events the ledger's writer recorded in runs, with one statement per kind of row for the whole run."
    );
    describe_counter!(
        LEDGER_BULK_UNDONE,
        "Events of runs the ledger's writer undid and wrote one at a time instead, by reason: error (a statement failed), recorded (an event was a duplicate), review (an event needs a review)."
    );
    describe_counter!(
        LEDGER_UNLOCKED_WRITES,
        "Lone webhooks the ledger's writer tried to write without a transaction, on the record as it read it, by result: written, or passed (a new subscription, a step that needs a review, the record changed meanwhile, a duplicate, an error) to the transaction that writes it as usual."
    );
    describe_counter!(
        CONNECTIONS_DROPPED,
        "Connections closed by Tollgate, by port and cause: header_timeout (headers slower than TOLLGATE_HTTP_HEADER_TIMEOUT; kept-alive connections idle that long are closed the same way and counted too), slow_body, shutdown_deadline."
    );
}

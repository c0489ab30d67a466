//! Group commit: a ledger writer applies every write waiting for it in one
//! transaction, each event inside its own savepoint, and answers each only
//! after the commit. On PostgreSQL several writers run side by side, each
//! customer's writes on one of them.
//!
//! To make a batch on purpose, a test runs one writer and holds a gate it
//! needs (SQLite's write lock, or a PostgreSQL row lock) while it writes a
//! first event, so the next webhooks wait in the writer's queue; it reads
//! how many wait, and how they were batched, from the server's own
//! `/metrics` (a separate process, so no other test's writes are counted).

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, Executor};

use crate::fake_stripe::FakeStripe;
use crate::faults::{terminate_tollgate_waiting_on_a_lock, Tmpfs};
use crate::helpers::{
    backend_ready, now, spawn_app_on, Backend, ServerProcess, TestDatabase, SECRET,
};
use crate::on_both_backends;
use crate::stripe::{envelope, invoice_event, subscription_event, Shape, Sub};

on_both_backends!(
    concurrent_webhooks_and_duplicates_each_get_the_right_answer_and_one_effect,
    a_poisoned_event_in_a_batch_is_recorded_failed_and_the_others_apply,
    a_batch_that_loses_its_database_answers_503_to_all_and_a_retry_applies_each_once,
    a_lone_webhook_is_committed_at_once_in_a_batch_of_one,
    a_lone_webhook_on_a_stored_subscription_is_written_without_a_transaction,
    a_lone_webhook_after_another_writer_changed_the_row_is_decided_on_the_stored_row,
    a_run_of_plain_events_is_written_at_once_and_stores_what_one_at_a_time_would,
    a_run_holding_a_redelivery_is_undone_and_written_one_at_a_time,
    events_the_reconciler_finds_are_written_in_runs_and_each_change_announced,
);

const DAY: i64 = 86_400;
const CREATED: &str = "customer.subscription.created";

fn created(n: &str, status: &'static str, at: i64) -> Value {
    let sub = Sub::new(
        &format!("sub_{n}"),
        &format!("cus_{n}"),
        status,
        now() + DAY,
    );
    subscription_event(&format!("evt_{n}"), CREATED, at, &sub, Shape::Basil)
}

fn updated(id: &str, n: &str, status: &'static str, at: i64) -> Value {
    let sub = Sub::new(
        &format!("sub_{n}"),
        &format!("cus_{n}"),
        status,
        now() + DAY,
    );
    let kind = "customer.subscription.updated";
    subscription_event(id, kind, at, &sub, Shape::Basil)
}

async fn concurrent_webhooks_and_duplicates_each_get_the_right_answer_and_one_effect(
    backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    let t = now();
    // A canceled subscription that an `active` event can't revive: each
    // time that event's effect is applied it flags a review, so duplicates
    // that applied it twice would leave two.
    assert_eq!(
        app.deliver(&created("dup", "canceled", t - 60)).await,
        "applied"
    );
    let revive = updated("evt_revive", "dup", "active", t - 30);

    let mut sends = Vec::new();
    for i in 0..250 {
        let body = match i % 5 {
            // 50 deliveries of one event, among 200 distinct ones.
            0 => revive.clone(),
            _ => created(&format!("many_{i}"), "active", t - 10),
        };
        let (url, http, secret) = (app.webhook_url(), app.http.clone(), app.secret.clone());
        sends.push(tokio::spawn(async move {
            let raw = serde_json::to_vec(&body).unwrap();
            let header = tollgate::signature::header_for(&secret, now(), &raw);
            let resp = http
                .post(url)
                .header("Stripe-Signature", header)
                .body(raw)
                .send()
                .await
                .unwrap();
            (
                i,
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap(),
            )
        }));
    }
    let mut first_revivals = 0;
    for send in sends {
        let (i, status, body) = send.await.unwrap();
        assert_eq!(status, 200, "delivery {i}: {body}");
        if i % 5 == 0 {
            if body["duplicate"] == false {
                assert_eq!(body["outcome"], "ignored", "{body}");
                first_revivals += 1;
            }
        } else {
            assert_eq!(body["duplicate"], false, "delivery {i}: {body}");
            assert_eq!(body["outcome"], "applied", "delivery {i}: {body}");
        }
    }
    assert_eq!(
        first_revivals, 1,
        "one first delivery of the duplicated event"
    );

    for i in (0..250).filter(|i| i % 5 != 0) {
        let answer = app.access_for_customer(&format!("cus_many_{i}")).await;
        assert!(answer.has_access, "cus_many_{i}: {answer:?}");
        assert_eq!(app.event_count(&format!("evt_many_{i}")).await, 1);
    }
    let stored = app.store.get_event("evt_revive").await.unwrap().unwrap();
    assert_eq!(stored.outcome, "ignored");
    let reviews = app.store.list_reviews(false).await.unwrap();
    let flagged: Vec<_> = reviews
        .iter()
        .filter(|r| r.event_id.as_deref() == Some("evt_revive"))
        .collect();
    assert_eq!(
        flagged.len(),
        1,
        "one effect of the duplicated event: {reviews:?}"
    );
    assert_eq!(app.access_for_customer("cus_dup").await.status, "canceled");
}

/// A `tollgate serve` process on a fresh database, with what the tests
/// here ask of it.
struct Server {
    process: ServerProcess,
    db: TestDatabase,
    backend: Backend,
    http: reqwest::Client,
    _stripe: FakeStripe,
}

impl Server {
    /// With one writer: a gate then holds every write behind it.
    async fn start(backend: Backend, db: TestDatabase) -> Server {
        Server::with_writers(backend, db, 1).await
    }

    async fn with_writers(backend: Backend, db: TestDatabase, writers: usize) -> Server {
        Server::listing(backend, db, writers, Vec::new()).await
    }

    /// A server whose fake Stripe lists `events`: its reconciler's first
    /// pass, at start, finds them.
    async fn listing(
        backend: Backend,
        db: TestDatabase,
        writers: usize,
        events: Vec<Value>,
    ) -> Server {
        let stripe = FakeStripe::start().await;
        for event in events {
            stripe.push_event(event);
        }
        // A gate is held for a while: the writer must wait it out rather
        // than give up.
        let writers = writers.to_string();
        let env = [
            ("TOLLGATE_DB_BUSY_TIMEOUT", "60s"),
            ("TOLLGATE_LEDGER_WRITERS", writers.as_str()),
        ];
        let process = ServerProcess::start(&db.url, &stripe.base_url(), &env).await;
        Server {
            process,
            db,
            backend,
            http: reqwest::Client::new(),
            _stripe: stripe,
        }
    }

    /// POSTs `body` signed now, in a task: (status, JSON body).
    fn post(&self, body: &Value) -> tokio::task::JoinHandle<(u16, Value)> {
        let raw = serde_json::to_vec(body).unwrap();
        let header = tollgate::signature::header_for(SECRET, now(), &raw);
        let request = self
            .http
            .post(format!("http://{}/webhooks/stripe", self.process.http_addr))
            .header("Stripe-Signature", header)
            .body(raw);
        tokio::spawn(async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        })
    }

    async fn deliver(&self, body: &Value) -> Value {
        let (status, answer) = self.post(body).await.unwrap();
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// The server's `/metrics` samples: (name, labels, value).
    async fn samples(&self) -> Vec<(String, Vec<String>, f64)> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.process.http_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                let labels = labels.split(',').filter(|l| !l.is_empty());
                Some((
                    name.to_owned(),
                    labels.map(str::to_owned).collect(),
                    value.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The sum, over every writer, of `series`: a name, or a name and one
    /// label (`name{le="1"}`).
    async fn metric(&self, series: &str) -> f64 {
        let (name, label) = match series.split_once('{') {
            Some((name, label)) => (name, Some(label.trim_end_matches('}'))),
            None => (series, None),
        };
        self.samples()
            .await
            .into_iter()
            .filter(|(n, labels, _)| {
                n == name && label.is_none_or(|l| labels.iter().any(|x| x == l))
            })
            .map(|(_, _, value)| value)
            .sum()
    }

    /// `series` of each writer that has one.
    async fn per_writer(&self, series: &str) -> Vec<(String, f64)> {
        self.samples()
            .await
            .into_iter()
            .filter(|(name, _, _)| name == series)
            .filter_map(|(_, labels, value)| {
                let writer = labels.iter().find_map(|l| l.strip_prefix("writer="))?;
                Some((writer.trim_matches('"').to_owned(), value))
            })
            .collect()
    }

    /// Waits (up to 20 s) until `series` reads `value`.
    async fn await_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.metric(series).await;
            if now == value {
                return;
            }
            assert!(Instant::now() < deadline, "{series} is {now}, not {value}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Batches the writer has taken so far, and the writes in them.
    async fn batches(&self) -> (f64, f64) {
        (
            self.metric("tollgate_ledger_batch_size_count").await,
            self.metric("tollgate_ledger_batch_size_sum").await,
        )
    }

    /// Runs one statement on the server's database from another session.
    async fn sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.db.url).await.unwrap();
                c.execute(sql).await.unwrap();
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.db.url).await.unwrap();
                c.execute(sql).await.unwrap();
            }
        }
    }

    /// Makes a batch: writes `gate_event` while `gate` holds what it
    /// needs, waits until the writer is stuck on it, then sends `events`
    /// and waits until all of them are queued. Returns their answers to be.
    async fn queue_behind(
        &self,
        gate: &Gate,
        gate_event: &Value,
        events: &[Value],
    ) -> (
        tokio::task::JoinHandle<(u16, Value)>,
        Vec<tokio::task::JoinHandle<(u16, Value)>>,
    ) {
        let (taken, _) = self.batches().await;
        assert!(gate.is_closed());
        let gated = self.post(gate_event);
        self.await_metric("tollgate_ledger_batch_size_count", taken + 1.0)
            .await;
        let mut queued = Vec::new();
        for (n, event) in events.iter().enumerate() {
            queued.push(self.post(event));
            // One at a time, so they queue in this order.
            self.await_metric("tollgate_ledger_queued", (n + 1) as f64)
                .await;
        }
        (gated, queued)
    }
}

/// What a test holds so that the writer waits: SQLite's write lock, or on
/// PostgreSQL the row of one subscription.
struct Gate {
    sqlite: Option<sqlx::SqliteConnection>,
    postgres: Option<sqlx::PgConnection>,
}

impl Gate {
    /// On PostgreSQL, `subscription` must exist.
    async fn close(server: &Server, subscription: &str) -> Gate {
        match server.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&server.db.url)
                    .await
                    .unwrap();
                c.execute("BEGIN IMMEDIATE").await.unwrap();
                Gate {
                    sqlite: Some(c),
                    postgres: None,
                }
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&server.db.url).await.unwrap();
                c.execute("BEGIN").await.unwrap();
                let lock =
                    format!("SELECT 1 FROM subscriptions WHERE id = '{subscription}' FOR UPDATE");
                let locked = c.fetch_all(lock.as_str()).await.unwrap();
                assert_eq!(locked.len(), 1, "{subscription} exists");
                Gate {
                    sqlite: None,
                    postgres: Some(c),
                }
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.sqlite.is_some() || self.postgres.is_some()
    }

    async fn open(mut self) {
        if let Some(mut c) = self.sqlite.take() {
            c.execute("ROLLBACK").await.unwrap();
        }
        if let Some(mut c) = self.postgres.take() {
            c.execute("ROLLBACK").await.unwrap();
        }
    }
}

/// A trigger that refuses, for good, any write of subscription
/// `sub_poison`: SQLite's RAISE is a constraint error, and PostgreSQL's is
/// raised as a check violation.
fn poison_trigger(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER poison_insert BEFORE INSERT ON subscriptions \
             WHEN NEW.id = 'sub_poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END; \
             CREATE TRIGGER poison_update BEFORE UPDATE ON subscriptions \
             WHEN NEW.id = 'sub_poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.id = 'sub_poison' THEN \
             RAISE EXCEPTION 'poisoned' USING ERRCODE = 'check_violation'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON subscriptions \
             FOR EACH ROW EXECUTE FUNCTION poison();"
        }
    }
}

async fn a_poisoned_event_in_a_batch_is_recorded_failed_and_the_others_apply(backend: Backend) {
    let server = Server::start(backend, TestDatabase::create(backend).await).await;
    let t = now();
    server.deliver(&created("gate", "active", t - 60)).await;
    server.sql(poison_trigger(backend)).await;

    let gate = Gate::close(&server, "sub_gate").await;
    let (taken, written) = server.batches().await;
    let bulk_before = server.metric(BULK_WRITES).await;
    let unlocked_before = server.metric(UNLOCKED_WRITTEN).await;
    let batch: Vec<Value> = (0..6)
        .map(|i| match i {
            3 => created("poison", "active", t - 10),
            // The same event twice in one batch: one effect.
            5 => created("batch_1", "active", t - 10),
            _ => created(&format!("batch_{i}"), "active", t - 10),
        })
        .collect();
    let gate_event = updated("evt_gate_past_due", "gate", "past_due", t - 20);
    let (gated, queued) = server.queue_behind(&gate, &gate_event, &batch).await;
    gate.open().await;

    assert_eq!(gated.await.unwrap().1["outcome"], "applied");
    let mut answers = Vec::new();
    for answer in queued {
        let (status, body) = answer.await.unwrap();
        assert_eq!(status, 200, "{body}");
        answers.push((body["duplicate"].clone(), body["outcome"].clone()));
    }
    let first = (Value::Bool(false), Value::from("applied"));
    let failed = (Value::Bool(false), Value::from("failed"));
    let duplicate = (Value::Bool(true), Value::Null);
    assert_eq!(
        answers,
        [
            first.clone(),
            first.clone(),
            first.clone(),
            failed,
            first,
            duplicate
        ]
    );
    assert_eq!(
        server.batches().await,
        (taken + 2.0, written + 7.0),
        "the gate's event alone, then the six queued behind it together"
    );
    // The five plain events before the repeat were tried as one run,
    // undone when the poisoned one was refused, and written one at a time.
    assert_eq!(server.metric(&bulk_undone("error")).await, 5.0);
    assert_eq!(
        server.metric(BULK_WRITES).await,
        bulk_before,
        "no run written whole"
    );
    assert_eq!(
        server.metric(UNLOCKED_WRITTEN).await,
        unlocked_before + 1.0,
        "the gate's event alone, without a transaction"
    );

    let store = store_of(&server).await;
    let poisoned = store.get_event("evt_poison").await.unwrap().unwrap();
    assert_eq!(poisoned.outcome, "failed");
    assert!(
        poisoned.error.as_deref().unwrap_or("").contains("refused"),
        "{poisoned:?}"
    );
    let reviews = store.list_reviews(true).await.unwrap();
    assert!(
        reviews
            .iter()
            .any(|r| r.event_id.as_deref() == Some("evt_poison") && r.reason == "store_refused"),
        "{reviews:?}"
    );
    assert!(store
        .subscriptions_for_customer("cus_poison")
        .await
        .unwrap()
        .is_empty());
    for i in [0, 1, 2, 4] {
        let records = store
            .subscriptions_for_customer(&format!("cus_batch_{i}"))
            .await
            .unwrap();
        assert_eq!(records.len(), 1, "batch_{i}");
        let stored = store.get_event(&format!("evt_batch_{i}")).await.unwrap();
        assert_eq!(stored.map(|e| e.outcome).as_deref(), Some("applied"));
    }
}

async fn store_of(server: &Server) -> std::sync::Arc<dyn tollgate::store::Store> {
    tollgate::store::connect(&tollgate::store::StoreOptions {
        url: server.db.url.clone(),
        busy_timeout: Duration::from_secs(5),
        max_connections: 1,
        writers: 1,
    })
    .await
    .unwrap()
}

async fn a_batch_that_loses_its_database_answers_503_to_all_and_a_retry_applies_each_once(
    backend: Backend,
) {
    // SQLite loses its database to a full disk; PostgreSQL, to its
    // connection killed while the batch waits on a row lock mid-way.
    let disk = match backend {
        Backend::Sqlite => match Tmpfs::mount("4m") {
            Some(disk) => Some(disk),
            None => return,
        },
        Backend::Postgres => None,
    };
    let db = match &disk {
        Some(disk) => TestDatabase::sqlite_at(&disk.path().join("tollgate.db")),
        None => TestDatabase::create(backend).await,
    };
    let server = Server::start(backend, db).await;
    let t = now();
    server.deliver(&created("gate", "active", t - 60)).await;
    server.deliver(&created("stuck", "active", t - 60)).await;

    let gate = Gate::close(&server, "sub_gate").await;
    // PostgreSQL: a second lock, which the batch meets after writing the
    // rest of its events.
    let stuck = match backend {
        Backend::Postgres => Some(Gate::close(&server, "sub_stuck").await),
        Backend::Sqlite => None,
    };
    let (taken, _) = server.batches().await;
    let mut batch: Vec<Value> = (0..5)
        .map(|i| created(&format!("lost_{i}"), "active", t - 10))
        .collect();
    batch.push(updated("evt_stuck_past_due", "stuck", "past_due", t - 10));
    let gate_event = updated("evt_gate_past_due", "gate", "past_due", t - 20);
    let (gated, queued) = server.queue_behind(&gate, &gate_event, &batch).await;

    let filler = disk.as_ref().map(Tmpfs::fill);
    gate.open().await;
    if backend == Backend::Postgres {
        assert_eq!(gated.await.unwrap().0, 200);
        let mut admin = sqlx::PgConnection::connect(&server.db.url).await.unwrap();
        terminate_tollgate_waiting_on_a_lock(&mut admin).await;
    } else {
        assert_eq!(gated.await.unwrap().0, 503, "the disk is full");
    }
    for (n, answer) in queued.into_iter().enumerate() {
        let (status, body) = answer.await.unwrap();
        assert_eq!(status, 503, "event {n} of the lost batch: {body}");
    }
    assert_eq!(server.batches().await.0, taken + 2.0);
    assert!(server.metric("tollgate_ledger_batches_lost_total").await >= 1.0);

    // The database comes back; Stripe retries each event.
    if let Some(filler) = filler {
        std::fs::remove_file(filler).unwrap();
    }
    if let Some(stuck) = stuck {
        stuck.open().await;
    }
    let store = store_of(&server).await;
    for event in &batch {
        let id = event["id"].as_str().unwrap();
        assert_eq!(
            store.get_event(id).await.unwrap(),
            None,
            "{id} was not stored"
        );
    }
    for event in &batch {
        let id = event["id"].as_str().unwrap();
        let answer = retry_until_stored(&server, event).await;
        assert_eq!(answer["duplicate"], false, "{id}: {answer}");
        assert_eq!(answer["outcome"], "applied", "{id}: {answer}");
        assert_eq!(server.deliver(event).await["duplicate"], true, "{id}");
    }
    let stuck = store.subscriptions_for_customer("cus_stuck").await.unwrap();
    assert_eq!(stuck[0].status.map(|s| s.as_str()), Some("past_due"));
}

/// Delivers `event` until it is answered 200 (a full disk freed may take
/// a moment to be writable again); returns that answer.
async fn retry_until_stored(server: &Server, event: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, answer) = server.post(event).await.unwrap();
        if status == 200 {
            return answer;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(Instant::now() < deadline, "never stored: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_lone_webhook_is_committed_at_once_in_a_batch_of_one(backend: Backend) {
    let server = Server::start(backend, TestDatabase::create(backend).await).await;
    let (taken, written) = server.batches().await;
    let answer = server
        .deliver(&created("alone", "active", now() - 10))
        .await;
    assert_eq!(answer["outcome"], "applied");
    // Nothing else was queued: it was written alone, and committed before
    // the answer. (That no timer is waited on is shown with a paused clock
    // in `ledger::writer`'s unit tests.)
    assert_eq!(server.batches().await, (taken + 1.0, written + 1.0));
    assert_eq!(
        server
            .metric("tollgate_ledger_batch_size_bucket{le=\"1\"}")
            .await,
        taken + 1.0
    );
    let store = store_of(&server).await;
    let stored = store.get_event("evt_alone").await.unwrap();
    assert_eq!(stored.map(|e| e.outcome).as_deref(), Some("applied"));
}

async fn a_lone_webhook_on_a_stored_subscription_is_written_without_a_transaction(
    backend: Backend,
) {
    let server = Server::start(backend, TestDatabase::create(backend).await).await;
    let t = now();
    let counts = || async {
        (
            server.metric(UNLOCKED_WRITTEN).await,
            server.metric(UNLOCKED_PASSED).await,
        )
    };
    // A new subscription: nothing stored to decide on, written as usual.
    let (written, passed) = counts().await;
    server.deliver(&created("solo", "active", t - 60)).await;
    assert_eq!(counts().await, (written, passed + 1.0));

    let past_due = updated("evt_solo_past_due", "solo", "past_due", t - 30);
    let answer = server.deliver(&past_due).await;
    assert_eq!(answer["outcome"], "applied");
    assert_eq!(counts().await, (written + 1.0, passed + 1.0));
    // Older than what is stored: recorded stale, without a transaction too.
    let old = updated("evt_solo_old", "solo", "canceled", t - 45);
    assert_eq!(server.deliver(&old).await["outcome"], "stale");
    assert_eq!(counts().await, (written + 2.0, passed + 1.0));
    // A redelivery: passed on, and answered as the duplicate it is.
    let again = server.deliver(&past_due).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(counts().await, (written + 2.0, passed + 2.0));

    let store = store_of(&server).await;
    let stored = store.subscriptions_for_customer("cus_solo").await.unwrap();
    assert_eq!(
        stored[0].status,
        Some(tollgate::subscription::Status::PastDue)
    );
    for (id, outcome) in [("evt_solo_past_due", "applied"), ("evt_solo_old", "stale")] {
        let event = store.get_event(id).await.unwrap().unwrap();
        assert_eq!((event.id.as_str(), event.outcome.as_str()), (id, outcome));
    }
}

async fn a_lone_webhook_after_another_writer_changed_the_row_is_decided_on_the_stored_row(
    backend: Backend,
) {
    let server = Server::start(backend, TestDatabase::create(backend).await).await;
    let t = now();
    server.deliver(&created("moved", "active", t - 60)).await;
    let first = updated("evt_moved_past_due", "moved", "past_due", t - 50);
    assert_eq!(server.deliver(&first).await["outcome"], "applied");

    // Another writer (a second replica) stores a newer snapshot: the
    // writer's memory of the row is out of date.
    let store = store_of(&server).await;
    let mut tx = store.begin().await.unwrap();
    let mut record = tx
        .lock_subscription("sub_moved", "cus_moved", 1)
        .await
        .unwrap();
    record.status = Some(tollgate::subscription::Status::Canceled);
    record.snapshot_created = t - 40;
    record.snapshot_event_id = "evt_elsewhere".to_owned();
    tx.save_subscription(&record, 1).await.unwrap();
    tx.commit().await.unwrap();

    // Older than what is stored now, newer than what the writer wrote:
    // stale, as the stored row says.
    let (written, passed) = (
        server.metric(UNLOCKED_WRITTEN).await,
        server.metric(UNLOCKED_PASSED).await,
    );
    let between = updated("evt_moved_active", "moved", "active", t - 45);
    assert_eq!(server.deliver(&between).await["outcome"], "stale");
    assert_eq!(server.metric(UNLOCKED_WRITTEN).await, written);
    assert_eq!(server.metric(UNLOCKED_PASSED).await, passed + 1.0);
    let stored = store.subscriptions_for_customer("cus_moved").await.unwrap();
    assert_eq!(
        stored[0].status,
        Some(tollgate::subscription::Status::Canceled)
    );

    // Forgotten once written in a transaction: the next one decides on
    // the stored row again, without a transaction.
    let newer = updated("evt_moved_canceled", "moved", "canceled", t - 30);
    assert_eq!(server.deliver(&newer).await["outcome"], "applied");
    assert_eq!(server.metric(UNLOCKED_WRITTEN).await, written + 1.0);
}

/// Runs `body` on PostgreSQL only (skipped, loudly, without one unless
/// `TOLLGATE_REQUIRE_POSTGRES=1`): several writers are PostgreSQL's.
macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {
        mod postgres_only {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if super::backend_ready(super::Backend::Postgres, stringify!($name)).await {
                        super::$name().await;
                    }
                }
            )*
        }
    };
}

on_postgres!(
    several_writers_apply_overlapping_out_of_order_redelivered_events_once_and_the_newest_wins,
    a_deadlock_between_two_writers_is_transient_and_the_retry_applies,
    a_writer_goes_on_while_a_batch_commits_but_not_with_that_batch_s_customer,
);

/// A commit that hangs: a deferred trigger, run at COMMIT, waits for an
/// advisory lock the test holds whenever the transaction recorded an event
/// whose id starts with `evt_slow`.
const SLOW_COMMIT: &str = "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$; \
     CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON events \
     DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
     WHEN (NEW.id LIKE 'evt_slow%') EXECUTE FUNCTION slow_commit();";

async fn a_writer_goes_on_while_a_batch_commits_but_not_with_that_batch_s_customer() {
    let backend = Backend::Postgres;
    let server = Server::start(backend, TestDatabase::create(backend).await).await;
    let t = now();
    server.sql(SLOW_COMMIT).await;
    let mut holder = sqlx::PgConnection::connect(&server.db.url).await.unwrap();
    holder
        .execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();

    let slow = server.post(&subscription_event(
        "evt_slow_1",
        CREATED,
        t - 30,
        &Sub::new("sub_slow", "cus_slow", "active", now() + DAY),
        Shape::Basil,
    ));
    // Its batch has written and waits in COMMIT.
    server
        .await_metric("tollgate_ledger_batch_size_count", 1.0)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!slow.is_finished(), "the commit is held");

    // Another customer's event is written and committed meanwhile.
    let other = server.post(&created("other", "active", t - 10));
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("another customer's event is not held up by a commit under way")
        .unwrap();
    assert_eq!((status, body["outcome"].clone()), (200, "applied".into()));

    // The slow batch's customer waits for that commit.
    let same = server.post(&updated("evt_same_customer", "slow", "past_due", t - 5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!same.is_finished(), "waits for its customer's commit");
    assert!(!slow.is_finished());

    holder
        .execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    let (status, body) = slow.await.unwrap();
    assert_eq!((status, body["outcome"].clone()), (200, "applied".into()));
    let (status, body) = same.await.unwrap();
    assert_eq!((status, body["outcome"].clone()), (200, "applied".into()));
    let store = store_of(&server).await;
    let records = store.subscriptions_for_customer("cus_slow").await.unwrap();
    assert_eq!(records[0].status.map(|s| s.as_str()), Some("past_due"));
}

fn customer_updated(id: &str, customer: &str, user: &str, at: i64) -> Value {
    let customer = serde_json::json!({
        "id": customer,
        "object": "customer",
        "metadata": { "user_id": user },
    });
    envelope(id, "customer.updated", at, Shape::Basil, customer)
}

/// Four writers, eight customers with three subscriptions each, every
/// event sent at once: each subscription's events newest first and each
/// delivered two or three times. Every delivery is answered 200 (no writer
/// waited on another's rows until it failed), each event is recorded and
/// applied once, and each subscription ends in its newest state.
async fn several_writers_apply_overlapping_out_of_order_redelivered_events_once_and_the_newest_wins(
) {
    let backend = Backend::Postgres;
    let server = Server::with_writers(backend, TestDatabase::create(backend).await, 4).await;
    let t = now();
    const CUSTOMERS: usize = 8;
    const LAST: [&str; 4] = ["active", "canceled", "unpaid", "past_due"];
    // (event, copies to deliver)
    let mut events: Vec<(Value, usize)> = Vec::new();
    // (customer, subscription, newest status, newest event)
    let mut newest = Vec::new();
    for c in 0..CUSTOMERS {
        let customer = format!("cus_w{c}");
        // Canceled first: an `active` event can't revive it, and each time
        // that event's effect is applied it flags a review.
        let dead = Sub::new(
            &format!("sub_w{c}_dead"),
            &customer,
            "canceled",
            now() + DAY,
        );
        let dead_event = subscription_event(
            &format!("evt_w{c}_dead"),
            CREATED,
            t - 200,
            &dead,
            Shape::Basil,
        );
        assert_eq!(server.deliver(&dead_event).await["outcome"], "applied");
        let revive = dead.status("active");
        let kind = "customer.subscription.updated";
        let revive = subscription_event(
            &format!("evt_w{c}_revive"),
            kind,
            t - 5,
            &revive,
            Shape::Basil,
        );
        events.push((revive, 3));
        let link = customer_updated(
            &format!("evt_w{c}_link"),
            &customer,
            &format!("user_w{c}"),
            t - 50,
        );
        events.push((link, 2));
        for k in 0..2 {
            let sub = Sub::new(&format!("sub_w{c}_{k}"), &customer, "trialing", now() + DAY);
            let last = LAST[(c + k) % LAST.len()];
            let statuses = ["trialing", "active", "past_due", last];
            for (j, status) in statuses.into_iter().enumerate().rev() {
                let kind = match (j, status) {
                    (0, _) => CREATED,
                    (_, "canceled") => "customer.subscription.deleted",
                    _ => "customer.subscription.updated",
                };
                let at = t - 100 + 10 * j as i64;
                let id = format!("evt_w{c}_{k}_{j}");
                events.push((
                    subscription_event(&id, kind, at, &sub.status(status), Shape::Basil),
                    2,
                ));
            }
            newest.push((
                customer.clone(),
                sub.id.clone(),
                last,
                format!("evt_w{c}_{k}_3"),
            ));
        }
    }
    let (_, written_before) = server.batches().await;

    // Every copy at once: first copies in the order above, then the others.
    let rounds = events.iter().map(|(_, copies)| *copies).max().unwrap();
    let mut sends = Vec::new();
    for round in 0..rounds {
        for (event, copies) in &events {
            if round < *copies {
                let id = event["id"].as_str().unwrap().to_owned();
                sends.push((id, server.post(event)));
            }
        }
    }
    let deliveries = sends.len();
    let mut first_deliveries = std::collections::BTreeMap::<String, usize>::new();
    for (id, send) in sends {
        let (status, body) = send.await.unwrap();
        assert_eq!(status, 200, "{id}: {body}");
        let counted = first_deliveries.entry(id).or_default();
        if body["duplicate"] == false {
            *counted += 1;
        }
    }
    for (id, firsts) in &first_deliveries {
        assert_eq!(
            *firsts, 1,
            "{id}: one first delivery, the others duplicates"
        );
    }

    let store = store_of(&server).await;
    for (event, _) in &events {
        let id = event["id"].as_str().unwrap();
        assert!(
            store.get_event(id).await.unwrap().is_some(),
            "{id} recorded"
        );
    }
    let reviews = store.list_reviews(false).await.unwrap();
    for c in 0..CUSTOMERS {
        let revive = format!("evt_w{c}_revive");
        let stored = store.get_event(&revive).await.unwrap().unwrap();
        assert_eq!(stored.outcome, "ignored", "{revive}");
        let flagged = reviews
            .iter()
            .filter(|r| r.event_id.as_deref() == Some(revive.as_str()))
            .count();
        assert_eq!(flagged, 1, "one effect of {revive}: {reviews:?}");
        let linked = store
            .subscriptions_for_user(&format!("user_w{c}"))
            .await
            .unwrap();
        assert_eq!(
            linked.len(),
            3,
            "user_w{c} sees its customer's subscriptions"
        );
    }
    for (customer, sub, last, event) in &newest {
        let records = store.subscriptions_for_customer(customer).await.unwrap();
        let record = records.iter().find(|r| &r.id == sub).unwrap();
        assert_eq!(record.status.map(|s| s.as_str()), Some(*last), "{sub}");
        assert_eq!(
            &record.snapshot_event_id, event,
            "{sub}: the newest event wins"
        );
    }

    // Every delivery was a job of some writer, and more than one wrote.
    let (_, written) = server.batches().await;
    assert_eq!(written - written_before, deliveries as f64);
    let writers = server.per_writer("tollgate_ledger_batch_size_count").await;
    assert!(
        writers.iter().filter(|(_, batches)| *batches > 0.0).count() >= 2,
        "{writers:?}"
    );
    assert!(
        writers
            .iter()
            .all(|(w, _)| ["0", "1", "2", "3"].contains(&w.as_str())),
        "{writers:?}"
    );
    assert_eq!(server.metric("tollgate_ledger_queued").await, 0.0);
    assert_eq!(
        server.metric("tollgate_ledger_batches_lost_total").await,
        0.0
    );
}

/// Two writers' transactions that lock two rows in opposite orders (as an
/// entitlement summary and a `product.updated` forgetting the same product
/// maps can): PostgreSQL fails one (40P01), and the store calls that
/// transient, so its webhook is answered 503 and retried, never recorded
/// as failed; the retry applies.
async fn a_deadlock_between_two_writers_is_transient_and_the_retry_applies() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let store = tollgate::store::connect(&tollgate::store::StoreOptions {
        url: db.url.clone(),
        // Longer than PostgreSQL's deadlock_timeout (1 s): the deadlock is
        // found before either wait times out.
        busy_timeout: Duration::from_secs(30),
        max_connections: 2,
        writers: 2,
    })
    .await
    .unwrap();
    let mut first = store.begin().await.unwrap();
    let mut second = store.begin().await.unwrap();
    first
        .forget_product_features("prod_a", 1_000)
        .await
        .unwrap();
    second
        .forget_product_features("prod_b", 1_000)
        .await
        .unwrap();
    // Each then wants the other's row; the one that fails rolls back at
    // once, so the other goes on and commits.
    let crossed = |mut tx: Box<dyn tollgate::store::Tx>, product: &'static str| async move {
        match tx.forget_product_features(product, 2_000).await {
            Ok(()) => tx.commit().await,
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    };
    let a = tokio::spawn(crossed(first, "prod_b"));
    let b = tokio::spawn(crossed(second, "prod_a"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let failed = match (a, b) {
        (Err(e), Ok(())) | (Ok(()), Err(e)) => e,
        other => panic!("one of the two must fail, the other commit: {other:?}"),
    };
    assert!(failed.is_transient(), "{failed:?}");
    let code = match &failed {
        tollgate::store::StoreError::Unavailable(sqlx::Error::Database(db)) => db.code(),
        other => panic!("{other:?}"),
    };
    assert_eq!(code.as_deref(), Some("40P01"), "{failed:?}");
    let mut retry = store.begin().await.unwrap();
    retry
        .forget_product_features("prod_a", 3_000)
        .await
        .unwrap();
    retry
        .forget_product_features("prod_b", 3_000)
        .await
        .unwrap();
    retry.commit().await.unwrap();
}

const BULK_WRITES: &str = "tollgate_ledger_bulk_writes_total";
/// A lone webhook on a stored subscription, written without a transaction.
const UNLOCKED_WRITTEN: &str = "tollgate_ledger_unlocked_writes_total{result=\"written\"}";
/// One that went to the transaction that writes it as usual.
const UNLOCKED_PASSED: &str = "tollgate_ledger_unlocked_writes_total{result=\"passed\"}";

fn bulk_undone(reason: &str) -> String {
    format!("tollgate_ledger_bulk_undone_total{{reason=\"{reason}\"}}")
}

/// What of a stored subscription the events below decide, to compare
/// two stores.
type Decided = (
    Option<&'static str>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    i64,
    String,
);

async fn decided(store: &dyn tollgate::store::Store, customer: &str) -> Vec<Decided> {
    let mut records = store.subscriptions_for_customer(customer).await.unwrap();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    records
        .into_iter()
        .map(|r| {
            (
                r.status.map(|s| s.as_str()),
                r.current_period_end,
                r.paid_through,
                r.user_id,
                r.snapshot_created,
                r.snapshot_event_id,
            )
        })
        .collect()
}

async fn a_run_of_plain_events_is_written_at_once_and_stores_what_one_at_a_time_would(
    backend: Backend,
) {
    let server = Server::start(backend, TestDatabase::create(backend).await).await;
    let t = now();
    server.deliver(&created("gate", "active", t - 60)).await;
    let paid_until = t + 40 * DAY;
    // Events of one subscription chain inside the run: p0 is created and
    // then goes past due, and an older snapshot after both is stale; p1's
    // invoice comes before its subscription.
    let run = vec![
        created("p0", "active", t - 10),
        updated("evt_p0_past_due", "p0", "past_due", t - 5),
        invoice_event(
            "evt_p1_paid",
            "invoice.paid",
            t - 10,
            "sub_p1",
            "cus_p1",
            paid_until,
            Shape::Basil,
        ),
        created("p1", "active", t - 10),
        updated("evt_p0_old", "p0", "canceled", t - 60),
        created("p2", "trialing", t - 10),
    ];
    let gate = Gate::close(&server, "sub_gate").await;
    let (taken, written) = server.batches().await;
    let before = server.metric(BULK_WRITES).await;
    let unlocked_before = server.metric(UNLOCKED_WRITTEN).await;
    let gate_event = updated("evt_gate_past_due", "gate", "past_due", t - 20);
    let (gated, queued) = server.queue_behind(&gate, &gate_event, &run).await;
    gate.open().await;
    assert_eq!(gated.await.unwrap().1["outcome"], "applied");
    let mut outcomes = Vec::new();
    for answer in queued {
        let (status, body) = answer.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["duplicate"], false, "{body}");
        outcomes.push(body["outcome"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        outcomes,
        ["applied", "applied", "applied", "applied", "stale", "applied"]
    );
    assert_eq!(server.batches().await, (taken + 2.0, written + 7.0));
    assert_eq!(server.metric(BULK_WRITES).await, before + 6.0, "one run");
    assert_eq!(
        server.metric(UNLOCKED_WRITTEN).await,
        unlocked_before + 1.0,
        "the gate's event alone, without a transaction"
    );
    assert_eq!(server.metric(&bulk_undone("error")).await, 0.0);

    // The same events, one at a time, on another store.
    let one_by_one = spawn_app_on(backend).await;
    for (event, outcome) in run.iter().zip(&outcomes) {
        assert_eq!(&one_by_one.deliver(event).await, outcome, "{event}");
    }
    let store = store_of(&server).await;
    for customer in ["cus_p0", "cus_p1", "cus_p2"] {
        let bulk = decided(store.as_ref(), customer).await;
        assert_eq!(bulk.len(), 1, "{customer}");
        assert_eq!(
            bulk,
            decided(one_by_one.store.as_ref(), customer).await,
            "{customer}"
        );
    }
    assert_eq!(
        decided(store.as_ref(), "cus_p0").await[0].0,
        Some("past_due")
    );
    assert_eq!(
        decided(store.as_ref(), "cus_p1").await[0].2,
        Some(paid_until)
    );
    for event in &run {
        let id = event["id"].as_str().unwrap();
        let stored = store.get_event(id).await.unwrap().expect(id);
        let alone = one_by_one.store.get_event(id).await.unwrap().expect(id);
        assert_eq!(
            (&stored.outcome, &stored.payload_sha256, &stored.source),
            (&alone.outcome, &alone.payload_sha256, &alone.source),
            "{id}"
        );
    }
    // Redelivered, each is a duplicate with no effect.
    for event in &run {
        assert_eq!(server.deliver(event).await["duplicate"], true);
    }
    assert_eq!(
        decided(store.as_ref(), "cus_p0").await[0].0,
        Some("past_due")
    );
}

async fn a_run_holding_a_redelivery_is_undone_and_written_one_at_a_time(backend: Backend) {
    let server = Server::start(backend, TestDatabase::create(backend).await).await;
    let t = now();
    server.deliver(&created("gate", "active", t - 60)).await;
    // r0 is recorded as canceled; its redelivery in the run below must not
    // apply again over the later change.
    server.deliver(&created("r0", "active", t - 30)).await;
    server
        .deliver(&updated("evt_r0_canceled", "r0", "canceled", t - 20))
        .await;
    let run = vec![
        created("r1", "active", t - 10),
        created("r0", "active", t - 30),
        created("r2", "active", t - 10),
    ];
    let gate = Gate::close(&server, "sub_gate").await;
    let before = server.metric(BULK_WRITES).await;
    let unlocked_before = server.metric(UNLOCKED_WRITTEN).await;
    let gate_event = updated("evt_gate_past_due", "gate", "past_due", t - 20);
    let (gated, queued) = server.queue_behind(&gate, &gate_event, &run).await;
    gate.open().await;
    assert_eq!(gated.await.unwrap().0, 200);
    let mut answers = Vec::new();
    for answer in queued {
        let (status, body) = answer.await.unwrap();
        assert_eq!(status, 200, "{body}");
        answers.push((body["duplicate"].clone(), body["outcome"].clone()));
    }
    let applied = (Value::Bool(false), Value::from("applied"));
    let duplicate = (Value::Bool(true), Value::Null);
    assert_eq!(answers, [applied.clone(), duplicate, applied]);
    assert_eq!(server.metric(&bulk_undone("recorded")).await, 3.0);
    assert_eq!(
        server.metric(BULK_WRITES).await,
        before,
        "no run written whole"
    );
    assert_eq!(
        server.metric(UNLOCKED_WRITTEN).await,
        unlocked_before + 1.0,
        "the gate's event alone, without a transaction"
    );

    let store = store_of(&server).await;
    assert_eq!(
        decided(store.as_ref(), "cus_r0").await[0].0,
        Some("canceled")
    );
    for customer in ["cus_r1", "cus_r2"] {
        assert_eq!(decided(store.as_ref(), customer).await[0].0, Some("active"));
    }
}

async fn events_the_reconciler_finds_are_written_in_runs_and_each_change_announced(
    backend: Backend,
) {
    let t = now();
    let missed: Vec<Value> = (0..30)
        .map(|i| {
            let mut sub = Sub::new(
                &format!("sub_found_{i}"),
                &format!("cus_found_{i}"),
                "active",
                t + DAY,
            );
            sub.user_id = Some(format!("user_found_{i}"));
            subscription_event(
                &format!("evt_found_{i}"),
                CREATED,
                t - 100 + i,
                &sub,
                Shape::Basil,
            )
        })
        .collect();
    let db = TestDatabase::create(backend).await;
    let server = Server::listing(backend, db, 1, missed.clone()).await;
    let store = store_of(&server).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut stored = 0;
        for event in &missed {
            let id = event["id"].as_str().unwrap();
            stored += usize::from(store.get_event(id).await.unwrap().is_some());
        }
        if stored == missed.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {} found",
            missed.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A page's events are queued together: most are written in runs.
    let bulk = server.metric(BULK_WRITES).await;
    assert!(bulk >= 2.0, "written in runs: {bulk}");
    for event in &missed {
        let id = event["id"].as_str().unwrap();
        let stored = store.get_event(id).await.unwrap().unwrap();
        assert_eq!(
            (stored.outcome.as_str(), stored.source.as_str()),
            ("applied", "reconciler")
        );
    }
    // Each found subscription restores its customer's access: announced
    // once each, as one at a time would.
    let notes = store.list_notifications(0, 1000, true).await.unwrap();
    for i in 0..30 {
        let of: Vec<_> = notes
            .iter()
            .filter(|n| n.customer_id == format!("cus_found_{i}"))
            .map(|n| (n.kind.as_str(), n.user_id.as_str(), n.new_access))
            .collect();
        let user = format!("user_found_{i}");
        assert_eq!(
            of,
            [("ACCESS_RESTORED", user.as_str(), true)],
            "cus_found_{i}"
        );
    }
    assert_eq!(notes.len(), 30);
}

//! Crash consistency of the webhook path: SIGKILL the real binary again and
//! again while eight senders post signed events and redeliveries, restart it
//! on the same database each time, and check that no acknowledged event was
//! lost, none was recorded twice, and every subscription ends where the
//! documented ordering rule says it must.
//!
//! The event set and the delivery order come from a seed, printed at the
//! start; `TOLLGATE_CRASH_SEED=<n>` replays one (kill timing still varies).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tollgate::proto::HasAccessResponse;
use tollgate::store::{EventRow, StoreOptions};
use tollgate::subscription::{
    apply_snapshot, Authority, Item, Stamp, Status, SubscriptionRecord, SubscriptionSnapshot,
    Transition,
};

use crate::fake_stripe::FakeStripe;
use crate::helpers::{now, Backend, ServerProcess, TestDatabase, SECRET};
use crate::on_both_backends;
use crate::stripe::{subscription_event, Shape, Sub};

on_both_backends!(kill_9_under_webhook_load_loses_and_doubles_nothing);

const SUBSCRIPTIONS: usize = 24;
const KILLS: usize = 12;
const SENDERS: usize = 8;
/// Share of sends that redeliver an event already sent at least once.
const REDELIVERY_PERCENT: u64 = 35;
/// Load between a restart and the next kill, in milliseconds.
const LOAD_WINDOW_MS: (u64, u64) = (50, 400);

/// xorshift64*: tiny, seedable, and good enough to shuffle test inputs.
struct Rng(u64);

impl Rng {
    /// Scrambles the seed (splitmix64) so that nearby seeds diverge.
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // A zero state would stay zero.
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next() as usize % items.len()]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.next() as usize % (i + 1));
        }
    }
}

fn seed() -> u64 {
    match std::env::var("TOLLGATE_CRASH_SEED") {
        Ok(s) => s.parse().expect("TOLLGATE_CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// One generated snapshot event, with what the test needs to predict it.
struct Generated {
    id: String,
    sub: usize,
    created: i64,
    status: Status,
    period_end: i64,
    body: Vec<u8>,
}

fn sub_id(i: usize) -> String {
    format!("sub_crash_{i:02}")
}

fn customer_id(i: usize) -> String {
    format!("cus_crash_{i:02}")
}

/// Moves Stripe can make from `from`, short of canceling.
fn next_statuses(from: Status) -> &'static [Status] {
    use Status::*;
    match from {
        Incomplete => &[Active],
        Trialing => &[Active, Paused, PastDue],
        Paused => &[Active],
        Active => &[Active, PastDue],
        PastDue => &[Active, Unpaid],
        Unpaid => &[Active],
        Canceled | IncompleteExpired => &[],
    }
}

/// Each subscription lives 4 to 6 snapshots along `Status::can_become`,
/// about half of them ending canceled; a quarter of the steps share the previous
/// step's second, so same-second ties are decided by status rank.
fn lifecycles(rng: &mut Rng) -> Vec<Generated> {
    let base = now() - 600;
    let month = 30 * 86_400;
    let mut events = Vec::new();
    for i in 0..SUBSCRIPTIONS {
        let steps = rng.range(4, 6) as usize;
        let mut status = rng.pick(&[
            Status::Trialing,
            Status::Trialing,
            Status::Active,
            Status::Incomplete,
        ]);
        let mut created = base + rng.range(0, 60) as i64;
        let mut period_end = now() + month;
        for step in 0..steps {
            if step > 0 {
                let last = step + 1 == steps;
                let next = if last && rng.percent(50) {
                    Status::Canceled
                } else {
                    rng.pick(next_statuses(status))
                };
                assert!(status.can_become(next), "BUG: {status} -> {next}");
                // Becoming active again is a renewal: a new period.
                if next == Status::Active && status != Status::Trialing {
                    period_end += month;
                }
                status = next;
                if !rng.percent(25) {
                    created += rng.range(1, 30) as i64;
                }
            }
            let event_type = match (step, status) {
                (0, _) => "customer.subscription.created",
                (_, Status::Canceled) => "customer.subscription.deleted",
                (_, Status::Paused) => "customer.subscription.paused",
                _ => "customer.subscription.updated",
            };
            let id = format!("evt_{:016x}", rng.next());
            let mut sub = Sub::new(&sub_id(i), &customer_id(i), status.as_str(), period_end);
            if status == Status::Trialing {
                sub.trial_end = Some(period_end);
            }
            let body = serde_json::to_vec(&subscription_event(
                &id,
                event_type,
                created,
                &sub,
                Shape::Basil,
            ))
            .unwrap();
            events.push(Generated {
                id,
                sub: i,
                created,
                status,
                period_end,
                body,
            });
        }
    }
    events
}

/// What the documented rule makes of subscription `i`: every event folded
/// through the pure state machine in ordering-key order.
fn expected_record(events: &[Generated], i: usize) -> SubscriptionRecord {
    let mut mine: Vec<&Generated> = events.iter().filter(|e| e.sub == i).collect();
    mine.sort_by(|a, b| {
        (a.created, a.status.rank(), a.period_end, &a.id).cmp(&(
            b.created,
            b.status.rank(),
            b.period_end,
            &b.id,
        ))
    });
    let mut record: Option<SubscriptionRecord> = None;
    for e in &mine {
        let snap = SubscriptionSnapshot {
            id: sub_id(i),
            customer_id: customer_id(i),
            status: e.status,
            current_period_end: e.period_end,
            trial_end: (e.status == Status::Trialing).then_some(e.period_end),
            cancel_at_period_end: false,
            cancel_at: None,
            pause: None,
            items: vec![Item {
                price_id: "price_prod_basic".into(),
                product_id: Some("prod_basic".into()),
                lookup_key: None,
            }],
            user_id: None,
        };
        let stamp = Stamp {
            created: e.created,
            event_id: e.id.clone(),
        };
        match apply_snapshot(record.as_ref(), &snap, &stamp, Authority::Event) {
            Transition::Apply { record: r, .. } => record = Some(*r),
            // Each event's key is greater than the last one's and every
            // lifecycle step is one Stripe can make, so each must apply.
            other => panic!(
                "the state machine disagrees with the documented ordering: {} on {} \
                 (next by key) gave {other:?}",
                e.id,
                sub_id(i)
            ),
        }
    }
    record.expect("BUG: every subscription has events")
}

/// What one POST came back with.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    /// 200, `duplicate: false`: this delivery recorded the event.
    First,
    /// 200, `duplicate: true`.
    Duplicate,
    /// 200 whose body was cut off: acknowledged, flag unknown.
    AckedUnread,
    /// No connection: the server was down.
    Refused,
    /// Sent, but the connection died before an answer: a kill cut it.
    Cut(String),
    /// Any other status, e.g. 503.
    Status(u16, String),
}

impl Reply {
    fn acknowledged(&self) -> bool {
        matches!(self, Reply::First | Reply::Duplicate | Reply::AckedUnread)
    }
}

/// One delivery attempt, stamped from one global counter so that "answered
/// before that one was sent" is exact even across senders.
#[derive(Debug, Clone)]
struct Attempt {
    sent: u64,
    answered: u64,
    reply: Reply,
}

/// State shared by the senders and the killer.
struct Load {
    events: Vec<Generated>,
    /// Where the current server listens; replaced on every restart.
    url: RwLock<String>,
    http: reqwest::Client,
    clock: AtomicU64,
    in_flight: AtomicUsize,
    /// First sends of an event on the wire: where a kill matters most.
    first_sends_in_flight: AtomicUsize,
    stop: AtomicBool,
    queue: Mutex<Queue>,
    /// Every attempt, by event index.
    log: Mutex<Vec<Vec<Attempt>>>,
}

struct Queue {
    rng: Rng,
    /// Released for a first send, in shuffled order, not yet sent.
    fresh: Vec<usize>,
    /// Sent at least once: candidates for redelivery.
    sent: Vec<usize>,
}

impl Load {
    /// Makes `events` available for their first send.
    fn release(&self, events: Vec<usize>) {
        self.queue.lock().unwrap().fresh.extend(events);
    }

    /// Events with an acknowledgement answered before tick `tick`.
    fn acknowledged_before(&self, tick: u64) -> Vec<usize> {
        let log = self.log.lock().unwrap();
        (0..log.len())
            .filter(|&i| {
                log[i]
                    .iter()
                    .any(|a| a.reply.acknowledged() && a.answered < tick)
            })
            .collect()
    }

    /// Whether every event released so far went out at least once.
    fn all_sent(&self) -> bool {
        self.queue.lock().unwrap().fresh.is_empty()
    }

    /// The next event to send, and whether it is its first send.
    fn next_event(&self) -> Option<(usize, bool)> {
        let mut guard = self.queue.lock().unwrap();
        let q = &mut *guard;
        let redeliver =
            !q.sent.is_empty() && (q.fresh.is_empty() || q.rng.percent(REDELIVERY_PERCENT));
        if redeliver {
            return Some((q.rng.pick(&q.sent), false));
        }
        let i = q.fresh.pop()?;
        q.sent.push(i);
        Some((i, true))
    }

    /// POSTs event `i` to the current server, signed now, and logs the reply.
    async fn deliver(&self, i: usize, first_send: bool) -> Reply {
        let url = self.url.read().unwrap().clone();
        let body = self.events[i].body.clone();
        let header = tollgate::signature::header_for(SECRET, now(), &body);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if first_send {
            self.first_sends_in_flight.fetch_add(1, Ordering::SeqCst);
        }
        let sent = self.clock.fetch_add(1, Ordering::SeqCst);
        let result = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("Stripe-Signature", header)
            .body(body)
            .send()
            .await;
        let reply = match result {
            Err(e) if e.is_connect() => Reply::Refused,
            Err(e) => Reply::Cut(e.to_string()),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await;
                match (status, text) {
                    (200, Ok(text)) => {
                        match serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|v| v["duplicate"].as_bool())
                        {
                            Some(false) => Reply::First,
                            Some(true) => Reply::Duplicate,
                            None => panic!("a 200 without a duplicate flag: {text}"),
                        }
                    }
                    (200, Err(_)) => Reply::AckedUnread,
                    (status, text) => Reply::Status(status, text.unwrap_or_default()),
                }
            }
        };
        let answered = self.clock.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if first_send {
            self.first_sends_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.log.lock().unwrap()[i].push(Attempt {
            sent,
            answered,
            reply: reply.clone(),
        });
        reply
    }

    /// Redelivers event `i` until the server acknowledges it.
    async fn settle(&self, i: usize, seed: u64) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.deliver(i, false).await;
            if reply.acknowledged() {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "seed={seed}: {} never acknowledged after the last restart: {reply:?}",
                self.events[i].id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sender(self: Arc<Self>) {
        while !self.stop.load(Ordering::SeqCst) {
            let Some((i, first_send)) = self.next_event() else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            if !self.deliver(i, first_send).await.acknowledged() {
                // Down or restarting: do not spin on a closed port.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn start_server(db: &TestDatabase, stripe: &FakeStripe) -> ServerProcess {
    // Records stay fresh for the whole run, so HasAccess never asks Stripe.
    let env = [
        ("TOLLGATE_RECONCILE_INTERVAL", "1h"),
        ("TOLLGATE_STALE_AFTER", "1h"),
    ];
    ServerProcess::start(&db.url, &stripe.base_url(), &env).await
}

fn webhook_url(server: &ServerProcess) -> String {
    format!("http://{}/webhooks/stripe", server.http_addr)
}

async fn kill_9_under_webhook_load_loses_and_doubles_nothing(backend: Backend) {
    let started = Instant::now();
    let name = format!("{backend:?}").to_lowercase();
    let seed = seed();
    eprintln!("crash test {name}: seed={seed} (replay with TOLLGATE_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let events = lifecycles(&mut rng);
    let total = events.len();
    // Computed first: a state machine at odds with the rule fails here.
    let expected: Vec<SubscriptionRecord> = (0..SUBSCRIPTIONS)
        .map(|i| expected_record(&events, i))
        .collect();
    let mut order: Vec<usize> = (0..total).collect();
    rng.shuffle(&mut order);
    // A slice of new events per load window, so first deliveries span
    // every kill.
    let mut releases: Vec<Vec<usize>> = order
        .chunks(total.div_ceil(KILLS + 1))
        .map(<[usize]>::to_vec)
        .collect();
    releases.reverse();

    let db = TestDatabase::create(backend).await;
    // Knows no subscriptions: a follow-up re-read finds nothing to apply.
    let stripe = FakeStripe::start().await;
    let mut server = start_server(&db, &stripe).await;
    // The test's own view of the database, for checks between a kill and
    // the restart (the server has applied the migrations).
    let store = tollgate::store::connect(&StoreOptions {
        url: db.url.clone(),
        busy_timeout: Duration::from_secs(5),
        max_connections: 2,
        writers: 1,
    })
    .await
    .expect("store opens");
    let load = Arc::new(Load {
        events,
        url: RwLock::new(webhook_url(&server)),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap(),
        clock: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        first_sends_in_flight: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        queue: Mutex::new(Queue {
            rng: Rng::new(rng.next()),
            fresh: Vec::new(),
            sent: Vec::new(),
        }),
        log: Mutex::new(vec![Vec::new(); total]),
    });
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| tokio::spawn(load.clone().sender()))
        .collect();

    let mut audit = Audit::default();
    for kill in 1..=KILLS {
        // Half the window's new events go out at once, among the
        // redeliveries; the other half just before the kill, which then
        // lands on first deliveries somewhere between sent, committed and
        // answered.
        let mut batch = releases.pop().unwrap_or_default();
        let late = batch.split_off(batch.len() / 2);
        load.release(batch);
        let window = rng.range(LOAD_WINDOW_MS.0, LOAD_WINDOW_MS.1);
        tokio::time::sleep(Duration::from_millis(window)).await;
        load.release(late);
        // Until a first delivery is out, or every one of this window went
        // out already: on a loaded machine this task can run too late to
        // see one in flight, and the kill then lands among redeliveries.
        let deadline = Instant::now() + Duration::from_secs(5);
        while load.first_sends_in_flight.load(Ordering::SeqCst) == 0 && !load.all_sent() {
            assert!(
                Instant::now() < deadline,
                "seed={seed}: no first delivery went out"
            );
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_micros(rng.range(0, 3000))).await;
        audit.in_flight_at_kills += load.in_flight.load(Ordering::SeqCst);
        audit.first_sends_at_kills += load.first_sends_in_flight.load(Ordering::SeqCst);
        server.kill().await;
        audit.kills += 1;
        // 1. While it is down: what it acknowledged before dying is stored.
        let killed_at = load.clock.fetch_add(1, Ordering::SeqCst);
        for i in load.acknowledged_before(killed_at) {
            let id = &load.events[i].id;
            audit.checked_at_kills += 1;
            if store.get_event(id).await.expect("get_event").is_none() {
                audit.lose(
                    id,
                    format!("acknowledged, then not stored after kill {kill}"),
                );
            }
        }
        server = start_server(&db, &stripe).await;
        *load.url.write().unwrap() = webhook_url(&server);
    }
    for batch in releases.drain(..) {
        load.release(batch);
    }
    let window = rng.range(LOAD_WINDOW_MS.0, LOAD_WINDOW_MS.1);
    tokio::time::sleep(Duration::from_millis(window)).await;
    load.stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.expect("sender task");
    }

    // Settle: redeliver every event, as Stripe would, until acknowledged.
    // Then once more: each is recorded now, so anything but a duplicate
    // shows up below as a loss.
    for _ in 0..2 {
        for i in 0..total {
            load.settle(i, seed).await;
        }
    }

    // 1 and 2: every delivery, in the order the senders saw them.
    let log = load.log.lock().unwrap().clone();
    for (i, attempts) in log.iter().enumerate() {
        let stored = store
            .get_event(&load.events[i].id)
            .await
            .expect("get_event");
        audit.deliveries(&load.events[i].id, attempts, stored);
    }
    // 3. Each subscription ends where the ordering rule puts it, in the
    // store and in HasAccess.
    let mut grpc = server.entitlements().await;
    for (i, expected) in expected.iter().enumerate() {
        let records = store
            .subscriptions_for_customer(&customer_id(i))
            .await
            .expect("subscriptions_for_customer");
        let answer = grpc
            .has_access(tollgate::proto::HasAccessRequest {
                customer_id: customer_id(i),
                ..Default::default()
            })
            .await
            .expect("has_access")
            .into_inner();
        audit.subscription(i, expected, &records, &answer);
    }
    server.kill().await;

    eprintln!(
        "crash test {name} seed={seed}: {} elapsed={:.1}s",
        audit.summary(total),
        started.elapsed().as_secs_f64()
    );
    audit.assert_clean(seed, total);
}

/// What the run found, counted for the summary and listed for failures.
#[derive(Default)]
struct Audit {
    kills: usize,
    in_flight_at_kills: usize,
    first_sends_at_kills: usize,
    /// Acknowledged events looked up between a kill and its restart.
    checked_at_kills: usize,
    counts: Counts,
    /// Acknowledged events whose record vanished, by id, with how it showed.
    lost: BTreeMap<String, String>,
    /// Events with more than one `duplicate: false` answer.
    doubled: Vec<String>,
    /// Events stored with an outcome other than applied or stale.
    bad_outcome: Vec<String>,
    /// Subscriptions not where the ordering rule puts them.
    wrong_state: Vec<String>,
}

impl Audit {
    fn lose(&mut self, id: &str, why: String) {
        self.lost.entry(id.to_owned()).or_insert(why);
    }

    /// Checks one event's deliveries against its stored row.
    fn deliveries(&mut self, id: &str, attempts: &[Attempt], stored: Option<EventRow>) {
        self.counts.tally(attempts);
        let acked = attempts.iter().any(|a| a.reply.acknowledged());
        match stored {
            Some(row) => {
                self.counts.stored += 1;
                if !["applied", "stale"].contains(&row.outcome.as_str()) {
                    self.bad_outcome
                        .push(format!("{id}: {} ({:?})", row.outcome, row.error));
                }
            }
            None if acked => self.lose(id, "acknowledged, not stored at the end".into()),
            None => {}
        }
        // An acknowledgement received before a delivery was sent makes that
        // delivery a duplicate; a first delivery after it means the
        // acknowledged record vanished in between.
        for f in attempts.iter().filter(|a| a.reply == Reply::First) {
            if let Some(a) = attempts
                .iter()
                .find(|a| a.reply.acknowledged() && a.answered < f.sent)
            {
                let why = format!(
                    "acknowledged ({:?} answered at tick {}), then recorded again by a \
                     delivery sent at tick {}",
                    a.reply, a.answered, f.sent
                );
                self.lose(id, why);
            }
        }
        let firsts = attempts.iter().filter(|a| a.reply == Reply::First).count();
        if firsts > 1 {
            self.doubled
                .push(format!("{id}: {firsts} first deliveries"));
        }
    }

    /// Compares subscription `i`'s stored record and HasAccess answer with
    /// the expected record.
    fn subscription(
        &mut self,
        i: usize,
        expected: &SubscriptionRecord,
        records: &[SubscriptionRecord],
        answer: &HasAccessResponse,
    ) {
        let status = expected
            .status
            .expect("BUG: folded records have a status")
            .as_str();
        let key = |r: &SubscriptionRecord| {
            (
                r.status.map(Status::as_str),
                r.current_period_end,
                r.snapshot_event_id.clone(),
            )
        };
        let want = key(expected);
        if records.iter().map(key).collect::<Vec<_>>() != [want.clone()] {
            self.wrong_state.push(format!(
                "{}: stored {:?}, expected {want:?}",
                sub_id(i),
                records.iter().map(key).collect::<Vec<_>>()
            ));
        }
        let said = (
            answer.subscription_id.as_str(),
            answer.status.as_str(),
            Some(answer.current_period_end),
        );
        if said != (sub_id(i).as_str(), status, expected.current_period_end) {
            self.wrong_state.push(format!(
                "{}: HasAccess says {said:?}, expected ({status}, {:?})",
                sub_id(i),
                expected.current_period_end
            ));
        }
    }

    fn summary(&self, total: usize) -> String {
        let c = &self.counts;
        format!(
            "kills={} events={total} acknowledged={} stored={} lost={} doubled={} \
             first_deliveries={} duplicates={} errors_during_kills={} (refused={} cut={} \
             status={}) committed_unanswered={} checked_at_kills={} in_flight_at_kills={} \
             first_sends_at_kills={} wrong_state={}",
            self.kills,
            c.acknowledged,
            c.stored,
            self.lost.len(),
            self.doubled.len(),
            c.first,
            c.duplicate,
            c.refused + c.cut + c.status,
            c.refused,
            c.cut,
            c.status,
            c.committed_unanswered,
            self.checked_at_kills,
            self.in_flight_at_kills,
            self.first_sends_at_kills,
            self.wrong_state.len(),
        )
    }

    fn assert_clean(&self, seed: u64, total: usize) {
        let lost: Vec<String> = self
            .lost
            .iter()
            .map(|(id, why)| format!("{id}: {why}"))
            .collect();
        assert!(
            lost.is_empty(),
            "seed={seed}: acknowledged events lost:\n{}",
            lost.join("\n")
        );
        assert!(
            self.doubled.is_empty(),
            "seed={seed}: events recorded twice:\n{}",
            self.doubled.join("\n")
        );
        assert!(
            self.wrong_state.is_empty(),
            "seed={seed}: subscriptions not where the ordering rule puts them:\n{}",
            self.wrong_state.join("\n")
        );
        assert!(
            self.bad_outcome.is_empty(),
            "seed={seed}: events stored neither applied nor stale:\n{}",
            self.bad_outcome.join("\n")
        );
        let c = &self.counts;
        assert_eq!(c.acknowledged, total, "seed={seed}: settled");
        assert_eq!(c.stored, total, "seed={seed}: every event stored");
        assert_eq!(
            c.first + c.committed_unanswered,
            total,
            "seed={seed}: each event recorded by one delivery, answered or cut"
        );
        assert_eq!(self.kills, KILLS, "seed={seed}");
        // The run tested what it claims: kills cut requests mid-flight.
        assert!(
            c.cut > 0,
            "seed={seed}: no kill landed on a request in flight"
        );
    }
}

/// Totals over every attempt, for the one-line summary.
#[derive(Default)]
struct Counts {
    acknowledged: usize,
    stored: usize,
    first: usize,
    duplicate: usize,
    refused: usize,
    cut: usize,
    status: usize,
    /// Events never answered `duplicate: false`: the delivery that recorded
    /// each was cut by a kill after its commit, and redeliveries found it.
    committed_unanswered: usize,
}

impl Counts {
    fn tally(&mut self, attempts: &[Attempt]) {
        let mut firsts = 0;
        for a in attempts {
            match a.reply {
                Reply::First => firsts += 1,
                Reply::Duplicate => self.duplicate += 1,
                Reply::AckedUnread => {}
                Reply::Refused => self.refused += 1,
                Reply::Cut(_) => self.cut += 1,
                Reply::Status(..) => self.status += 1,
            }
        }
        self.first += firsts;
        if attempts.iter().any(|a| a.reply.acknowledged()) {
            self.acknowledged += 1;
            if firsts == 0 {
                self.committed_unanswered += 1;
            }
        }
    }
}

//! Reads the object a thin event points at (`related_object`) from
//! Stripe's API, before the ledger records the event.
//!
//! Reads of one object are shared, but only safely: a caller joins a read
//! that has not been sent yet, never one already on its way, because a
//! read sent before an event arrived may predate the change the event
//! reports. A caller that finds a read in flight queues one more read,
//! sent when the first one ends, and everyone arriving meanwhile shares
//! it. So each object has at most one read in flight and one waiting,
//! however many events arrive for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use serde_json::Value;

use crate::clock::Clock;
use crate::event::Related;
use crate::stripe::{NotConfigured, StripeClient, StripeError};

/// What Stripe returned, and when it was asked (unix seconds): the read
/// orders like any API read.
#[derive(Debug, Clone)]
pub struct Read {
    pub object: Arc<Value>,
    pub read_at: i64,
}

/// Why a related object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadFailure {
    /// Worth retrying: Stripe unreachable, rate limited, a 5xx, or no
    /// answer within the time bound. The event must not be recorded.
    #[error("{0}")]
    Transient(String),
    /// Asking again won't help until something changes (an API key, the
    /// object): the event is recorded as failed and can be replayed.
    #[error("{0}")]
    Permanent(String),
}

type SharedRead = Shared<BoxFuture<'static, Result<Read, ReadFailure>>>;

/// One read of one object: shared by everyone who joined before it was
/// sent.
#[derive(Clone)]
struct Flight {
    read: SharedRead,
    /// Set just before the request goes out; from then on, newcomers queue
    /// a later read instead of joining this one.
    sent: Arc<AtomicBool>,
}

pub struct RelatedReader {
    client: Option<Arc<StripeClient>>,
    clock: Arc<dyn Clock>,
    /// How long an event waits for its object before Stripe is told to
    /// retry (503). Stripe gives up on a delivery after some seconds, so
    /// this stays well under that.
    timeout: Duration,
    /// The newest flight per object, by `type:id`.
    /// Reads run as their own tasks, so one whose callers gave up still
    /// ends and frees its entry. They write nothing, so shutdown need not
    /// wait for them.
    flights: Mutex<HashMap<String, Flight>>,
}

impl RelatedReader {
    pub fn new(
        client: Option<Arc<StripeClient>>,
        clock: Arc<dyn Clock>,
        timeout: Duration,
    ) -> Self {
        RelatedReader {
            client,
            clock,
            timeout,
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Reads `related` from Stripe, with a read sent after this call began.
    pub async fn read(self: &Arc<Self>, related: &Related) -> Result<Read, ReadFailure> {
        let Some(client) = self.client.clone() else {
            return Err(ReadFailure::Permanent(format!(
                "thin event: {NotConfigured}, then replay the event"
            )));
        };
        let flight = self.join_or_queue(client, related);
        match tokio::time::timeout(self.timeout, flight).await {
            Ok(result) => result,
            Err(_) => Err(ReadFailure::Transient(format!(
                "no answer from Stripe within {} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    /// Lists `customer`'s active entitlements (lookup keys), and when the
    /// listing began (unix ms), within the same time bound as a read. Not
    /// shared: only a summary event cut short needs it.
    pub async fn active_entitlements(
        &self,
        customer: &str,
    ) -> Result<(Vec<String>, i64), ReadFailure> {
        let Some(client) = self.client.as_ref() else {
            return Err(ReadFailure::Permanent(NotConfigured.to_string()));
        };
        let read_at_ms = self.clock.now_ms();
        match tokio::time::timeout(self.timeout, client.active_entitlements(customer)).await {
            Ok(Ok(keys)) => Ok((keys, read_at_ms)),
            Ok(Err(e)) if e.is_transient() => Err(ReadFailure::Transient(e.to_string())),
            Ok(Err(e)) => Err(ReadFailure::Permanent(e.to_string())),
            Err(_) => Err(ReadFailure::Transient(format!(
                "no answer from Stripe within {} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    fn join_or_queue(self: &Arc<Self>, client: Arc<StripeClient>, related: &Related) -> SharedRead {
        let key = format!("{}:{}", related.object_type, related.id);
        let mut flights = self.flights.lock().expect("BUG: flight map poisoned");
        let previous = match flights.get(&key) {
            Some(f) if !f.sent.load(Ordering::SeqCst) => return f.read.clone(),
            Some(f) => Some(f.read.clone()),
            None => None,
        };
        let sent = Arc::new(AtomicBool::new(false));
        let guard = FlightKey {
            reader: self.clone(),
            key: key.clone(),
            sent: sent.clone(),
        };
        let (object_type, id) = (related.object_type.clone(), related.id.clone());
        let clock = self.clock.clone();
        let task = tokio::spawn(async move {
            // Ends the entry however the read ends, a panic included.
            let guard = guard;
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            guard.sent.store(true, Ordering::SeqCst);
            let read_at = clock.now_secs();
            let result = client.object(&object_type, &id).await;
            drop(guard);
            match result {
                Ok(object) => Ok(Read {
                    object: Arc::new(object),
                    read_at,
                }),
                Err(e) => Err(failure(&object_type, &id, e)),
            }
        });
        let read = async move {
            task.await.unwrap_or_else(|e| {
                let cause = if e.is_panic() {
                    crate::tasks::panic_message(e.into_panic().as_ref())
                } else {
                    "cancelled".to_owned()
                };
                tracing::error!(cause, "related object read failed");
                Err(ReadFailure::Transient("internal error".to_owned()))
            })
        }
        .boxed()
        .shared();
        flights.insert(
            key,
            Flight {
                read: read.clone(),
                sent,
            },
        );
        read
    }
}

/// Removes its flight from the map when the read ends, unless a newer
/// flight has taken the key.
struct FlightKey {
    reader: Arc<RelatedReader>,
    key: String,
    sent: Arc<AtomicBool>,
}

impl Drop for FlightKey {
    fn drop(&mut self) {
        // Marked sent so that a panic before the send can't leave a flight
        // that newcomers would join forever.
        self.sent.store(true, Ordering::SeqCst);
        let mut flights = match self.reader.flights.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        if flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(&f.sent, &self.sent))
        {
            flights.remove(&self.key);
        }
    }
}

fn failure(object_type: &str, id: &str, e: StripeError) -> ReadFailure {
    tracing::warn!(object_type, id, error = %e, "reading a thin event's object failed");
    let what = format!("reading {object_type} {id} from Stripe: {e}");
    if e.is_transient() {
        ReadFailure::Transient(what)
    } else {
        ReadFailure::Permanent(what)
    }
}

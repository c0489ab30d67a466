//! Background tasks that outlive a panic, and panics that never reach a
//! client as a reset stream.
//!
//! [`supervise`] runs a loop (reconciler, dispatcher, invalidation
//! listener) as its own task: when it panics the cause is logged, counted in
//! `tollgate_task_restarts_total{task}`, and the loop is started again after
//! a backoff. [`panic_message`] turns a panic payload into text for logs.

use std::any::Any;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// First restart delay after a panic; doubles per consecutive panic.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long without a panic resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The text of a panic payload (`panic!("...")` carries a `&str` or a
/// `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// Runs `start()` as a task inside a `task` span until it returns or `stop`
/// is cancelled, restarting it with backoff whenever it panics.
pub async fn supervise<F, Fut>(name: &'static str, stop: CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let span = tracing::info_span!("task", task = name);
        let outcome = tokio::spawn(start().instrument(span)).await;
        let cause = match outcome {
            Ok(()) => return,
            Err(e) if e.is_panic() => panic_message(e.into_panic().as_ref()),
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        };
        metrics::counter!(crate::metrics::TASK_RESTARTS, "task" => name).increment(1);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!(
            task = name,
            cause,
            restart_in_ms = backoff.as_millis() as u64,
            "background task panicked; restarting"
        );
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_is_started_again_and_may_then_finish() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let stop = CancellationToken::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            supervise("test", stop, move || {
                let counted = counted.clone();
                async move {
                    if counted.fetch_add(1, Ordering::SeqCst) < 2 {
                        panic!("boom");
                    }
                }
            }),
        )
        .await
        .expect("the third run finishes");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stopping_ends_the_wait_before_a_restart() {
        let stop = CancellationToken::new();
        stop.cancel();
        tokio::time::timeout(
            Duration::from_secs(1),
            supervise("test", stop, || async { panic!("always") }),
        )
        .await
        .expect("returns once stopped");
    }

    #[test]
    fn panic_payloads_become_text() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42u8), "panic with a non-text payload");
    }
}

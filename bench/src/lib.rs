#![recursion_limit = "256"]
//! Shared pieces of the benchmark binaries: tags on JSON result lines,
//! latency summaries, a tiny PRNG, a pacer for rate-limited load and the
//! Stripe event builders used by `webhook-load` and the micro-benchmarks.

pub mod markdown;
pub mod stripe;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

/// Unix seconds now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix nanoseconds now.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Parses `--tags "section=h2load,backend=sqlite,run=2"` into a JSON object.
/// Values that parse as integers become numbers.
pub fn parse_tags(tags: &str) -> Map<String, Value> {
    let mut map = Map::new();
    for part in tags.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let value = match v.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::from(v),
        };
        map.insert(k.trim().to_owned(), value);
    }
    map
}

/// Prints one JSON result line: the tags, then `fields`.
pub fn emit(tags: &str, fields: Value) {
    let mut out = parse_tags(tags);
    if let Value::Object(f) = fields {
        out.extend(f);
    }
    println!("{}", Value::Object(out));
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Records `d` (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, 60_000_000);
    h.saturating_record(us);
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `count`, `seconds`, `rps` and latency percentiles in milliseconds.
pub fn summary(h: &Histogram<u64>, seconds: f64) -> Value {
    let count = h.len();
    let rps = if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    };
    serde_json::json!({
        "count": count,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "rps": rps.round(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

/// splitmix64: fast, seedable, good enough to pick users.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Hands out send times for a fixed global rate to any number of workers.
/// Each worker takes the next ticket and sleeps until its slot.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    interval_ns: f64,
    next: AtomicU64,
}

impl Pacer {
    pub fn new(rate_per_sec: f64) -> Self {
        Pacer {
            start: Instant::now(),
            interval_ns: 1e9 / rate_per_sec.max(0.001),
            next: AtomicU64::new(0),
        }
    }

    /// Waits for the next slot; returns when the request should be sent.
    pub async fn wait(&self) {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let at = self.start + Duration::from_nanos((k as f64 * self.interval_ns) as u64);
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

/// Parses `5s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Ok(Duration::from_secs_f64(secs));
    }
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("bad duration {s:?}"))?;
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_numbers_and_strings() {
        let t = parse_tags("section=h2load, run=2,backend=sqlite");
        assert_eq!(t["run"], 2);
        assert_eq!(t["backend"], "sqlite");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut r = Rng::new(1);
        assert!((0..10_000).all(|_| r.below(7) < 7));
    }
}

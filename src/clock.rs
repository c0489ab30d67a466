//! Time: the clock services read, and the one place that turns unix seconds
//! into text.
//!
//! Nothing below the services reads the system clock: services get a
//! [`Clock`] at construction ([`SystemClock`] in production, a
//! [`ManualClock`] in tests), and pure code takes `now` as an argument, so
//! every time edge can be tested exactly.
//!
//! Formatting is total: any `i64` gives a string and never a panic, because
//! timestamps come from signed but otherwise untrusted JSON. Values the
//! domain accepts (see [`SANE_MIN`] and [`SANE_MAX`]) format as RFC 3339;
//! anything outside still formats, with a longer or signed year.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Where services get the time from.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> i64;

    /// Seconds since the unix epoch (Stripe's resolution).
    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that stands still until told to move, for tests at exact edges.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    /// A clock showing `secs` (unix seconds).
    pub fn at_secs(secs: i64) -> Self {
        ManualClock {
            ms: AtomicI64::new(secs.saturating_mul(1000)),
        }
    }

    pub fn set_secs(&self, secs: i64) {
        self.ms.store(secs.saturating_mul(1000), Ordering::SeqCst);
    }

    pub fn advance_secs(&self, secs: i64) {
        self.ms
            .fetch_add(secs.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// 2000-01-01T00:00:00Z: nothing Stripe says about a subscription is older.
pub const SANE_MIN: i64 = 946_684_800;
/// 2100-01-01T00:00:00Z: no period, trial or event is later than this.
pub const SANE_MAX: i64 = 4_102_444_800;

/// Whether `unix` lies in the range the domain accepts from Stripe.
pub fn is_sane(unix: i64) -> bool {
    (SANE_MIN..=SANE_MAX).contains(&unix)
}

/// (year, month, day) of days since 1970-01-01, proleptic Gregorian.
/// Howard Hinnant's `civil_from_days`, in `i64` so it cannot overflow for
/// any day count an `i64` of seconds can produce.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn parts(unix: i64) -> (i64, u32, u32, i64, i64, i64) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Parses durations such as `7d`, `36h`, `15m`, `2s`, `1h 30m`, or a bare
/// number of seconds (`300`): one syntax for every duration option
/// (the server's and the command-line clients').
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 300, 7d, 36h, 15m or 2s)"))
}

/// Unix seconds as `2026-11-27T10:00:00Z`.
pub fn rfc3339(unix: i64) -> String {
    Rfc3339(unix).to_string()
}

/// Unix seconds as `2026-11-27T10:00Z`, for sentences.
pub fn rfc3339_minute(unix: i64) -> String {
    Rfc3339Minute(unix).to_string()
}

/// Shows unix seconds as [`rfc3339`] does, written straight into the
/// string being formatted: every HasAccess answer's detail carries one,
/// and a `String` of its own per time was a visible part of the hot path.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub i64);

/// Shows unix seconds as [`rfc3339_minute`] does (see [`Rfc3339`]).
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339Minute(pub i64);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_time(f, self.0, true)
    }
}

impl std::fmt::Display for Rfc3339Minute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_time(f, self.0, false)
    }
}

/// `YYYY-MM-DDTHH:MM[:SS]Z`; a year outside 0..=9999 is written with its
/// sign and all its digits.
fn write_time(f: &mut std::fmt::Formatter<'_>, unix: i64, seconds: bool) -> std::fmt::Result {
    let (y, mo, d, h, mi, s) = parts(unix);
    if !(0..=9999).contains(&y) {
        write!(f, "{y:+}")?;
    } else {
        let y = y as u32;
        f.write_str(two_digits(y / 100))?;
        f.write_str(two_digits(y % 100))?;
    }
    let mut buf = *b"-MM-DDTHH:MM:SSZ";
    let mut put = |at: usize, v: u32| buf[at..at + 2].copy_from_slice(two_digits(v).as_bytes());
    put(1, mo);
    put(4, d);
    put(7, h as u32);
    put(10, mi as u32);
    put(13, s as u32);
    let text = if seconds {
        &buf[..]
    } else {
        buf[12] = b'Z';
        &buf[..13]
    };
    f.write_str(std::str::from_utf8(text).expect("BUG: ASCII digits"))
}

/// `v` (below 100) as two digits.
fn two_digits(v: u32) -> &'static str {
    const DIGITS: &str = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    let at = (v % 100) as usize * 2;
    &DIGITS[at..at + 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_rfc3339_at_the_edges_of_the_sane_range() {
        let table = [
            (0, "1970-01-01T00:00:00Z"),
            (SANE_MIN, "2000-01-01T00:00:00Z"),
            (SANE_MAX, "2100-01-01T00:00:00Z"),
            (1_798_761_599, "2026-12-31T23:59:59Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
        ];
        for (unix, text) in table {
            assert_eq!(rfc3339(unix), text, "{unix}");
        }
        assert_eq!(rfc3339_minute(1_798_761_599), "2026-12-31T23:59Z");
    }

    #[test]
    fn any_i64_formats_without_panicking() {
        for unix in [
            i64::MIN,
            i64::MIN + 1,
            -62_167_219_201,
            253_402_300_800,
            i64::MAX - 1,
            i64::MAX,
        ] {
            assert!(rfc3339(unix).ends_with('Z'), "{unix}");
            assert!(rfc3339_minute(unix).ends_with('Z'), "{unix}");
        }
        assert_eq!(rfc3339(253_402_300_800), "+10000-01-01T00:00:00Z");
    }

    #[test]
    fn agrees_with_humantime_where_humantime_can_format() {
        let mut unix = 0i64;
        while unix < 253_402_300_799 {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix as u64);
            assert_eq!(
                rfc3339(unix),
                humantime::format_rfc3339_seconds(t).to_string()
            );
            unix += 7_919_993; // a prime step: every month and time of day
        }
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at_secs(100);
        assert_eq!((clock.now_secs(), clock.now_ms()), (100, 100_000));
        clock.advance_secs(5);
        assert_eq!(clock.now_secs(), 105);
        clock.set_secs(-1);
        assert_eq!(clock.now_secs(), -1);
        assert!(SystemClock.now_secs() > SANE_MIN);
    }

    #[test]
    fn sane_range_is_inclusive() {
        assert!(is_sane(SANE_MIN) && is_sane(SANE_MAX));
        assert!(!is_sane(SANE_MIN - 1) && !is_sane(SANE_MAX + 1));
    }
}

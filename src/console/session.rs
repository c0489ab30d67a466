//! Console sessions and the login rate limit, in memory.
//!
//! Sessions live in this process only: a restart logs everyone out, and
//! with several replicas a session works only on the replica that made it
//! (route the console to one replica, or log in again). Time is the
//! application clock, so tests move it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;

/// Most sessions held at once; the least recently used goes first.
const MAX_SESSIONS: usize = 1000;

/// Failed logins allowed per client address in [`FAILURE_WINDOW_MS`].
pub const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW_MS: i64 = 60_000;

/// Most client addresses whose failures are remembered.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Sent in every form and compared on every POST.
    pub csrf: String,
    /// Who, in the audit log: not the session id, which is a credential.
    pub label: String,
    last_seen_ms: i64,
}

pub struct Sessions {
    clock: Arc<dyn Clock>,
    idle: Duration,
    /// Session id (the cookie's value) to session.
    sessions: Mutex<HashMap<String, Session>>,
    /// Client address to the times of its recent failed logins.
    failures: Mutex<HashMap<IpAddr, Vec<i64>>>,
}

/// `n` random bytes as hex, from the operating system's generator.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("BUG: the OS random generator is unavailable");
    hex::encode(bytes)
}

impl Sessions {
    pub fn new(clock: Arc<dyn Clock>, idle: Duration) -> Self {
        Sessions {
            clock,
            idle,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn idle_ms(&self) -> i64 {
        i64::try_from(self.idle.as_millis()).unwrap_or(i64::MAX)
    }

    /// Starts a session; returns its id (for the cookie) and the session.
    pub fn create(&self) -> (String, Session) {
        let now = self.clock.now_ms();
        let id = random_hex(32);
        let session = Session {
            csrf: random_hex(32),
            label: format!("console:{}", &random_hex(4)),
            last_seen_ms: now,
        };
        let mut sessions = self.sessions.lock().expect("BUG: sessions lock poisoned");
        let idle = self.idle_ms();
        sessions.retain(|_, s| now - s.last_seen_ms <= idle);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen_ms)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The session with this id if it has not been idle too long; marks it
    /// used now. An expired session is forgotten.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let now = self.clock.now_ms();
        let mut sessions = self.sessions.lock().expect("BUG: sessions lock poisoned");
        let session = sessions.get_mut(id)?;
        if now - session.last_seen_ms > self.idle_ms() {
            sessions.remove(id);
            return None;
        }
        session.last_seen_ms = now;
        Some(session.clone())
    }

    pub fn end(&self, id: &str) {
        self.sessions
            .lock()
            .expect("BUG: sessions lock poisoned")
            .remove(id);
    }

    /// Whether `client` has used up its failed logins for now.
    pub fn locked_out(&self, client: IpAddr) -> bool {
        let now = self.clock.now_ms();
        let failures = self.failures.lock().expect("BUG: failures lock poisoned");
        failures.get(&client).is_some_and(|times| {
            times
                .iter()
                .filter(|t| now - **t < FAILURE_WINDOW_MS)
                .count()
                >= MAX_FAILURES
        })
    }

    /// Counts a failed login from `client`.
    pub fn failed(&self, client: IpAddr) {
        let now = self.clock.now_ms();
        let mut failures = self.failures.lock().expect("BUG: failures lock poisoned");
        if failures.len() >= MAX_TRACKED_CLIENTS {
            failures.retain(|_, times| times.iter().any(|t| now - *t < FAILURE_WINDOW_MS));
        }
        let times = failures.entry(client).or_default();
        times.retain(|t| now - *t < FAILURE_WINDOW_MS);
        times.push(now);
    }
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ.
pub fn same_secret(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    // Hashing first makes the comparison's length fixed too.
    let digest = |s: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(s.as_bytes())
    };
    bool::from(digest(given).ct_eq(&digest(expected)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn sessions(idle_secs: u64) -> (Arc<ManualClock>, Sessions) {
        let clock = Arc::new(ManualClock::at_secs(1_700_000_000));
        let sessions = Sessions::new(clock.clone(), Duration::from_secs(idle_secs));
        (clock, sessions)
    }

    #[test]
    fn a_session_lasts_while_used_and_ends_after_the_idle_time() {
        let (clock, sessions) = sessions(60);
        let (id, created) = sessions.create();
        assert_eq!(id.len(), 64);
        clock.advance_secs(60);
        let touched = sessions.touch(&id).expect("exactly at the idle time");
        assert_eq!(touched.csrf, created.csrf);
        clock.advance_secs(61);
        assert!(sessions.touch(&id).is_none());
        clock.advance_secs(-61);
        assert!(sessions.touch(&id).is_none(), "expired sessions are gone");
    }

    #[test]
    fn logins_lock_out_after_five_failures_a_minute() {
        let (clock, sessions) = sessions(60);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(!sessions.locked_out(client));
            sessions.failed(client);
        }
        assert!(sessions.locked_out(client));
        assert!(!sessions.locked_out(other));
        clock.advance_secs(FAILURE_WINDOW_MS / 1000);
        assert!(!sessions.locked_out(client));
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("", "abc"));
    }
}

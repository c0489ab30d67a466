//! Which of Stripe's two worlds this deployment serves. A test-mode event
//! that reaches a production endpoint (a Connect endpoint receives both
//! modes; a test secret added while debugging) must never link a real user
//! to a test subscription or grant access.

/// The events Tollgate applies, by their `livemode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Livemode {
    /// Only live-mode events.
    Live,
    /// Only test-mode events.
    Test,
    /// Both (the default without an API key to tell).
    Any,
}

impl Livemode {
    /// The mode an API key implies: `sk_live_`/`rk_live_` live,
    /// `sk_test_`/`rk_test_` test, anything else (or none) unknown.
    pub fn of_key(key: Option<&str>) -> Option<Livemode> {
        let key = key?.trim();
        if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            Some(Livemode::Live)
        } else if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
            Some(Livemode::Test)
        } else {
            None
        }
    }

    /// Whether an event with this `livemode` flag is applied.
    pub fn accepts(self, livemode: bool) -> bool {
        match self {
            Livemode::Live => livemode,
            Livemode::Test => !livemode,
            Livemode::Any => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Livemode::Live => "live",
            Livemode::Test => "test",
            Livemode::Any => "any",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_imply_a_mode_and_modes_accept_events() {
        let table = [
            (Some("sk_live_abc"), Some(Livemode::Live)),
            (Some("rk_live_abc"), Some(Livemode::Live)),
            (Some("sk_test_abc"), Some(Livemode::Test)),
            (Some(" rk_test_abc"), Some(Livemode::Test)),
            (Some("pk_live_abc"), None),
            (None, None),
        ];
        for (key, mode) in table {
            assert_eq!(Livemode::of_key(key), mode, "{key:?}");
        }
        assert!(Livemode::Live.accepts(true) && !Livemode::Live.accepts(false));
        assert!(Livemode::Test.accepts(false) && !Livemode::Test.accepts(true));
        assert!(Livemode::Any.accepts(true) && Livemode::Any.accepts(false));
    }
}

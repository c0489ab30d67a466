//! The reconciler's durable progress, kept in the store's `service_state`:
//! where the next catch-up pass lists events from, an unfinished pass (saved
//! after every page, so a restart resumes it), and when the sweep last ran.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::store::{Store, StoreError};

const CURSOR_KEY: &str = "reconciler.events_cursor";
const PASS_KEY: &str = "reconciler.events_pass";
const SWEEP_KEY: &str = "reconciler.last_sweep_at";

/// An unfinished catch-up pass.
/// What a pass follows of one listed event: where the next page starts,
/// and how new it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    /// `None` when not a string.
    pub id: Option<String>,
    /// `None` when not an integer.
    pub created: Option<i64>,
}

impl Listed {
    /// Reads the two fields of a listed event's text, whatever else it
    /// holds (nothing when it is not an object).
    pub fn of(raw: &RawValue) -> Listed {
        /// The two fields, each left unparsed so that one of another type
        /// still lets the other be read.
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            id: Option<&'a RawValue>,
            #[serde(borrow)]
            created: Option<&'a RawValue>,
        }
        // A derived struct also reads a list, in field order.
        if !raw.get().starts_with('{') {
            return Listed::default();
        }
        let Ok(head) = serde_json::from_str::<Head<'_>>(raw.get()) else {
            return Listed::default();
        };
        Listed {
            id: head.id.and_then(|v| serde_json::from_str(v.get()).ok()),
            created: head
                .created
                .and_then(|v| serde_json::from_str(v.get()).ok()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassState {
    /// Events created at or after this (unix seconds) are listed.
    pub since: i64,
    /// `created` of the newest event seen so far in the pass.
    pub high_water: Option<i64>,
    /// The last event id of the last finished page.
    pub after: Option<String>,
}

/// Stripe lists events back 30 days; stay a minute inside that.
pub const EVENTS_WINDOW: i64 = 30 * 86_400 - 60;

/// Where a pass starts at `now`: the interrupted pass when one was saved
/// mid-way (it has an `after`), else from the cursor; never further back
/// than Stripe lists events.
pub fn start_pass(saved: Option<PassState>, cursor: Option<i64>, now: i64) -> PassState {
    let oldest = now - EVENTS_WINDOW;
    let mut pass = match saved {
        Some(pass) if pass.after.is_some() => pass,
        _ => PassState {
            since: cursor.unwrap_or(oldest),
            high_water: None,
            after: None,
        },
    };
    pass.since = pass.since.max(oldest);
    pass
}

impl PassState {
    /// Takes in one page of listed events; true when there is another page
    /// to fetch (then the pass resumes after this page's last event).
    pub fn record_page(&mut self, page: &[Listed], has_more: bool) -> bool {
        for created in page.iter().filter_map(|e| e.created) {
            self.high_water = Some(self.high_water.map_or(created, |h| h.max(created)));
        }
        let last = page.last().and_then(|e| e.id.as_deref());
        match (has_more, last) {
            (true, Some(id)) => {
                self.after = Some(id.to_owned());
                true
            }
            _ => false,
        }
    }

    /// Where the next pass lists from: the newest event seen (inclusive:
    /// events of that same second come back as harmless duplicates).
    pub fn next_cursor(&self) -> i64 {
        self.high_water.unwrap_or(self.since)
    }
}

pub struct Progress {
    store: Arc<dyn Store>,
}

impl Progress {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Progress { store }
    }

    /// The pass a crash interrupted, if any. An unreadable saved state is
    /// ignored (the pass starts again from the cursor).
    pub async fn unfinished_pass(&self) -> Result<Option<PassState>, StoreError> {
        Ok(self
            .store
            .get_state(PASS_KEY)
            .await?
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Where the next pass starts, unless a pass is unfinished.
    pub async fn cursor(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .store
            .get_state(CURSOR_KEY)
            .await?
            .and_then(|v| v.parse().ok()))
    }

    /// Saves a pass after one of its pages.
    pub async fn save_pass(&self, pass: &PassState) -> Result<(), StoreError> {
        let saved = serde_json::to_string(pass).expect("BUG: pass state serializes");
        let mut tx = self.store.begin().await?;
        tx.set_state(PASS_KEY, Some(&saved)).await?;
        tx.commit().await
    }

    /// Ends a pass: the next one lists from `cursor`. One transaction, so
    /// a crash leaves either the pass to resume or the new cursor.
    pub async fn finish_pass(&self, cursor: i64) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        tx.set_state(CURSOR_KEY, Some(&cursor.to_string())).await?;
        tx.set_state(PASS_KEY, None).await?;
        tx.commit().await
    }

    /// When the last sweep finished (unix seconds).
    pub async fn last_sweep(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .store
            .get_state(SWEEP_KEY)
            .await?
            .and_then(|v| v.parse().ok()))
    }

    pub async fn swept_at(&self, at: i64) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        tx.set_state(SWEEP_KEY, Some(&at.to_string())).await?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_pass_starts_from_the_saved_pass_the_cursor_or_thirty_days_back() {
        let oldest = NOW - EVENTS_WINDOW;
        let resumable = PassState {
            since: NOW - 100,
            high_water: Some(NOW - 50),
            after: Some("evt_9".into()),
        };
        let unstarted = PassState {
            after: None,
            ..resumable.clone()
        };
        let table = [
            (None, None, (oldest, None)),
            (None, Some(NOW - 10), (NOW - 10, None)),
            (None, Some(oldest - 1), (oldest, None)),
            (Some(unstarted), Some(NOW - 10), (NOW - 10, None)),
            (
                Some(resumable.clone()),
                Some(NOW - 10),
                (NOW - 100, Some("evt_9")),
            ),
        ];
        for (saved, cursor, (since, after)) in table {
            let pass = start_pass(saved.clone(), cursor, NOW);
            assert_eq!(
                (pass.since, pass.after.as_deref()),
                (since, after),
                "{saved:?} {cursor:?}"
            );
        }
        let old = PassState {
            since: oldest - 500,
            ..resumable
        };
        assert_eq!(start_pass(Some(old), None, NOW).since, oldest);
    }

    #[test]
    fn pages_advance_the_pass_and_the_newest_event_becomes_the_cursor() {
        let mut pass = start_pass(None, Some(NOW - 1000), NOW);
        assert_eq!(
            pass.next_cursor(),
            NOW - 1000,
            "nothing seen: keep the cursor"
        );
        let page = [
            listed(json!({"id": "evt_3", "created": NOW - 10})),
            listed(json!({"id": "evt_2", "created": NOW - 20})),
        ];
        assert!(pass.record_page(&page, true));
        assert_eq!(pass.after.as_deref(), Some("evt_2"));
        let last = [listed(json!({"id": "evt_1", "created": NOW - 30}))];
        assert!(!pass.record_page(&last, false));
        assert_eq!(pass.after.as_deref(), Some("evt_2"), "no next page");
        assert_eq!(pass.next_cursor(), NOW - 10);
        assert!(!pass.record_page(&[], true), "an empty page ends the pass");
    }

    fn listed(value: serde_json::Value) -> Listed {
        Listed::of(&RawValue::from_string(value.to_string()).unwrap())
    }

    #[test]
    fn a_listed_event_s_id_and_created_are_read_whatever_else_it_holds() {
        let of = |text: &str| Listed::of(&RawValue::from_string(text.to_owned()).unwrap());
        let both = |id: &str, created| Listed {
            id: Some(id.to_owned()),
            created: Some(created),
        };
        assert_eq!(
            of(
                r#"{"id":"evt_1","object":"event","data":{"object":{"id":"sub_1","created":5}},"created":7}"#
            ),
            both("evt_1", 7),
            "the event's own fields, not its object's"
        );
        assert_eq!(of(r#"{"id":"evt_\u0031","created":7}"#), both("evt_1", 7));
        assert_eq!(
            of(r#"{"id":5,"created":7}"#),
            Listed {
                id: None,
                created: Some(7)
            }
        );
        assert_eq!(
            of(r#"{"id":"evt_1","created":"7"}"#),
            Listed {
                id: Some("evt_1".to_owned()),
                created: None
            }
        );
        assert_eq!(of("[1, 2]"), Listed::default());
        assert_eq!(of("null"), Listed::default());
    }
}

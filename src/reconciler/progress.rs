//! The reconciler's durable progress, kept in the store's `service_state`:
//! where the next catch-up pass lists events from, an unfinished pass (saved
//! after every page, so a restart resumes it), and when the sweep last ran.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

const CURSOR_KEY: &str = "reconciler.events_cursor";
const PASS_KEY: &str = "reconciler.events_pass";
const SWEEP_KEY: &str = "reconciler.last_sweep_at";

/// An unfinished catch-up pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassState {
    /// Events created at or after this (unix seconds) are listed.
    pub since: i64,
    /// `created` of the newest event seen so far in the pass.
    pub high_water: Option<i64>,
    /// The last event id of the last finished page.
    pub after: Option<String>,
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

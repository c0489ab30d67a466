-- Hash of (type, created, data.object) in canonical JSON: the same event
-- fetched from the API and delivered by webhook has different bytes
-- (pending_webhooks changes) but the same content.
ALTER TABLE events ADD COLUMN content_sha256 TEXT;

-- Set while a revocation found only by the reconciler waits for an admin
-- (TOLLGATE_HOLD_REVOCATIONS): the review that holds it.
ALTER TABLE subscriptions ADD COLUMN hold_review_id INTEGER;

-- The outbox: access changes found by the reconciler or a refresh, queued in
-- the same transaction as the change.
CREATE TABLE notifications (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT NOT NULL,      -- ACCESS_RESTORED | ACCESS_REVOKED | ACCESS_CHANGED
    user_id          TEXT NOT NULL,
    customer_id      TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    old_status       TEXT NOT NULL,
    new_status       TEXT NOT NULL,
    old_access       INTEGER NOT NULL,   -- boolean
    new_access       INTEGER NOT NULL,   -- boolean
    old_access_until INTEGER NOT NULL,
    new_access_until INTEGER NOT NULL,
    reason           TEXT NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    acked_at_ms      INTEGER,            -- acknowledged: pulled and acked, or pushed with a 2xx
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    lease_until_ms   INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    dead             INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX notifications_due ON notifications (acked_at_ms, dead, next_attempt_at_ms);

-- Small durable state of background work (the reconciler's cursors).
CREATE TABLE service_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The event ledger: every verified Stripe event, exactly once, keyed by id.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    created         BIGINT NOT NULL,          -- Stripe's unix seconds
    livemode        BOOLEAN NOT NULL,
    api_version     TEXT,
    payload         TEXT NOT NULL,             -- the raw body, as signed
    payload_sha256  TEXT NOT NULL,
    source          TEXT NOT NULL,             -- webhook | reconciler | replay
    received_at_ms  BIGINT NOT NULL,
    processed_at_ms BIGINT,
    outcome         TEXT NOT NULL,             -- applied | stale | ignored | failed
    error           TEXT
);
CREATE INDEX events_created ON events (created);
CREATE INDEX events_outcome ON events (outcome);

-- What Tollgate believes about each subscription. status is NULL until a
-- subscription snapshot arrives (an invoice may create the row first).
CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY,
    customer_id          TEXT NOT NULL,
    status               TEXT,
    current_period_end   BIGINT,
    paid_through         BIGINT,
    trial_end            BIGINT,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    past_due_since       BIGINT,
    items                TEXT NOT NULL DEFAULT '[]',   -- JSON list of prices
    user_id              TEXT,                         -- from subscription metadata
    snapshot_created     BIGINT NOT NULL DEFAULT 0,   -- ordering watermark
    snapshot_event_id    TEXT NOT NULL DEFAULT '',
    verified_at          BIGINT NOT NULL DEFAULT 0,
    updated_at_ms        BIGINT NOT NULL
);
CREATE INDEX subscriptions_customer ON subscriptions (customer_id);
CREATE INDEX subscriptions_user ON subscriptions (user_id);

-- Product users linked to Stripe customers (checkout, customer metadata).
CREATE TABLE customer_users (
    customer_id  TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    linked_at_ms BIGINT NOT NULL,
    PRIMARY KEY (customer_id, user_id)
);
CREATE INDEX customer_users_user ON customer_users (user_id);

-- Records a person should look at.
CREATE TABLE needs_manual_review (
    id              BIGSERIAL PRIMARY KEY,
    subject         TEXT NOT NULL,
    subscription_id TEXT,
    event_id        TEXT,
    reason          TEXT NOT NULL,
    details         TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    resolved_at_ms  BIGINT,
    resolution      TEXT
);
CREATE INDEX needs_manual_review_open ON needs_manual_review (resolved_at_ms);
CREATE INDEX needs_manual_review_subject ON needs_manual_review (subject);

-- Each customer's active Entitlements features as Stripe last summarised
-- them (entitlements.active_entitlement_summary.updated; re-listed through
-- GET /v1/entitlements/active_entitlements when the event's list had more
-- pages). Feature checks use it only for a product whose map is unknown.
-- as_of_ms orders them: an older summary never replaces a newer one.
CREATE TABLE entitlement_summaries (
    customer_id    TEXT PRIMARY KEY,
    features       TEXT NOT NULL,       -- JSON list of feature lookup keys
    as_of_ms       INTEGER NOT NULL,     -- unix ms: the event's created, or when the re-list began
    updated_at_ms  INTEGER NOT NULL
);

-- Which Stripe Entitlements features each product carries, as last read
-- from GET /v1/products/{id}/features. features NULL means unknown: a
-- product.updated event forgot the map as of read_at_ms (the end of the
-- second the event was created in), so a read that began before it can't
-- store an older map over it.
CREATE TABLE product_features (
    product_id  TEXT PRIMARY KEY,
    features    TEXT,               -- JSON list of feature lookup keys
    read_at_ms  INTEGER NOT NULL         -- unix ms: when the read began, or the forget
);

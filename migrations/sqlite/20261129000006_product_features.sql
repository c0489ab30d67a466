-- Which Stripe Entitlements features each product carries, as last read
-- from GET /v1/products/{id}/features. features NULL means unknown: a
-- product.updated event forgot the map at read_at (the event's created), so
-- a read that began before it can't store an old map over it.
CREATE TABLE product_features (
    product_id  TEXT PRIMARY KEY,
    features    TEXT,               -- JSON list of feature lookup keys
    read_at     INTEGER NOT NULL         -- unix seconds: the read, or the forget
);

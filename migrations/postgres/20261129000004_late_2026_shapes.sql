-- Thin events (v2.core.event) and snapshot events of the same change are
-- recorded once: both carry the snapshot event's id here (a snapshot event
-- its own id, a thin event its snapshot_event), and the unique index makes
-- whichever arrives second a duplicate, concurrent arrivals included.
ALTER TABLE events ADD COLUMN change_key TEXT;
UPDATE events SET change_key = id;
CREATE UNIQUE INDEX events_change_key ON events (change_key);

-- A scheduled cancellation (flexible billing: the portal sets cancel_at
-- with cancel_at_period_end false); access ends at the earlier of it and
-- the period end.
ALTER TABLE subscriptions ADD COLUMN cancel_at BIGINT;

-- Why a paused subscription is paused (status_details.paused.subscription.type,
-- 2026-09-30.endive): first_payment_failure keeps the payment-failure grace.
ALTER TABLE subscriptions ADD COLUMN pause_reason TEXT;

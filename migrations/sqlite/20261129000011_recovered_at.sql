-- When a subscription was last seen out of dunning (the newest such
-- snapshot's `created`, applied or too old to apply): with it, a dunning
-- run's start is found whatever order its webhooks arrive in. Unknown
-- (NULL) for rows written before it.
ALTER TABLE subscriptions ADD COLUMN recovered_at INTEGER;

-- A row in a dunning run now: its last recovery is unknown but came before
-- the run began. Just before it stands for it, so no older snapshot moves
-- the run's start earlier (the grace stays as long as it was). A row out
-- of dunning needs nothing: its own snapshot is a recovery, which the next
-- snapshot applied to it takes as one.
UPDATE subscriptions SET recovered_at = past_due_since - 1 WHERE past_due_since > 0;

-- Events are looked up by outcome only to count recent failures. An index
-- of every event's outcome cost each recorded event one more index entry
-- (on SQLite, one more page written in its commit); this one holds the
-- failed events alone.
DROP INDEX events_outcome;
CREATE INDEX events_failed ON events (received_at_ms) WHERE outcome = 'failed';

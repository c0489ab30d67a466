-- What people did through the admin console: one row per action, written
-- in the same transaction as the action's effect where the service allows.
CREATE TABLE admin_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,    -- a short label of the console session, never the token
    action  TEXT NOT NULL,    -- resolve | release_hold | refresh | replay
    target  TEXT NOT NULL,    -- review:ID or event:ID
    note    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX admin_audit_target ON admin_audit (target, id);

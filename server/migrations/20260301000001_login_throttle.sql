-- Failed logins, counted in the database so that every replica, and a restarted server, see the
-- same counts. One row a key: a user from one client address, a user, or a client address; the
-- key is stored as its SHA-256, so no user name or address is kept here.
CREATE TABLE login_throttle (
    key_sha256 BYTEA PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    last_failure TIMESTAMPTZ NOT NULL DEFAULT now(),
    blocked_until TIMESTAMPTZ
);

CREATE INDEX login_throttle_last_failure ON login_throttle (last_failure);

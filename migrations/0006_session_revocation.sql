-- Why: sessions live in Redis, and revoking them there (logout everywhere, password change,
-- account disable) fails while Redis is unreachable. A per-user epoch in PostgreSQL makes
-- revocation hold anyway: every session records the epoch it was issued under, revoking bumps
-- the epoch, and a session (from Redis or from the signed cookie copy used while Redis is down)
-- whose epoch differs from the user's is refused. A counter, not a timestamp, so the clocks of
-- app instances and the database never have to agree.
ALTER TABLE users ADD COLUMN session_epoch integer NOT NULL DEFAULT 0;

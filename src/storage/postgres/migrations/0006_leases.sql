-- Which gateway of a fleet runs each session. A row is never deleted, so the epoch (the fencing
-- token) only goes up: a claim sets it to epoch + 1, a release leaves it as it is. owner is NULL
-- once released. Every time is the database's (now()), never a gateway's clock.
CREATE TABLE fleet_leases (
    session_id TEXT        PRIMARY KEY,
    owner      TEXT,
    epoch      BIGINT      NOT NULL CHECK (epoch > 0),
    expires_at TIMESTAMPTZ NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL
);

-- The gateways of the fleet: one counts until its heartbeat runs out, or until it leaves.
-- started_at is when its current run began (its first heartbeat after the last one ran out).
CREATE TABLE fleet_gateways (
    gateway_id TEXT        PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ NOT NULL
);

-- The webhook endpoints, with the lease of the claimer posting their deliveries (unix ms; 0 when
-- none): while it is live, no other gateway claims any of the endpoint's deliveries, so that they
-- are posted in order.
CREATE TABLE webhook_endpoints (
    id            TEXT    PRIMARY KEY,
    url           TEXT    NOT NULL,
    secret        TEXT    NOT NULL,
    events        TEXT,
    sessions      TEXT,
    created_at    BIGINT  NOT NULL,
    disabled      TEXT,
    owner         TEXT    NOT NULL DEFAULT 'admin',
    owner_admin   BOOLEAN NOT NULL DEFAULT TRUE,
    format        TEXT    NOT NULL DEFAULT 'standard',
    claimed_until BIGINT  NOT NULL DEFAULT 0
);

-- One event for one endpoint, until delivered or a dead letter (failed); deleted with its endpoint.
CREATE TABLE webhook_deliveries (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id     TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    session_id      TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    path            TEXT    NOT NULL DEFAULT '',
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, status, id);

-- The sessions the gateway runs (sessions.config.json in the embedded mode), oldest first.
CREATE TABLE registry_sessions (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    session_id  TEXT   PRIMARY KEY,
    description TEXT,
    -- JSON objects, as the creator gave them.
    metadata    TEXT,
    extra       TEXT   NOT NULL DEFAULT '{}'
);

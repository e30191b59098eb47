-- What each session looks like on the gateway that runs it (status, QR, account), so that every
-- gateway of the fleet answers with it. Written only under the session's live lease, and never
-- over a state written under a later epoch.
CREATE TABLE fleet_session_states (
    session_id TEXT        PRIMARY KEY,
    owner      TEXT        NOT NULL,
    epoch      BIGINT      NOT NULL,
    state      JSONB       NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

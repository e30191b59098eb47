-- Every accepted message, with its bytes until it is final (sent, delivered, read or failed).
CREATE TABLE journal_messages (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  TEXT    NOT NULL UNIQUE,
    session_id  TEXT    NOT NULL,
    recipient   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    file_name   TEXT,
    mimetype    TEXT,
    caption     TEXT,
    preview     TEXT,
    size        BIGINT  NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    -- NULL once the message is final: its bytes are no longer needed.
    payload     BYTEA,
    crc32       BIGINT
);
-- PDFs and media are compressed already: TOAST stores them out of line without trying pglz on
-- every insert.
ALTER TABLE journal_messages ALTER COLUMN payload SET STORAGE EXTERNAL;
CREATE INDEX journal_messages_open ON journal_messages (seq) WHERE payload IS NOT NULL;
CREATE INDEX journal_messages_by_session ON journal_messages (session_id, seq);
CREATE INDEX journal_messages_by_age ON journal_messages (updated_at);

-- An idempotency key, the fingerprint of the body it came with, and the message it made.
CREATE TABLE journal_idempotency_keys (
    key         TEXT   PRIMARY KEY,
    fingerprint BYTEA  NOT NULL,
    message_id  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX journal_idempotency_keys_age ON journal_idempotency_keys (created_at);

-- `message.status` events, written in the same transaction as the status they report.
CREATE TABLE journal_status_events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    TEXT   NOT NULL,
    message_id  TEXT   NOT NULL,
    session_id  TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    last_error  TEXT,
    at          BIGINT NOT NULL
);

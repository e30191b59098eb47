-- What the linked numbers receive, once per (session, message id), with the bytes of their files.
CREATE TABLE inbox_messages (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  TEXT   NOT NULL,
    message_id  TEXT   NOT NULL,
    chat        TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    timestamp   BIGINT NOT NULL,
    record      TEXT   NOT NULL,
    file        BYTEA,
    stored_at   BIGINT NOT NULL,
    UNIQUE (session_id, message_id)
);
CREATE INDEX inbox_messages_by_chat ON inbox_messages (session_id, chat, seq);
CREATE INDEX inbox_messages_by_id ON inbox_messages (message_id);
CREATE INDEX inbox_messages_by_age ON inbox_messages (stored_at);

-- How far each chat has been read.
CREATE TABLE inbox_chat_reads (
    session_id  TEXT   NOT NULL,
    chat        TEXT   NOT NULL,
    read_seq    BIGINT NOT NULL,
    PRIMARY KEY (session_id, chat)
);

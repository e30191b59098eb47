-- The credentials of every linked number: whatsapp-rust's store, the tables of its SQLite store
-- (whatsapp-rust-sqlite-storage 0.7) with `session_id` where that has `device_id`. Blobs keep its
-- encodings (protobuf for app-state keys, hash states and the certificate chain; JSON for device
-- lists), so rows copy between the two as they are. Unsigned 32-bit ids are BIGINT.

-- Our device: its keys, the account the phone signed, and the counters the client keeps.
CREATE TABLE wa_device (
    session_id                      TEXT    PRIMARY KEY,
    lid                             TEXT    NOT NULL,
    pn                              TEXT    NOT NULL,
    registration_id                 BIGINT  NOT NULL,
    noise_key                       BYTEA   NOT NULL,
    identity_key                    BYTEA   NOT NULL,
    signed_pre_key                  BYTEA   NOT NULL,
    signed_pre_key_id               BIGINT  NOT NULL,
    signed_pre_key_signature        BYTEA   NOT NULL,
    adv_secret_key                  BYTEA   NOT NULL,
    account                         BYTEA,
    push_name                       TEXT    NOT NULL,
    app_version_primary             BIGINT  NOT NULL,
    app_version_secondary           BIGINT  NOT NULL,
    app_version_tertiary            BIGINT  NOT NULL,
    app_version_last_fetched_ms     BIGINT  NOT NULL,
    edge_routing_info               BYTEA,
    props_hash                      TEXT,
    next_pre_key_id                 BIGINT  NOT NULL,
    first_unupload_pre_key_id       BIGINT  NOT NULL,
    server_has_prekeys              BOOLEAN NOT NULL,
    nct_salt                        BYTEA,
    server_cert_chain               BYTEA,
    login_counter                   INTEGER NOT NULL,
    lid_migrated                    BOOLEAN NOT NULL,
    last_signed_pre_key_rotation_ms BIGINT  NOT NULL,
    read_receipts_disabled          BOOLEAN NOT NULL
);

-- Signal: the identity key of each address we talk to, and the session with it.
CREATE TABLE wa_identities (
    session_id TEXT  NOT NULL,
    address    TEXT  NOT NULL,
    key        BYTEA NOT NULL,
    PRIMARY KEY (session_id, address)
);
CREATE TABLE wa_sessions (
    session_id TEXT  NOT NULL,
    address    TEXT  NOT NULL,
    record     BYTEA NOT NULL,
    PRIMARY KEY (session_id, address)
);

-- Signal: our one-time and signed pre-keys, and the sender keys of groups.
CREATE TABLE wa_prekeys (
    session_id TEXT    NOT NULL,
    id         BIGINT  NOT NULL,
    key        BYTEA   NOT NULL,
    uploaded   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (session_id, id)
);
CREATE TABLE wa_signed_prekeys (
    session_id TEXT   NOT NULL,
    id         BIGINT NOT NULL,
    record     BYTEA  NOT NULL,
    PRIMARY KEY (session_id, id)
);
CREATE TABLE wa_sender_keys (
    session_id TEXT  NOT NULL,
    address    TEXT  NOT NULL,
    record     BYTEA NOT NULL,
    PRIMARY KEY (session_id, address)
);

-- App-state sync: the keys the phone shares, each collection's state, its mutations' MACs.
CREATE TABLE wa_app_state_keys (
    session_id TEXT  NOT NULL,
    key_id     BYTEA NOT NULL,
    key_data   BYTEA NOT NULL,
    PRIMARY KEY (session_id, key_id)
);
CREATE TABLE wa_app_state_versions (
    session_id TEXT  NOT NULL,
    name       TEXT  NOT NULL,
    state_data BYTEA NOT NULL,
    PRIMARY KEY (session_id, name)
);
CREATE TABLE wa_app_state_mutation_macs (
    session_id TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    index_mac  BYTEA  NOT NULL,
    version    BIGINT NOT NULL,
    value_mac  BYTEA  NOT NULL,
    PRIMARY KEY (session_id, name, index_mac)
);

-- Which group members hold our sender key.
CREATE TABLE wa_sender_key_devices (
    session_id TEXT    NOT NULL,
    group_jid  TEXT    NOT NULL,
    device_jid TEXT    NOT NULL,
    has_key    BOOLEAN NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (session_id, group_jid, device_jid)
);
CREATE INDEX wa_sender_key_devices_by_device ON wa_sender_key_devices (session_id, device_jid);

-- LID <-> phone number.
CREATE TABLE wa_lid_pn_mapping (
    session_id      TEXT   NOT NULL,
    lid             TEXT   NOT NULL,
    phone_number    TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    learning_source TEXT   NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (session_id, lid)
);
CREATE INDEX wa_lid_pn_mapping_by_phone ON wa_lid_pn_mapping (session_id, phone_number, updated_at);

-- Base keys kept to detect retry collisions.
CREATE TABLE wa_base_keys (
    session_id TEXT   NOT NULL,
    address    TEXT   NOT NULL,
    message_id TEXT   NOT NULL,
    base_key   BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, address, message_id)
);

-- The devices of each user we know.
CREATE TABLE wa_device_registry (
    session_id   TEXT   NOT NULL,
    user_id      TEXT   NOT NULL,
    devices_json TEXT   NOT NULL,
    timestamp    BIGINT NOT NULL,
    phash        TEXT,
    raw_id       BIGINT,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (session_id, user_id)
);

-- Group metadata, opaque.
CREATE TABLE wa_group_metadata (
    session_id TEXT   NOT NULL,
    group_jid  TEXT   NOT NULL,
    info       BYTEA  NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, group_jid)
);

-- Trusted-contact privacy tokens.
CREATE TABLE wa_tc_tokens (
    session_id       TEXT   NOT NULL,
    jid              TEXT   NOT NULL,
    token            BYTEA  NOT NULL,
    token_timestamp  BIGINT NOT NULL,
    sender_timestamp BIGINT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (session_id, jid)
);

-- What we sent, kept for retry receipts.
CREATE TABLE wa_sent_messages (
    session_id TEXT   NOT NULL,
    chat_jid   TEXT   NOT NULL,
    message_id TEXT   NOT NULL,
    payload    BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, chat_jid, message_id)
);
CREATE INDEX wa_sent_messages_by_age ON wa_sent_messages (session_id, created_at);

-- Decrypted messages waiting for the inbound durability hook.
CREATE TABLE wa_pending_inbound (
    session_id  TEXT   NOT NULL,
    chat        TEXT   NOT NULL,
    sender      TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    message     BYTEA  NOT NULL,
    inserted_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, chat, sender, id)
);
CREATE INDEX wa_pending_inbound_by_age ON wa_pending_inbound (session_id, inserted_at);

-- The secrets of the messages we sent, for the replies that refer to them (0 = never expires).
CREATE TABLE wa_msg_secrets (
    session_id TEXT   NOT NULL,
    chat       TEXT   NOT NULL,
    sender     TEXT   NOT NULL,
    msg_id     TEXT   NOT NULL,
    secret     BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL DEFAULT 0,
    message_ts BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, chat, sender, msg_id)
);
CREATE INDEX wa_msg_secrets_expiring ON wa_msg_secrets (session_id, expires_at) WHERE expires_at <> 0;

//! whatsapp-gateway: links WhatsApp numbers by QR code and sends PDFs through them.
//!
//! * [`app`]: start-up and shutdown ([`App::build`], [`App::run`]), the relays that feed the
//!   event bus from the sessions and the journal, and in a fleet the fan-out of message events
//!   between the gateways' buses.
//! * [`config`]: settings from defaults, an optional file, the environment and `.env`; plain data
//!   that imports nothing but [`domain`].
//! * [`api`]: the HTTP surface on axum: one file per resource, auth ([`api::auth::Caller`] with
//!   scopes and rate limits; the users' own JWTs in [`api::jwt`]), one [`api::error::ApiError`],
//!   request ids, CORS, timeouts, the accept loop, OpenAPI, `/metrics` (with its scrape-time
//!   gauges), and the seed's `/ws/session/:sessionId` WebSocket.
//! * [`session`]: one supervised whatsapp-rust client per session, its QR code drawn as a PNG.
//! * [`queue`]: per-session lanes that deliver PDFs in order, retrying with backoff.
//! * [`journal`]: the durable record of accepted messages, as callers hold it (the SQLite
//!   journal with its group commit, and the Postgres one, live in [`storage`]).
//! * [`inbox`]: received messages and their files, stored once and announced on the bus.
//! * [`events`]: the event bus behind `/ws/events` and the webhooks.
//! * [`webhooks`]: endpoints, the durable outbox, and the workers that post signed deliveries.
//! * [`domain`]: validated values (ids, phone numbers, PDFs, file names, delivery statuses), the
//!   clock, the event names, and the webhook settings and signing secrets.
//! * [`storage`]: the bottom floor: one trait per kind of state, SQLite (the default) and
//!   Postgres (the shared store) behind them.
//! * [`files`]: private (0700/0600) folders and files for credentials and the journal.
//! * [`migrate`]: `whatsapp-gateway migrate --to postgres://…`, the embedded store copied into
//!   Postgres.
//! * [`metrics`]: Prometheus series names and the recorder.
//! * [`seeds`]: the sibling Node.js services' status names and timestamps, for `COMPAT_API`'s
//!   routes (`api::compat`) and callbacks (`webhooks`).
//! * [`shutdown`]: the cancellation token and task tracker every long-lived task uses.
//! * [`telemetry`]: the log subscriber and its filter.
//!
//! The modules form layers with no cycle (`scripts/module-graph.py` checks): `domain`, `files`,
//! `shutdown`, `config` and `storage` at the bottom; `journal`, `session`, `inbox`, `events` and
//! `metrics` above them; then `queue`, `seeds` and `webhooks`; then `api`; `app` on top.

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod events;
pub mod files;
pub mod fleet;
pub mod inbox;
pub mod journal;
pub mod metrics;
pub mod migrate;
pub mod queue;
pub mod seeds;
pub mod session;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod webhooks;

pub use app::{App, StartError};
pub use config::Config;

//! whatsapp-gateway: links WhatsApp numbers by QR code and sends PDFs through them.
//!
//! * [`app`]: start-up and shutdown ([`App::build`], [`App::run`]).
//! * [`config`]: settings from defaults, an optional file, the environment and `.env`.
//! * [`http`]: the hyper server, routing, bearer auth, one [`http::error::ApiError`] type, and
//!   `POST /api/send-pdf`.
//! * [`ws`]: the admin WebSocket `/ws/session/:sessionId` that pushes QR and status frames.
//! * [`session`]: one supervised whatsapp-rust client per session, `sessions.config.json`.
//! * [`queue`]: per-session in-memory lanes that deliver PDFs in order, retrying with backoff.
//! * [`domain`]: validated values (phone numbers, PDFs, file names).

pub mod app;
pub mod config;
pub mod domain;
pub mod http;
pub mod journal;
pub mod queue;
pub mod session;
pub mod shutdown;
pub mod telemetry;
pub mod ws;

pub use app::{App, StartError};
pub use config::Config;

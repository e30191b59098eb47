#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests and their helpers may panic.
//! The end-to-end tests, as one binary so whatsapp-rust is linked once: each module starts the
//! fake WhatsApp server and the gateway on port 0 and drives them with real clients.

mod support;
mod webhooks;

mod admin;
mod backlog;
mod compat;
mod contacts;
mod crash;
mod credentials;
mod durability;
mod fleet;
mod fleet_chaos;
mod fleet_events;
mod gateway;
mod inbound;
mod jwt;
mod linking;
mod messages;
mod migrate;
mod platform;
mod postgres;
mod probes;
mod sessions;
mod settings;
mod socketio;

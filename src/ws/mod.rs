//! The admin WebSocket `/ws/session/:sessionId`: `handshake` checks and answers the upgrade,
//! `socket` pushes the session's frames.

pub mod handshake;
pub mod socket;

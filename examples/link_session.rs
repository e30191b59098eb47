//! Links a WhatsApp number from the terminal: opens the admin WebSocket, prints status frames
//! and draws each QR code so it can be scanned with the phone.
//!
//! ```text
//! cargo run --example link_session -- --url ws://127.0.0.1:3000 --token T --session tienda_lima
//! ```
//!
//! `--token` defaults to `$API_STATIC_TOKEN`. Exits when the session is connected, when the
//! server closes the socket, or on Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A command-line example: failing loudly is its error handling.

use std::process::ExitCode;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str = "usage: link_session [--url ws://HOST:PORT] [--token TOKEN] --session ID";

/// The server's `{event, data}` frames.
#[derive(Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
enum Frame {
    Status(String),
    Qr(String),
    Error(String),
}

struct Args {
    url: String,
    token: String,
    session: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut url = "ws://127.0.0.1:3000".to_owned();
    let mut token = std::env::var("API_STATIC_TOKEN").ok();
    let mut session = None;

    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--url" => url = value()?,
            "--token" => token = Some(value()?),
            "--session" => session = Some(value()?),
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unexpected argument {other}\n{USAGE}"),
        }
    }
    Ok(Args {
        url: url.trim_end_matches('/').to_owned(),
        token: token.context(format!("--token or API_STATIC_TOKEN is required\n{USAGE}"))?,
        session: session.context(format!("--session is required\n{USAGE}"))?,
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn draw_qr(data: &str) -> anyhow::Result<()> {
    let code = QrCode::new(data.as_bytes()).context("cannot encode the QR string")?;
    // Inverted colours: most terminals are dark, and phones need dark modules on light.
    let image =
        code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build();
    println!("{image}");
    println!("Scan with WhatsApp > Linked devices > Link a device");
    Ok(())
}

async fn run() -> anyhow::Result<bool> {
    let args = parse_args()?;
    let endpoint = format!("{}/ws/session/{}", args.url, args.session);
    let url = format!("{endpoint}?token={}", encode_query_value(&args.token));
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))?;
    println!("connected to {endpoint}");

    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = tokio::signal::ctrl_c() => {
                let _ = socket.close(None).await;
                return Ok(false);
            }
        };
        let Some(message) = message else {
            println!("connection ended");
            return Ok(false);
        };
        match message.context("websocket error")? {
            Message::Text(text) => match serde_json::from_str::<Frame>(text.as_str()) {
                Ok(Frame::Qr(data)) => draw_qr(&data)?,
                Ok(Frame::Status(status)) => {
                    println!("status: {status}");
                    if status == "connected" || status == "already_connected" {
                        let _ = socket.close(None).await;
                        return Ok(true);
                    }
                }
                Ok(Frame::Error(error)) => println!("error: {error}"),
                Err(_) => println!("unrecognised frame: {}", text.as_str()),
            },
            Message::Close(frame) => {
                match frame {
                    Some(frame) => {
                        println!("closed by server: {} {}", frame.code, frame.reason.as_str())
                    }
                    None => println!("closed by server"),
                }
                return Ok(false);
            }
            // Pings are answered by tungstenite itself.
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

//! Sends a PDF through the gateway, like the sales system would.
//!
//! ```text
//! cargo run --example send_pdf -- --url http://127.0.0.1:3000 --token T \
//!     --session tienda_lima --to 51987654321 [--name Factura-001.pdf] file.pdf
//! ```
//!
//! `--token` defaults to `$API_STATIC_TOKEN`, `--url` to `http://127.0.0.1:3000`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A command-line example: failing loudly is its error handling.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const USAGE: &str = "usage: send_pdf [--url URL] [--token TOKEN] --session ID --to PHONE [--name FILE_NAME] FILE.pdf";

struct Args {
    url: String,
    token: String,
    session: String,
    to: String,
    name: Option<String>,
    file: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut url = "http://127.0.0.1:3000".to_owned();
    let mut token = std::env::var("API_STATIC_TOKEN").ok();
    let (mut session, mut to, mut name, mut file) = (None, None, None, None);

    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--url" => url = value()?,
            "--token" => token = Some(value()?),
            "--session" => session = Some(value()?),
            "--to" => to = Some(value()?),
            "--name" => name = Some(value()?),
            "-h" | "--help" => bail!("{USAGE}"),
            other if other.starts_with("--") => bail!("unknown option {other}\n{USAGE}"),
            other => file = Some(PathBuf::from(other)),
        }
    }
    Ok(Args {
        url: url.trim_end_matches('/').to_owned(),
        token: token.context(format!("--token or API_STATIC_TOKEN is required\n{USAGE}"))?,
        session: session.context(format!("--session is required\n{USAGE}"))?,
        to: to.context(format!("--to is required\n{USAGE}"))?,
        name,
        file: file.context(format!("a PDF file is required\n{USAGE}"))?,
    })
}

fn run() -> anyhow::Result<bool> {
    let args = parse_args()?;
    let pdf = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let file_name = args.name.or_else(|| args.file.file_name().map(|name| name.to_string_lossy().into_owned()));

    let mut body = serde_json::json!({
        "sessionId": args.session,
        "to": args.to,
        "pdfBase64": STANDARD.encode(&pdf),
    });
    if let Some(file_name) = file_name {
        body["fileName"] = serde_json::Value::String(file_name);
    }

    let endpoint = format!("{}/api/send-pdf", args.url);
    let mut response = ureq::post(&endpoint)
        .config()
        .http_status_as_error(false)
        .build()
        .header("Authorization", &format!("Bearer {}", args.token))
        .content_type("application/json")
        .send(serde_json::to_vec(&body)?)
        .with_context(|| format!("POST {endpoint} failed"))?;

    let status = response.status();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    println!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    println!("{text}");
    Ok(status.as_u16() == 202)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

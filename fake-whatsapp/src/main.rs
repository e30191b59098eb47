//! `fake-whatsapp --listen 127.0.0.1:0 --media-listen 127.0.0.1:0 --ca-out PATH
//! [--unregistered 15550009,15550010]`: prints one JSON line with its addresses when ready.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use fake_whatsapp::{FakeConfig, FakeWhatsApp};

fn usage() -> &'static str {
    "usage: fake-whatsapp [--listen ADDR] [--media-listen ADDR] [--ca-out PATH] [--unregistered N1,N2,...]"
}

fn parse_args() -> Result<FakeConfig, String> {
    let mut config = FakeConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{}", usage()));
        match flag.as_str() {
            "--listen" => config.listen = value()?.parse::<SocketAddr>().map_err(|e| format!("--listen: {e}"))?,
            "--media-listen" => {
                config.media_listen = value()?.parse::<SocketAddr>().map_err(|e| format!("--media-listen: {e}"))?
            }
            "--ca-out" => config.ca_out = Some(PathBuf::from(value()?)),
            "--unregistered" => {
                config.unregistered = value()?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
            }
            "-h" | "--help" => return Err(usage().to_owned()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let server = match FakeWhatsApp::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-whatsapp: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serde_json::to_string(&server.addresses()) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("fake-whatsapp: {e}"),
    }
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

//! The `whatsapp-gateway` binary: configuration, logs, then the library runs the server.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use whatsapp_gateway::{App, Config, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    whatsapp_gateway::app::tune_sqlite_for_many_stores();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(("migrate", rest)) = args.split_first().map(|(first, rest)| (first.as_str(), rest)) {
        return whatsapp_gateway::migrate::command(rest).await;
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("whatsapp-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(&config.log_level);
    if let Some(path) = config.generated_token_file() {
        // Shown only to a person at a terminal: under PM2, systemd or Docker stderr is a stored
        // log, and a token must never end up there.
        if std::io::stderr().is_terminal() {
            eprintln!(
                "whatsapp-gateway: no API_STATIC_TOKEN set; generated one and saved it to {} (mode 0600):\n\n    {}\n",
                path.display(),
                config.api_token.expose()
            );
        } else {
            eprintln!(
                "whatsapp-gateway: no API_STATIC_TOKEN set; generated one and saved it to {} (mode 0600)",
                path.display()
            );
        }
    }
    if config.token_is_short() {
        tracing::warn!("API_STATIC_TOKEN is short; use at least 16 random characters");
    }
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("whatsapp-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    match app.run(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("whatsapp-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The `fanfare` binary: parses the command line, loads the configuration, and either runs the
//! server or prints a token. This is the only place errors become `anyhow`.

// The OpenAPI document is one `json!` literal, deeper than the default limit allows.
#![recursion_limit = "256"]

mod auth;
mod cli;
mod config;
mod credentials;
mod error;
mod http_metrics;
mod ingest_recorder;
mod openapi;
mod routes;
mod server;
mod state;
mod tokens;

use clap::Parser;
use engine::ids::UserId;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command};
use config::{CliOverrides, Config, LogFormat};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let overrides = CliOverrides {
        listen: cli.listen.clone(),
        data_dir: cli.data_dir.clone(),
    };
    let config = match Config::load(cli.config.as_deref(), overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fanfare: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(cli.command.unwrap_or(Command::Serve), config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanfare: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            init_tracing(&config);
            // Many realtime connections need many descriptors; raise the soft limit to the hard one.
            if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
                tracing::warn!("could not raise the open-file limit: {e}");
            }
            actix_web::rt::System::new().block_on(server::serve(config))
        }
        Command::Token(args) => {
            let (creds, _) = credentials::load_or_generate(&config)?;
            let codec = tokens::TokenCodec::new(&creds);
            let (user, admin) = match args.who.user {
                Some(u) => (UserId::new(u)?, false),
                None => (UserId::new(tokens::ADMIN_SUBJECT)?, true),
            };
            if let Some(name) = &args.name {
                engine::model::validate_name(name)?;
            }
            let token = codec.mint(&user, args.name.as_deref(), admin, args.ttl)?;
            println!("{token}");
            Ok(())
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

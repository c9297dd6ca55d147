//! Command-line interface: `fanfare [serve]` and `fanfare token`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::tokens::parse_ttl;

/// Fanfare: conferencing and live streaming server.
#[derive(Debug, Parser)]
#[command(name = "fanfare", version)]
pub struct Cli {
    /// Configuration file (default: ./fanfare.toml when it exists).
    #[arg(long, global = true, env = "FANFARE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides config and FANFARE_LISTEN).
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Data directory (overrides config and FANFARE_DATA_DIR).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Print an access token signed with this server's secret.
    Token(TokenArgs),
}

/// `fanfare token` options.
#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "who")]
pub struct TokenWho {
    /// The user id the token speaks for.
    #[arg(long)]
    pub user: Option<String>,
    /// Mint an admin (backend) token instead.
    #[arg(long)]
    pub admin: bool,
}

/// `fanfare token` arguments.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub who: TokenWho,
    /// Display name carried in the token.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. 1h, 30m, 7d, or seconds.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub ttl: Duration,
}

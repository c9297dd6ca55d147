//! What the benchmark programs share: reading the start banner of a `fanfare` they launched.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStdout;

/// Reads `fanfare`'s stdout until it has printed its URL and admin token (30 s at most), then
/// keeps draining it in the background. Returns `(base_url, admin_token)`.
pub async fn read_banner(stdout: ChildStdout) -> Result<(String, String)> {
    let mut lines = BufReader::new(stdout).lines();
    let (mut base, mut admin) = (None, None);
    let read = async {
        while admin.is_none() {
            let line = lines
                .next_line()
                .await?
                .context("stdout closed before the admin token")?;
            if let Some(rest) = line.strip_prefix("Fanfare listening on ") {
                base = Some(rest.trim_end_matches('/').to_owned());
            }
            admin = line.strip_prefix("Admin token (24 h): ").map(str::to_owned);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .context("no start banner within 30 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((
        base.context("no \"listening on\" line")?,
        admin.context("no admin token")?,
    ))
}

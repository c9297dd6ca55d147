//! The server's API key and secret: from the configuration, or generated on first start into
//! `data_dir/credentials.json` (mode 0600) and reused after.

use std::io::Write;
use std::path::Path;

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The key (token issuer) and the HMAC secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub api_key: String,
    pub api_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

/// Where the credentials came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Config,
    Stored,
    Generated,
}

/// Reads the credentials from the config, else from the data dir, else generates them.
pub fn load_or_generate(config: &Config) -> anyhow::Result<(Credentials, Origin)> {
    if let (Some(api_key), Some(api_secret)) = (&config.api_key, &config.api_secret) {
        let c = Credentials {
            api_key: api_key.clone(),
            api_secret: api_secret.clone(),
        };
        return Ok((c, Origin::Config));
    }
    let path = config.data_dir.join("credentials.json");
    if path.exists() {
        let bytes = std::fs::read(&path)?;
        let c: Credentials = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not valid credentials JSON: {e}", path.display()))?;
        return Ok((c, Origin::Stored));
    }
    let mut rng = rand::rng();
    let c = Credentials {
        api_key: format!("FF{}", Alphanumeric.sample_string(&mut rng, 14)),
        api_secret: Alphanumeric.sample_string(&mut rng, 48),
    };
    write_private(&path, &serde_json::to_vec_pretty(&c)?)?;
    Ok((c, Origin::Generated))
}

/// Writes `bytes` to `path` readable by the owner only, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

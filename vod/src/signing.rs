//! Short-lived signed links: playlists hand out segment URLs carrying `exp` (unix seconds) and
//! `sig` (HMAC-SHA256 over the path and `exp`, base64url), so players that cannot send headers
//! (`<video src>`, hls.js, Safari, VLC, ffmpeg) still only get what they were allowed, and only
//! until the link expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signed link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// `exp` is in the past.
    Expired,
    /// The signature does not match (tampered, or for another path).
    BadSignature,
}

/// Signs and checks links with one key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    ttl: Duration,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Signer {
    /// A signer whose key is derived from the server's API secret; links live `ttl`.
    pub fn new(secret: &str, ttl: Duration) -> Signer {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"fanfare hls links v1");
        Signer {
            key: mac.finalize().into_bytes().to_vec(),
            ttl,
        }
    }

    /// How long links live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self, path: &str, exp: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_hmac());
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// The query string (`exp=..&sig=..`) that makes `path` readable until now + ttl.
    pub fn query(&self, path: &str) -> String {
        let exp = now_s() + self.ttl.as_secs();
        let sig = URL_SAFE_NO_PAD.encode(self.mac(path, exp).finalize().into_bytes());
        format!("exp={exp}&sig={sig}")
    }

    /// Checks a link's `exp` and `sig` for `path`.
    pub fn verify(&self, path: &str, exp: u64, sig: &str) -> Result<(), LinkError> {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(sig) else {
            return Err(LinkError::BadSignature);
        };
        self.mac(path, exp)
            .verify_slice(&raw)
            .map_err(|_| LinkError::BadSignature)?;
        if exp < now_s() {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

/// HMAC accepts keys of any length; this cannot happen.
fn unreachable_hmac() -> HmacSha256 {
    unreachable!("HMAC-SHA256 takes keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(q: &str) -> (u64, String) {
        let mut exp = 0;
        let mut sig = String::new();
        for kv in q.split('&') {
            match kv.split_once('=') {
                Some(("exp", v)) => exp = v.parse().unwrap(),
                Some(("sig", v)) => sig = v.to_owned(),
                _ => {}
            }
        }
        (exp, sig)
    }

    #[test]
    fn signed_link_checks_path_expiry_and_signature() {
        let s = Signer::new("secret", Duration::from_secs(60));
        let (exp, sig) = parts(&s.query("rec/a/1.ts"));
        assert_eq!(s.verify("rec/a/1.ts", exp, &sig), Ok(()));
        assert_eq!(s.verify("rec/a/2.ts", exp, &sig), Err(LinkError::BadSignature));
        assert_eq!(s.verify("rec/a/1.ts", exp + 1, &sig), Err(LinkError::BadSignature));
        assert_eq!(s.verify("rec/a/1.ts", exp, "AAAA"), Err(LinkError::BadSignature));
        assert_eq!(s.verify("rec/a/1.ts", exp, "%%%"), Err(LinkError::BadSignature));
        let other = Signer::new("other", Duration::from_secs(60));
        assert_eq!(other.verify("rec/a/1.ts", exp, &sig), Err(LinkError::BadSignature));
        let expired = Signer::new("secret", Duration::ZERO);
        let (exp, sig) = parts(&expired.query("x"));
        assert_eq!(expired.verify("x", exp - 1, &sig), Err(LinkError::BadSignature));
        let past = exp.saturating_sub(10);
        let sig = URL_SAFE_NO_PAD.encode(expired.mac("x", past).finalize().into_bytes());
        assert_eq!(expired.verify("x", past, &sig), Err(LinkError::Expired));
    }
}

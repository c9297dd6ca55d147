//! A camera's RTSP URL: validated once (scheme `rtsp`, or `rtsps` for RTSP over TLS through
//! [`crate::tls`], and a host), split into the credential-free URL and the credentials retina
//! answers Basic/Digest challenges with, and a redacted form (`rtsp://***@host/...`, the scheme
//! kept) for logs and API responses. Also the address policy of `ingest.allow_remote`.

use std::net::IpAddr;

use url::Url;

use crate::error::IngestError;

/// Longest accepted URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// A validated camera URL.
#[derive(Clone)]
pub struct SourceUrl {
    /// Without userinfo: what retina is given (for `rtsps`, what the TLS bridge stands for).
    pub url: Url,
    /// Percent-decoded user and password from the userinfo, if any.
    pub credentials: Option<(String, String)>,
    /// For logs and API responses.
    pub redacted: String,
}

impl std::fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl SourceUrl {
    /// Parses and validates `raw`.
    pub fn parse(raw: &str) -> Result<SourceUrl, IngestError> {
        if raw.len() > MAX_URL_LEN {
            return Err(IngestError::InvalidUrl(format!("longer than {MAX_URL_LEN} bytes")));
        }
        // Never echo the input: it may hold a password.
        let mut url = Url::parse(raw).map_err(|e| IngestError::InvalidUrl(format!("not a URL ({e})")))?;
        if url.scheme() != "rtsp" && url.scheme() != "rtsps" {
            let scheme: String = url.scheme().chars().take(16).collect();
            return Err(IngestError::InvalidUrl(format!(
                "scheme {scheme:?} is not supported; use rtsp:// or rtsps://"
            )));
        }
        if url.host_str().is_none_or(|h| h.is_empty()) {
            return Err(IngestError::InvalidUrl("the URL has no host".into()));
        }
        let credentials = if !url.username().is_empty() || url.password().is_some() {
            let user = decode(url.username());
            let pass = decode(url.password().unwrap_or(""));
            Some((user, pass))
        } else {
            None
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_fragment(None);
        let redacted = redact_url(&url, credentials.is_some());
        Ok(SourceUrl {
            url,
            credentials,
            redacted,
        })
    }

    /// The host as written (brackets stripped from IPv6).
    pub fn host(&self) -> String {
        match self.url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => String::new(),
        }
    }

    /// Whether this is RTSP over TLS (`rtsps://`).
    pub fn is_tls(&self) -> bool {
        self.url.scheme() == "rtsps"
    }

    /// The port (when absent: 554 for `rtsp`, 322 for `rtsps`, the defaults of RFC 7826).
    pub fn port(&self) -> u16 {
        self.url.port().unwrap_or(if self.is_tls() { 322 } else { 554 })
    }

    /// Fails with `HostNotAllowed` unless `allow_remote` or every address the host resolves to
    /// is loopback. Resolves names (bounded by `timeout`).
    pub async fn check_allowed(&self, allow_remote: bool, timeout: std::time::Duration) -> Result<(), IngestError> {
        if allow_remote {
            return Ok(());
        }
        let host = self.host();
        let refuse = |reason: String| IngestError::HostNotAllowed {
            host: host.clone(),
            reason,
        };
        let addrs: Vec<IpAddr> = match self.url.host() {
            Some(url::Host::Ipv4(a)) => vec![IpAddr::V4(a)],
            Some(url::Host::Ipv6(a)) => vec![IpAddr::V6(a)],
            Some(url::Host::Domain(d)) => {
                let lookup = tokio::net::lookup_host((d.to_string(), self.port()));
                match tokio::time::timeout(timeout, lookup).await {
                    Ok(Ok(it)) => it.map(|sa| sa.ip()).collect(),
                    Ok(Err(e)) => return Err(refuse(format!("it does not resolve ({e})"))),
                    Err(_) => return Err(refuse("resolving it timed out".into())),
                }
            }
            None => Vec::new(),
        };
        if addrs.is_empty() {
            return Err(refuse("it resolves to no address".into()));
        }
        match addrs.iter().find(|a| !a.is_loopback()) {
            Some(a) => Err(refuse(format!(
                "{a} is not a loopback address and ingest.allow_remote is false"
            ))),
            None => Ok(()),
        }
    }
}

/// Replaces userinfo by `***` in a credential-free URL.
fn redact_url(clean: &Url, had_credentials: bool) -> String {
    let s = clean.as_str().to_string();
    if !had_credentials {
        return s;
    }
    match s.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://***@{rest}"),
        None => s,
    }
}

/// Redacts anything that looks like URL userinfo (`scheme://user:pass@`) in free text such as
/// an error message from the RTSP client, and the given secrets wherever they appear.
pub fn redact_text(text: &str, secrets: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s, "***");
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_redacts_credentials() {
        let s = SourceUrl::parse("rtsp://admin:p%40ss@cam.local:8554/live?x=1#frag").unwrap();
        assert_eq!(s.credentials, Some(("admin".into(), "p@ss".into())));
        assert_eq!(s.url.as_str(), "rtsp://cam.local:8554/live?x=1");
        assert_eq!(s.redacted, "rtsp://***@cam.local:8554/live?x=1");
        assert!(!format!("{s:?}").contains("p@ss"));
        let plain = SourceUrl::parse("rtsp://127.0.0.1/cam").unwrap();
        assert_eq!(plain.credentials, None);
        assert_eq!(plain.redacted, "rtsp://127.0.0.1/cam");
        assert_eq!(plain.port(), 554);
        assert!(!plain.is_tls());
    }

    #[test]
    fn takes_rtsps_with_its_default_port_and_keeps_the_scheme_when_redacting() {
        let s = SourceUrl::parse("rtsps://admin:secret@cam.local/live?x=1").unwrap();
        assert!(s.is_tls());
        assert_eq!(s.port(), 322);
        assert_eq!(s.url.as_str(), "rtsps://cam.local/live?x=1");
        assert_eq!(s.redacted, "rtsps://***@cam.local/live?x=1");
        let s = SourceUrl::parse("rtsps://192.168.1.1:7441/abc").unwrap();
        assert_eq!((s.port(), s.host().as_str()), (7441, "192.168.1.1"));
    }

    #[test]
    fn refuses_other_schemes_and_missing_hosts() {
        for bad in [
            "file:///etc/passwd",
            "http://h/x",
            "rtspu://h/x",
            "rtsp://",
            "rtsps:///x",
            "not a url",
            "rtsp:///x",
        ] {
            let e = SourceUrl::parse(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.code(), "ingest_invalid_url", "{bad}");
        }
        let e = SourceUrl::parse("http://u:secret@h/x").err().unwrap().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[tokio::test]
    async fn loopback_policy() {
        let t = std::time::Duration::from_secs(2);
        for ok in [
            "rtsp://127.0.0.1/x",
            "rtsp://[::1]:8554/x",
            "rtsp://127.3.4.5/x",
            "rtsp://localhost/x",
        ] {
            SourceUrl::parse(ok).unwrap().check_allowed(false, t).await.unwrap();
        }
        for bad in ["rtsp://10.0.0.1/x", "rtsp://192.168.1.2/x", "rtsp://[2001:db8::1]/x"] {
            let e = SourceUrl::parse(bad)
                .unwrap()
                .check_allowed(false, t)
                .await
                .unwrap_err();
            assert_eq!(e.code(), "ingest_host_not_allowed");
        }
        SourceUrl::parse("rtsp://10.0.0.1/x")
            .unwrap()
            .check_allowed(true, t)
            .await
            .unwrap();
    }

    #[test]
    fn redacts_free_text() {
        let t = redact_text(
            "failed to connect to rtsp://bob:hunter2@10.0.0.1:554/x: refused",
            &["hunter2"],
        );
        assert_eq!(t, "failed to connect to rtsp://***@10.0.0.1:554/x: refused");
        assert_eq!(
            redact_text("password hunter2 leaked", &["hunter2"]),
            "password *** leaked"
        );
        assert_eq!(redact_text("rtsp://h/x ok", &[]), "rtsp://h/x ok");
    }
}

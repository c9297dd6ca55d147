//! RTSP over TLS (`rtsps://`) for retina, which only speaks plain TCP: a per-connection TLS
//! bridge.
//!
//! For each connection attempt to an `rtsps` camera, [`TlsDialer::open`] connects TCP to the
//! camera, completes the TLS handshake (so a certificate problem is reported as such, before
//! any RTSP), then listens on `127.0.0.1:0` for exactly one connection: retina's, which is
//! given `rtsp://127.0.0.1:{port}{path}{?query}` instead of the camera URL. A task copies bytes
//! both ways between that loopback connection and the TLS stream until either side closes.
//! Credentials still travel inside RTSP (retina's own Basic/Digest), now encrypted. The cost is
//! one extra copy per byte through a loopback socket.
//!
//! The bridge task ends when the copy ends, and at the latest [`LINGER`] after its
//! [`TlsBridge`] handle is dropped (the end of the connection attempt or of the ingest); the
//! linger lets retina's `TEARDOWN` on the existing connection through. A bridge dropped before
//! retina connected closes its listener at once.
//!
//! Certificate checks: by default the camera's chain is verified against the system's root
//! certificates (`rustls-native-certs`, loaded once per process) with the URL's host (a name or
//! an IP address) as the server name. With a pin ([`Fingerprint`], the ingest's
//! `tls_fingerprint`) no CA is consulted: the SHA-256 of the leaf certificate (DER) must equal
//! the pin, as MediaMTX's `sourceFingerprint` (for cameras with self-signed certificates).
//! Handshake signatures are checked by the crypto provider either way. The provider is
//! rustls' `ring` one, which the workspace already builds (the `rtc` crate uses it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use url::Url;

use crate::error::IngestError;
use crate::model::RtspTransport;
use crate::source::SourceUrl;

/// How long a bridge may go on copying after its handle is dropped.
pub const LINGER: Duration = Duration::from_secs(2);

/// The SHA-256 of a certificate's DER encoding: the pin of an ingest's `tls_fingerprint`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Parses 64 hex digits, case-insensitive, colons allowed anywhere (`AB:CD:...` as openssl
    /// prints it, or plain hex as MediaMTX takes it).
    pub fn parse(text: &str) -> Result<Fingerprint, IngestError> {
        let hex: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
        let bad = || {
            IngestError::Invalid(
                "tls_fingerprint must be the SHA-256 of the camera's certificate: 64 hex digits (colons allowed)"
                    .into(),
            )
        };
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let digits = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(digits, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }

    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

/// Lowercase hex without colons: the form stored and shown.
impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Checks the TLS side of an ingest request: `rtsps` only with the TCP transport (RTSP over
/// TLS carries RTP interleaved in the TLS connection; the HTTP tunnel is not offered over TLS),
/// a fingerprint only with `rtsps` and well formed. Returns the parsed pin.
pub fn check_request(
    source: &SourceUrl,
    transport: RtspTransport,
    fingerprint: Option<&str>,
) -> Result<Option<Fingerprint>, IngestError> {
    if source.is_tls() && transport == RtspTransport::Udp {
        return Err(IngestError::Invalid(
            "transport \"udp\" is not possible with rtsps:// (RTSP over TLS carries RTP inside the TLS connection); use \"tcp\""
                .into(),
        ));
    }
    if source.is_tls() && transport == RtspTransport::Http {
        return Err(IngestError::Invalid(
            "transport \"http\" (the RTSP-over-HTTP tunnel) is not supported with rtsps://; use \"tcp\" for RTSP over TLS, or an rtsp:// URL for the tunnel"
                .into(),
        ));
    }
    match fingerprint {
        None => Ok(None),
        Some(_) if !source.is_tls() => Err(IngestError::Invalid("tls_fingerprint is only for rtsps:// URLs".into())),
        Some(f) => Fingerprint::parse(f).map(Some),
    }
}

/// Why a connection attempt through TLS failed. Messages never carry credentials (the camera
/// URL's userinfo is not used here).
#[derive(Debug, Error)]
pub enum TlsError {
    /// The host is not usable as a TLS server name.
    #[error("the host {0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The TCP connection to the camera failed.
    #[error("Unable to connect to RTSP server: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (certificate, protocol, or the connection dropped).
    #[error("TLS handshake with camera failed: {0}")]
    Handshake(String),
    /// rustls refused the client configuration (not expected with the `ring` provider).
    #[error("TLS configuration failed: {0}")]
    Config(String),
    /// The loopback listener for retina could not be opened.
    #[error("cannot open the loopback TLS bridge: {0}")]
    Listen(std::io::Error),
}

/// Why the camera's certificate was refused (carried through rustls as
/// [`CertificateError::Other`] and unwrapped again for the message).
#[derive(Debug, Error)]
enum Refused {
    #[error("certificate fingerprint does not match: expected {expected}, the camera presented {presented}")]
    Mismatch {
        expected: Fingerprint,
        presented: Fingerprint,
    },
    #[error(
        "certificate not trusted ({reason}); the camera presented a certificate with SHA-256 fingerprint \
         {presented}: if that is the camera's own self-signed certificate, pin it with tls_fingerprint"
    )]
    Untrusted { reason: String, presented: Fingerprint },
}

/// What the camera's certificate is checked against.
#[derive(Debug)]
enum Trust {
    /// The system's roots (or why there are none).
    Roots(Result<Arc<WebPkiServerVerifier>, String>),
    /// The leaf certificate's SHA-256, and no CA.
    Pin(Fingerprint),
}

/// The one certificate verifier of camera connections (see the module doc).
#[derive(Debug)]
struct CameraVerifier {
    trust: Trust,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CameraVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity.as_ref());
        let refused = |r: Refused| rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(r))));
        match &self.trust {
            Trust::Pin(expected) if *expected == presented => Ok(ServerCertVerified::assertion()),
            Trust::Pin(expected) => Err(refused(Refused::Mismatch {
                expected: *expected,
                presented,
            })),
            Trust::Roots(Err(why)) => Err(refused(Refused::Untrusted {
                reason: why.clone(),
                presented,
            })),
            Trust::Roots(Ok(webpki)) => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| {
                    let reason = match e {
                        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown issuer".into(),
                        rustls::Error::InvalidCertificate(c) => c.to_string(),
                        other => other.to_string(),
                    };
                    refused(Refused::Untrusted { reason, presented })
                }),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The system's root certificates, loaded once per process (off the async threads).
async fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: tokio::sync::OnceCell<Arc<RootCertStore>> = tokio::sync::OnceCell::const_new();
    ROOTS
        .get_or_init(|| async {
            let load = || {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!("loading the system's root certificates: {e}");
                }
                let mut roots = RootCertStore::empty();
                let (added, ignored) = roots.add_parsable_certificates(found.certs);
                tracing::info!(added, ignored, "system root certificates loaded for rtsps cameras");
                Arc::new(roots)
            };
            tokio::task::spawn_blocking(load)
                .await
                .unwrap_or_else(|_| Arc::new(RootCertStore::empty()))
        })
        .await
        .clone()
}

/// Opens TLS connections to one camera (built once per ingest).
pub struct TlsDialer {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
}

impl TlsDialer {
    /// A dialer for `source` (an `rtsps` URL), checking certificates against `pin` if set, else
    /// against the system's roots.
    pub async fn new(source: &SourceUrl, pin: Option<Fingerprint>) -> Result<TlsDialer, TlsError> {
        let host = source.host();
        let server_name = ServerName::try_from(host.clone()).map_err(|_| TlsError::ServerName(host.clone()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let trust = match pin {
            Some(pin) => Trust::Pin(pin),
            None => Trust::Roots(
                WebPkiServerVerifier::builder_with_provider(system_roots().await, provider.clone())
                    .build()
                    .map_err(|e| format!("no usable root certificate on this system: {e}")),
            ),
        };
        let verifier = Arc::new(CameraVerifier {
            trust,
            algorithms: provider.signature_verification_algorithms,
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(TlsDialer {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            host,
            port: source.port(),
        })
    }

    /// One connection attempt: TCP to the camera, the TLS handshake, then a bridge for
    /// `camera_url` (an `rtsps` URL without userinfo) that retina can connect to.
    pub async fn open(&self, camera_url: &Url) -> Result<TlsBridge, TlsError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(TlsError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| TlsError::Handshake(describe_handshake_error(&e)))?;
        let (listener, url) = loopback_listener(camera_url).await.map_err(TlsError::Listen)?;
        let (release, released) = oneshot::channel();
        tokio::spawn(run_bridge(listener, tls, released));
        Ok(TlsBridge { url, _release: release })
    }
}

/// A listener on `127.0.0.1:0` for a bridge's one loopback connection, and the URL retina is
/// given for it ([`bridge_url`]).
pub(crate) async fn loopback_listener(camera_url: &Url) -> std::io::Result<(TcpListener, Url)> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let local = listener.local_addr()?;
    let url = bridge_url(camera_url, local).ok_or_else(|| std::io::Error::other("cannot form the bridge URL"))?;
    Ok((listener, url))
}

/// The camera URL with scheme `rtsp` and a loopback bridge's address (for both bridges, through
/// [`loopback_listener`]).
pub(crate) fn bridge_url(camera_url: &Url, local: SocketAddr) -> Option<Url> {
    let mut url = camera_url.clone();
    url.set_scheme("rtsp").ok()?;
    url.set_host(Some(&local.ip().to_string())).ok()?;
    url.set_port(Some(local.port())).ok()?;
    Some(url)
}

/// The readable cause of a failed handshake.
fn describe_handshake_error(e: &std::io::Error) -> String {
    let Some(rustls_error) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) = rustls_error {
        if let Some(refused) = other.downcast_ref::<Refused>() {
            return refused.to_string();
        }
    }
    rustls_error.to_string()
}

/// A live bridge to the camera for one connection attempt. Dropping it ends the bridge task
/// (see the module doc).
pub struct TlsBridge {
    url: Url,
    _release: oneshot::Sender<()>,
}

impl TlsBridge {
    /// What retina connects to: `rtsp://127.0.0.1:{port}{path}{?query}`.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// Accepts one loopback connection and copies between it and the camera.
async fn run_bridge(listener: TcpListener, mut camera: TlsStream<TcpStream>, mut released: oneshot::Receiver<()>) {
    let accepted = tokio::select! {
        accepted = accept_loopback(&listener, "TLS bridge") => accepted,
        _ = &mut released => return,
    };
    drop(listener);
    let Some(mut local) = accepted else { return };
    let linger = async {
        let _ = released.await;
        tokio::time::sleep(LINGER).await;
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut local, &mut camera) => match copied {
            Ok((to_camera, from_camera)) => tracing::debug!(to_camera, from_camera, "TLS bridge closed"),
            Err(e) => tracing::debug!("TLS bridge closed: {e}"),
        },
        () = linger => tracing::debug!("TLS bridge closed with its connection"),
    }
}

/// The first connection from a loopback address (anything else is closed and ignored);
/// `bridge` names the bridge in logs. Also used by the HTTP tunnel.
pub(crate) async fn accept_loopback(listener: &TcpListener, bridge: &str) -> Option<TcpStream> {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) if peer.ip().is_loopback() => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Ok((_, peer)) => tracing::warn!(%peer, "{bridge}: refused a non-loopback connection"),
            Err(e) => {
                tracing::warn!("{bridge}: accept failed: {e}");
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS echo server with a self-signed certificate for 127.0.0.1; returns its port, the
    /// certificate's fingerprint, and a channel told when a served connection ends.
    async fn echo_server() -> (u16, Fingerprint, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let der = certified.cert.der().clone();
        let fingerprint = Fingerprint::of(der.as_ref());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (ended_tx, ended) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, ended_tx) = (acceptor.clone(), ended_tx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let (mut r, mut w) = tokio::io::split(tls);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                    let _ = ended_tx.send(());
                });
            }
        });
        (port, fingerprint, ended)
    }

    fn source(port: u16) -> SourceUrl {
        SourceUrl::parse(&format!("rtsps://127.0.0.1:{port}/cam?ch=1")).unwrap()
    }

    #[test]
    fn fingerprints_parse_with_colons_in_any_case_and_print_as_plain_lowercase_hex() {
        let plain = "84f6b751b9fd83c7ab36fec029c71541cd4c5f1f3f39deb22673f3cee92866e2";
        let colons = plain
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(Fingerprint::parse(&colons).unwrap().to_string(), plain);
        assert_eq!(Fingerprint::parse(plain).unwrap().to_string(), plain);
        for bad in [
            "",
            "abc",
            &plain[..62],
            &format!("{plain}00"),
            &plain.replace('8', "g"),
            "é",
        ] {
            let e = Fingerprint::parse(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_argument", "{bad}");
        }
        assert_eq!(
            Fingerprint::of(b"").to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn rtsps_needs_tcp_and_a_fingerprint_needs_rtsps() {
        let pin = "00".repeat(32);
        let tls = source(7441);
        let plain = SourceUrl::parse("rtsp://127.0.0.1/cam").unwrap();
        assert!(check_request(&tls, RtspTransport::Tcp, Some(&pin)).unwrap().is_some());
        assert!(check_request(&tls, RtspTransport::Tcp, None).unwrap().is_none());
        assert!(check_request(&plain, RtspTransport::Udp, None).unwrap().is_none());
        assert!(check_request(&plain, RtspTransport::Http, None).unwrap().is_none());
        for (s, t, f) in [
            (&tls, RtspTransport::Udp, None),
            (&tls, RtspTransport::Http, None),
            (&plain, RtspTransport::Http, Some(pin.as_str())),
            (&plain, RtspTransport::Tcp, Some(pin.as_str())),
            (&tls, RtspTransport::Tcp, Some("12:34")),
        ] {
            let e = check_request(s, t, f).unwrap_err();
            assert_eq!(e.code(), "invalid_argument", "{e}");
        }
    }

    #[tokio::test]
    async fn a_pinned_bridge_copies_both_ways_takes_one_connection_and_ends_with_its_handle() {
        let (port, pin, mut ended) = echo_server().await;
        let dialer = TlsDialer::new(&source(port), Some(pin)).await.unwrap();
        let bridge = dialer.open(&source(port).url).await.unwrap();
        let url = bridge.url().clone();
        assert_eq!(url.scheme(), "rtsp");
        assert_eq!(url.host_str(), Some("127.0.0.1"));
        assert_eq!((url.path(), url.query()), ("/cam", Some("ch=1")));
        let bridge_port = url.port().unwrap();
        assert_ne!(bridge_port, port);

        let mut local = TcpStream::connect(("127.0.0.1", bridge_port)).await.unwrap();
        local.write_all(b"OPTIONS * RTSP/1.0\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 22];
        local.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"OPTIONS * RTSP/1.0\r\n\r\n");
        // Exactly one connection: the listener is gone.
        assert!(TcpStream::connect(("127.0.0.1", bridge_port)).await.is_err());

        // Dropping the handle ends the bridge (within the linger) and closes both sides.
        drop(bridge);
        let wait = LINGER + Duration::from_secs(2);
        tokio::time::timeout(wait, ended.recv()).await.unwrap().unwrap();
        let n = tokio::time::timeout(wait, local.read(&mut buf)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }

    #[tokio::test]
    async fn a_bridge_ends_as_soon_as_its_client_closes() {
        let (port, pin, mut ended) = echo_server().await;
        let dialer = TlsDialer::new(&source(port), Some(pin)).await.unwrap();
        let bridge = dialer.open(&source(port).url).await.unwrap();
        let local = TcpStream::connect(("127.0.0.1", bridge.url().port().unwrap()))
            .await
            .unwrap();
        drop(local);
        // The handle is still held: the camera side closes because the client did.
        tokio::time::timeout(Duration::from_secs(2), ended.recv())
            .await
            .unwrap()
            .unwrap();
        drop(bridge);
    }

    #[tokio::test]
    async fn a_bridge_dropped_before_its_client_connects_closes_its_listener() {
        let (port, pin, mut ended) = echo_server().await;
        let dialer = TlsDialer::new(&source(port), Some(pin)).await.unwrap();
        let bridge = dialer.open(&source(port).url).await.unwrap();
        let bridge_port = bridge.url().port().unwrap();
        drop(bridge);
        tokio::time::timeout(Duration::from_secs(2), ended.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(("127.0.0.1", bridge_port)).await.is_err());
    }

    #[tokio::test]
    async fn a_wrong_pin_fails_the_handshake_naming_both_fingerprints() {
        let (port, pin, _ended) = echo_server().await;
        let wrong = Fingerprint::parse(&"ab".repeat(32)).unwrap();
        let dialer = TlsDialer::new(&source(port), Some(wrong)).await.unwrap();
        let e = dialer.open(&source(port).url).await.err().expect("refused").to_string();
        assert!(
            e.starts_with("TLS handshake with camera failed: certificate fingerprint does not match"),
            "{e}"
        );
        assert!(e.contains(&wrong.to_string()) && e.contains(&pin.to_string()), "{e}");
    }

    #[tokio::test]
    async fn without_a_pin_a_self_signed_camera_is_not_trusted() {
        let (port, pin, _ended) = echo_server().await;
        let dialer = TlsDialer::new(&source(port), None).await.unwrap();
        let e = dialer.open(&source(port).url).await.err().expect("refused").to_string();
        assert!(
            e.starts_with("TLS handshake with camera failed: certificate not trusted"),
            "{e}"
        );
        assert!(e.contains(&pin.to_string()), "{e}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dialer = TlsDialer::new(&source(port), None).await.unwrap();
        let e = dialer.open(&source(port).url).await.err().expect("refused");
        assert!(matches!(e, TlsError::Connect(_)), "{e}");
    }
}

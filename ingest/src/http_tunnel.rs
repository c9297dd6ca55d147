//! RTSP over HTTP (`"transport": "http"`, QuickTime's RTSP-over-HTTP tunnelling) for retina,
//! which only speaks plain TCP: a per-connection loopback bridge, built like the TLS one
//! ([`crate::tls`]).
//!
//! The tunnel is two HTTP/1.0 connections to the camera URL's host and port (554 when the URL
//! has none), tied together by a random `x-sessioncookie`:
//!
//! - **GET** (`Accept: application/x-rtsp-tunnelled`): the camera answers `HTTP/1.x 200` with
//!   headers (`Content-Type: application/x-rtsp-tunnelled` when it names one); every byte after
//!   the headers is the server's side of the RTSP connection (responses and interleaved RTP),
//!   raw.
//! - **POST** (`Content-Type: application/x-rtsp-tunnelled`, a nominal `Content-Length: 32767`):
//!   everything the client sends (RTSP requests, interleaved RTCP) goes here, base64-encoded.
//!   The camera never answers it.
//!
//! For each connection attempt [`TunnelDialer::open`] does both requests and checks the GET's
//! answer (so a refused port, a status other than 200 or another content type is the attempt's
//! error, before any RTSP), then listens on `127.0.0.1:0` for exactly one connection: retina's,
//! which is given `rtsp://127.0.0.1:{port}{path}{?query}`. A task copies what the GET
//! connection brings to retina as is, and base64-encodes what retina writes onto the POST
//! connection (each read encoded on its own, with padding, as other clients do: retina writes
//! a request at a time). Credentials stay inside RTSP (retina's own Basic/Digest); the HTTP
//! requests carry none, so a tunnel that wants HTTP authentication fails with its status.
//!
//! Lifetime as the TLS bridge: the task ends when either direction ends, and at the latest
//! [`LINGER`] after its [`TunnelBridge`] handle is dropped (time for retina's `TEARDOWN`); a
//! bridge dropped before retina connected closes its listener at once. Not supported: the
//! tunnel over TLS (`rtsps://`, refused when the ingest is created), explicit HTTP proxies
//! (requests go to the camera's address; transparent proxies are fine), reopening the POST
//! after 32767 bytes (servers, like clients, treat that length as nominal).

use base64::Engine as _;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use url::{Position, Url};

use crate::source::SourceUrl;
use crate::tls::{accept_loopback, loopback_listener};

/// How long a bridge may go on copying after its handle is dropped (as the TLS bridge's).
pub const LINGER: std::time::Duration = crate::tls::LINGER;

/// The most bytes of HTTP headers read in answer to the GET.
pub const MAX_HEAD: usize = 8 * 1024;

/// The MIME type of both directions of the tunnel.
const TUNNELLED: &str = "application/x-rtsp-tunnelled";

/// Why a connection attempt through the HTTP tunnel failed. Messages carry no credentials
/// (the camera URL's userinfo is not used here) and at most a short, printable excerpt of what
/// the camera answered.
#[derive(Debug, Error)]
pub enum TunnelError {
    /// A TCP connection to the camera failed.
    #[error("HTTP tunnel: unable to connect to the camera: {0}")]
    Connect(std::io::Error),
    /// Sending a request or reading the GET's answer failed.
    #[error("HTTP tunnel: {what} failed: {source}")]
    Io { what: &'static str, source: std::io::Error },
    /// The camera closed the GET connection before a complete answer.
    #[error("HTTP tunnel: the camera closed the connection before answering the GET")]
    Closed,
    /// The answer to the GET is not HTTP.
    #[error("HTTP tunnel: the camera did not answer the GET with HTTP (it sent {0:?}); does this port serve RTSP over HTTP?")]
    NotHttp(String),
    /// The GET was answered with another status than 200.
    #[error("HTTP tunnel: the camera answered the GET with {0:?}, not 200 (no RTSP-over-HTTP tunnel there, or it wants HTTP authentication, which is not supported)")]
    Status(String),
    /// The GET was answered with 200 but another content type: not an RTSP tunnel.
    #[error("HTTP tunnel: the camera answered the GET with Content-Type {0:?}, not application/x-rtsp-tunnelled (not an RTSP-over-HTTP tunnel)")]
    NotTunnel(String),
    /// The answer's headers did not end within [`MAX_HEAD`] bytes.
    #[error("HTTP tunnel: the camera's answer to the GET has no end of headers within {MAX_HEAD} bytes")]
    HeadTooLong,
    /// The loopback listener for retina could not be opened.
    #[error("cannot open the loopback HTTP tunnel bridge: {0}")]
    Listen(std::io::Error),
}

/// Opens HTTP tunnels to one camera.
pub struct TunnelDialer {
    /// Where to connect (brackets stripped from IPv6).
    host: String,
    port: u16,
    /// The `Host` header: `host:port` as in a URL.
    host_header: String,
    user_agent: String,
}

impl TunnelDialer {
    /// A dialer for `source` (an `rtsp` URL), sending `user_agent` with both requests.
    pub fn new(source: &SourceUrl, user_agent: &str) -> TunnelDialer {
        let port = source.port();
        let host_header = format!("{}:{port}", source.url.host_str().unwrap_or_default());
        TunnelDialer {
            host: source.host(),
            port,
            host_header,
            user_agent: user_agent.to_string(),
        }
    }

    /// One connection attempt: the GET (its answer checked), the POST, then a bridge for
    /// `camera_url` (without userinfo) that retina can connect to.
    pub async fn open(&self, camera_url: &Url) -> Result<TunnelBridge, TunnelError> {
        let cookie = new_cookie();
        let target = request_target(camera_url);
        let mut get = self.connect().await?;
        let head = get_request(&target, &self.host_header, &cookie, &self.user_agent);
        send(&mut get, &head, "sending the GET").await?;
        let early = read_answer(&mut get).await?;
        let mut post = self.connect().await?;
        let head = post_request(&target, &self.host_header, &cookie, &self.user_agent);
        send(&mut post, &head, "sending the POST").await?;
        let (listener, url) = loopback_listener(camera_url).await.map_err(TunnelError::Listen)?;
        let (release, released) = oneshot::channel();
        let tunnel = Tunnel { get, early, post };
        tokio::spawn(run_bridge(listener, tunnel, released));
        Ok(TunnelBridge { url, _release: release })
    }

    async fn connect(&self) -> Result<TcpStream, TunnelError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(TunnelError::Connect)?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

/// A live tunnel for one connection attempt. Dropping it ends the bridge task (see the module
/// doc).
pub struct TunnelBridge {
    url: Url,
    _release: oneshot::Sender<()>,
}

impl TunnelBridge {
    /// What retina connects to: `rtsp://127.0.0.1:{port}{path}{?query}`.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// Both HTTP connections of an established tunnel, and the RTSP bytes that came with the
/// GET's answer.
struct Tunnel {
    get: TcpStream,
    early: Vec<u8>,
    post: TcpStream,
}

/// A fresh session cookie: 22 random alphanumerics (about 130 bits).
fn new_cookie() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..22)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The request target of both requests: the URL's path (`/` when empty) and query.
fn request_target(url: &Url) -> String {
    let target = &url[Position::BeforePath..Position::AfterQuery];
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("/{target}")
    }
}

/// The GET that opens the camera-to-client direction.
fn get_request(target: &str, host: &str, cookie: &str, user_agent: &str) -> String {
    format!(
        "GET {target} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nx-sessioncookie: {cookie}\r\n\
         Accept: {TUNNELLED}\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n"
    )
}

/// The POST that opens the client-to-camera direction (its body: base64, never ending).
fn post_request(target: &str, host: &str, cookie: &str, user_agent: &str) -> String {
    format!(
        "POST {target} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nx-sessioncookie: {cookie}\r\n\
         Content-Type: {TUNNELLED}\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nContent-Length: 32767\r\n\
         Expires: Sun, 9 Jan 1972 00:00:00 GMT\r\n\r\n"
    )
}

async fn send(stream: &mut TcpStream, head: &str, what: &'static str) -> Result<(), TunnelError> {
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|source| TunnelError::Io { what, source })
}

/// Reads the answer to the GET up to the end of its headers and checks it; returns the bytes
/// read past the headers (the start of the RTSP stream).
async fn read_answer<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Vec<u8>, TunnelError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            check_head(&buf[..end])?;
            return Ok(buf.split_off(end));
        }
        if buf.len() > MAX_HEAD {
            check_head(&buf)?;
            return Err(TunnelError::HeadTooLong);
        }
        let n = stream.read(&mut chunk).await.map_err(|source| TunnelError::Io {
            what: "reading the answer to the GET",
            source,
        })?;
        if n == 0 {
            // A status line before the close says more than "closed" (a 404 without headers).
            if !buf.is_empty() {
                check_head(&buf)?;
            }
            return Err(TunnelError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the headers end: the index just past the empty line (`\r\n\r\n`, or bare `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Checks the status line (`HTTP/1.x 200`) and, when named, the content type of the GET's
/// answer (`head`: the status line and headers, maybe incomplete).
fn check_head(head: &[u8]) -> Result<(), TunnelError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let status = lines.next().unwrap_or_default().trim();
    let mut words = status.split_whitespace();
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(TunnelError::NotHttp(excerpt(status)));
    }
    if words.next() != Some("200") {
        return Err(TunnelError::Status(excerpt(status)));
    }
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim());
    match content_type {
        Some(t) if !t.to_ascii_lowercase().starts_with(TUNNELLED) => Err(TunnelError::NotTunnel(excerpt(t))),
        _ => Ok(()),
    }
}

/// At most 80 printable ASCII characters of what a camera sent, for an error message.
fn excerpt(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(80)
        .collect()
}

/// The POST body form of bytes retina wrote.
fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Accepts one loopback connection and runs the tunnel for it.
async fn run_bridge(listener: TcpListener, tunnel: Tunnel, mut released: oneshot::Receiver<()>) {
    let accepted = tokio::select! {
        accepted = accept_loopback(&listener, "HTTP tunnel bridge") => accepted,
        _ = &mut released => return,
    };
    drop(listener);
    let Some(mut local) = accepted else { return };
    let Tunnel {
        mut get,
        early,
        mut post,
    } = tunnel;
    let (mut from_retina, mut to_retina) = local.split();
    let linger = async {
        let _ = released.await;
        tokio::time::sleep(LINGER).await;
    };
    tokio::select! {
        copied = downstream(&mut get, &early, &mut to_retina) => log_end("from the camera", copied),
        copied = upstream(&mut from_retina, &mut post) => log_end("to the camera", copied),
        () = linger => tracing::debug!("HTTP tunnel bridge closed with its connection"),
    }
}

fn log_end(direction: &str, copied: std::io::Result<u64>) {
    match copied {
        Ok(bytes) => tracing::debug!(bytes, "HTTP tunnel bridge closed: {direction} ended"),
        Err(e) => tracing::debug!("HTTP tunnel bridge closed: {direction}: {e}"),
    }
}

/// Camera to retina: the bytes that came with the GET's answer, then the GET connection as is.
async fn downstream<R, W>(get: &mut R, early: &[u8], retina: &mut W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    retina.write_all(early).await?;
    let copied = tokio::io::copy(get, retina).await?;
    Ok(early.len() as u64 + copied)
}

/// Retina to camera: each read base64-encoded onto the POST connection.
async fn upstream<R, W>(retina: &mut R, post: &mut W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = retina.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        post.write_all(encode(&buf[..n]).as_bytes()).await?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn source(port: u16) -> SourceUrl {
        SourceUrl::parse(&format!("rtsp://127.0.0.1:{port}/cam?ch=1")).unwrap()
    }

    /// Decodes a POST body made of separately padded base64 pieces, as a server does (quartet
    /// by quartet).
    fn decode_pieces(body: &[u8]) -> Vec<u8> {
        let engine = base64::engine::general_purpose::STANDARD;
        body.chunks(4).flat_map(|q| engine.decode(q).unwrap()).collect()
    }

    #[test]
    fn the_requests_carry_the_cookie_the_target_and_the_tunnel_headers() {
        let url = Url::parse("rtsp://cam.local:8554/live/ch1?sub=1").unwrap();
        let target = request_target(&url);
        assert_eq!(target, "/live/ch1?sub=1");
        assert_eq!(request_target(&Url::parse("rtsp://cam.local").unwrap()), "/");
        let get = get_request(&target, "cam.local:8554", "c00kie", "fanfare/test");
        assert_eq!(
            get,
            "GET /live/ch1?sub=1 HTTP/1.0\r\nHost: cam.local:8554\r\nUser-Agent: fanfare/test\r\n\
             x-sessioncookie: c00kie\r\nAccept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\n\
             Cache-Control: no-cache\r\n\r\n"
        );
        let post = post_request(&target, "cam.local:8554", "c00kie", "fanfare/test");
        assert!(post.starts_with("POST /live/ch1?sub=1 HTTP/1.0\r\n"), "{post}");
        for line in [
            "x-sessioncookie: c00kie\r\n",
            "Content-Type: application/x-rtsp-tunnelled\r\n",
            "Content-Length: 32767\r\n",
            "Pragma: no-cache\r\n",
            "Expires: ",
        ] {
            assert!(post.contains(line), "{line:?} in {post}");
        }
        assert!(post.ends_with("\r\n\r\n") && !post.contains("Accept:"), "{post}");
    }

    #[test]
    fn cookies_are_fresh_alphanumerics_and_ipv6_hosts_keep_their_brackets() {
        let (a, b) = (new_cookie(), new_cookie());
        assert_eq!(a.len(), 22);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        let dialer = TunnelDialer::new(&SourceUrl::parse("rtsp://u:p@[::1]/x").unwrap(), "ua");
        assert_eq!(
            (dialer.host.as_str(), dialer.host_header.as_str()),
            ("::1", "[::1]:554")
        );
    }

    #[test]
    fn answers_are_checked_for_http_200_and_the_tunnel_content_type() {
        let ok = b"HTTP/1.0 200 OK\r\nServer: cam\r\ncontent-type: Application/X-RTSP-Tunnelled\r\n\r\n";
        assert_eq!(head_end(ok), Some(ok.len()));
        check_head(ok).unwrap();
        check_head(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n\r\n").unwrap();
        assert_eq!(head_end(b"HTTP/1.0 200 OK\nA: b\n\nRTSP"), Some(22));
        assert_eq!(head_end(b"HTTP/1.0 200 OK\r\nA: b\r\n"), None);
        let cases: [(&[u8], &str); 4] = [
            (b"HTTP/1.0 404 Not Found\r\n\r\n", "\"HTTP/1.0 404 Not Found\", not 200"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
                "Content-Type \"text/html\", not application/x-rtsp-tunnelled",
            ),
            (b"RTSP/1.0 400 Bad Request\r\n\r\n", "did not answer the GET with HTTP"),
            (b"\x00\x01garbage\r\n\r\n", "(it sent \"garbage\")"),
        ];
        for (head, needle) in cases {
            let e = check_head(head).unwrap_err().to_string();
            assert!(
                e.starts_with("HTTP tunnel: ") && e.contains(needle),
                "{needle:?} not in {e:?}"
            );
        }
        assert_eq!(excerpt(&"x".repeat(200)).len(), 80);
    }

    #[tokio::test]
    async fn the_answer_is_read_to_the_end_of_its_headers_and_the_rest_kept() {
        let mut answer: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: application/x-rtsp-tunnelled\r\n\r\nRTSP/1.0 200";
        assert_eq!(read_answer(&mut answer).await.unwrap(), b"RTSP/1.0 200");
        let mut closed: &[u8] = b"HTTP/1.0 200 OK\r\n";
        assert!(matches!(read_answer(&mut closed).await, Err(TunnelError::Closed)));
        let mut bare_404: &[u8] = b"HTTP/1.0 404 Not Found\r\n";
        assert!(matches!(read_answer(&mut bare_404).await, Err(TunnelError::Status(_))));
        let endless = format!("HTTP/1.0 200 OK\r\n{}", "X-Pad: 0\r\n".repeat(1000));
        let mut endless = endless.as_bytes();
        assert!(matches!(read_answer(&mut endless).await, Err(TunnelError::HeadTooLong)));
    }

    #[tokio::test]
    async fn upstream_base64_encodes_each_read_and_downstream_passes_bytes_as_they_are() {
        let (mut retina, bridge_side) = tokio::io::duplex(64);
        let (mut from_retina, _to_retina) = tokio::io::split(bridge_side);
        let mut post = Vec::new();
        let writer = async {
            retina
                .write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
                .await
                .unwrap();
            retina.write_all(&[b'$', 1, 0, 3, 0xff, 0xfe, 0x00]).await.unwrap();
            retina.shutdown().await.unwrap();
        };
        let (_, copied) = tokio::join!(writer, upstream(&mut from_retina, &mut post));
        assert_eq!(copied.unwrap(), 38);
        assert!(post.iter().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b)));
        let mut expected = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_vec();
        expected.extend_from_slice(&[b'$', 1, 0, 3, 0xff, 0xfe, 0x00]);
        assert_eq!(decode_pieces(&post), expected);

        let mut get: &[u8] = b"$\x00\x00\x02ab";
        let mut out = Vec::new();
        let copied = downstream(&mut get, b"RTSP/1.0 200 OK\r\n\r\n", &mut out)
            .await
            .unwrap();
        assert_eq!(out, b"RTSP/1.0 200 OK\r\n\r\n$\x00\x00\x02ab");
        assert_eq!(copied, out.len() as u64);
    }

    /// What a fake tunnel server saw of one tunnel.
    struct Seen {
        get_head: String,
        post_head: String,
        /// The decoded POST body.
        body: Vec<u8>,
    }

    /// A tunnel server on loopback that answers the GET with `answer` and then `greeting`,
    /// reads the POST until it closes, and reports what it saw.
    async fn tunnel_server(answer: &'static str, greeting: &'static [u8]) -> (u16, oneshot::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut get, _) = listener.accept().await.unwrap();
            let get_head = read_head(&mut get).await;
            get.write_all(answer.as_bytes()).await.unwrap();
            get.write_all(greeting).await.unwrap();
            let Ok((mut post, _)) = listener.accept().await else {
                return;
            };
            let post_head = read_head(&mut post).await;
            let mut body = Vec::new();
            let _ = post.read_to_end(&mut body).await;
            let _ = tx.send(Seen {
                get_head,
                post_head,
                body: decode_pieces(&body),
            });
            drop(get);
        });
        (port, rx)
    }

    async fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn a_tunnel_carries_both_ways_takes_one_connection_and_ends_with_its_handle() {
        let answer = "HTTP/1.0 200 OK\r\nContent-Type: application/x-rtsp-tunnelled\r\n\r\n";
        let (port, seen) = tunnel_server(answer, b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n").await;
        let dialer = TunnelDialer::new(&source(port), "fanfare/test");
        let bridge = dialer.open(&source(port).url).await.unwrap();
        let url = bridge.url().clone();
        assert_eq!((url.scheme(), url.host_str()), ("rtsp", Some("127.0.0.1")));
        assert_eq!((url.path(), url.query()), ("/cam", Some("ch=1")));
        let bridge_port = url.port().unwrap();

        let mut local = TcpStream::connect(("127.0.0.1", bridge_port)).await.unwrap();
        let mut greeting = [0u8; 28];
        local.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
        assert!(TcpStream::connect(("127.0.0.1", bridge_port)).await.is_err());
        local.write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n").await.unwrap();
        local
            .write_all(b"TEARDOWN * RTSP/1.0\r\nCSeq: 2\r\n\r\n")
            .await
            .unwrap();

        // Dropping the handle ends the bridge within the linger: the POST closes.
        drop(bridge);
        let wait = LINGER + Duration::from_secs(2);
        let seen = tokio::time::timeout(wait, seen).await.unwrap().unwrap();
        assert_eq!(
            String::from_utf8(seen.body).unwrap(),
            "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\nTEARDOWN * RTSP/1.0\r\nCSeq: 2\r\n\r\n"
        );
        let cookie_of = |head: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix("x-sessioncookie: "))
                .map(str::to_owned)
        };
        assert!(
            seen.get_head.starts_with("GET /cam?ch=1 HTTP/1.0\r\n"),
            "{}",
            seen.get_head
        );
        assert!(
            seen.post_head.starts_with("POST /cam?ch=1 HTTP/1.0\r\n"),
            "{}",
            seen.post_head
        );
        assert!(cookie_of(&seen.get_head).is_some());
        assert_eq!(cookie_of(&seen.get_head), cookie_of(&seen.post_head));
        let n = tokio::time::timeout(wait, local.read(&mut greeting)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }

    #[tokio::test]
    async fn a_bridge_dropped_before_its_client_connects_closes_its_listener() {
        let answer = "HTTP/1.0 200 OK\r\n\r\n";
        let (port, seen) = tunnel_server(answer, b"").await;
        let bridge = TunnelDialer::new(&source(port), "ua")
            .open(&source(port).url)
            .await
            .unwrap();
        let bridge_port = bridge.url().port().unwrap();
        drop(bridge);
        let seen = tokio::time::timeout(Duration::from_secs(2), seen)
            .await
            .unwrap()
            .unwrap();
        assert!(seen.body.is_empty());
        assert!(TcpStream::connect(("127.0.0.1", bridge_port)).await.is_err());
    }

    #[tokio::test]
    async fn refusals_are_reported_before_any_rtsp() {
        let (port, _seen) = tunnel_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", b"").await;
        let e = TunnelDialer::new(&source(port), "ua")
            .open(&source(port).url)
            .await
            .err()
            .expect("refused");
        assert!(matches!(e, TunnelError::Status(_)), "{e}");
        assert!(e.to_string().contains("\"HTTP/1.1 404 Not Found\""), "{e}");

        let (port, _seen) = tunnel_server("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n", b"<html>").await;
        let e = TunnelDialer::new(&source(port), "ua")
            .open(&source(port).url)
            .await
            .err()
            .expect("refused");
        assert!(matches!(e, TunnelError::NotTunnel(_)), "{e}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = TunnelDialer::new(&source(closed), "ua")
            .open(&source(closed).url)
            .await
            .err()
            .expect("refused");
        assert!(matches!(e, TunnelError::Connect(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with("HTTP tunnel: unable to connect to the camera: "),
            "{e}"
        );
    }
}

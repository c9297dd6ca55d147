//! `rtsp-bare-read URL`: the floor under any RTSP ingest, whatever its crate. It plays one
//! camera over TCP (interleaved) with the fewest steps an RTSP client can take: DESCRIBE, a
//! SETUP per stream, PLAY, then blocking reads of 64 KiB into one buffer, splitting the
//! interleaved frames and checking each RTP header. No depacketizing, no async runtime, no
//! allocation per packet. `rtsp-ingest --bare-floor` measures it beside Fanfare, ffmpeg and
//! `retina-read`. Prints the packets and bytes read when the camera ends the session.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often the session is kept alive (GStreamer's default session timeout is 60 s).
const KEEPALIVE: Duration = Duration::from_secs(20);

/// One RTSP connection: the socket and the bytes read but not yet used.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
    session: Option<String>,
}

/// An RTSP response: its headers (lower-cased names) and body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Conn {
    /// Sends `method url` with the session (once known) and `extra` headers, and reads its
    /// response, skipping interleaved data that comes first.
    fn request(&mut self, method: &str, url: &str, extra: &str) -> Result<Response> {
        self.send(method, url, extra)?;
        loop {
            if let Some(r) = self.take_response()? {
                if !(200..300).contains(&r.status) {
                    bail!("{method} {url}: status {}", r.status);
                }
                return Ok(r);
            }
            self.fill()?;
        }
    }

    fn send(&mut self, method: &str, url: &str, extra: &str) -> Result<()> {
        self.cseq += 1;
        let session = self
            .session
            .as_deref()
            .map(|s| format!("Session: {s}\r\n"))
            .unwrap_or_default();
        let msg = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n{session}{extra}\r\n", self.cseq);
        self.stream.write_all(msg.as_bytes()).context("write")?;
        Ok(())
    }

    /// Reads more bytes onto the buffer; an error when the camera closed.
    fn fill(&mut self) -> Result<()> {
        let len = self.buf.len();
        self.buf.resize(len + 65536, 0);
        let n = self.stream.read(&mut self.buf[len..]).context("read")?;
        self.buf.truncate(len + n);
        if n == 0 {
            bail!("the camera closed the connection");
        }
        Ok(())
    }

    /// Takes one whole response off the front of the buffer, dropping interleaved frames
    /// before it; `None` until it is whole.
    fn take_response(&mut self) -> Result<Option<Response>> {
        while self.buf.first() == Some(&b'$') {
            if self.buf.len() < 4 {
                return Ok(None);
            }
            let end = 4 + u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
            if self.buf.len() < end {
                return Ok(None);
            }
            self.buf.drain(..end);
        }
        let Some(head_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head")?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .context("status line")?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body_len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let end = head_end + 4 + body_len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let body = self.buf[head_end + 4..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(Response { status, headers, body }))
    }
}

/// The control URLs of the SDP's media sections, resolved against `base`.
fn stream_urls(sdp: &str, base: &str) -> Vec<String> {
    let mut urls = Vec::new();
    let mut in_media = false;
    for line in sdp.lines() {
        if line.starts_with("m=") {
            in_media = true;
        } else if let (true, Some(control)) = (in_media, line.strip_prefix("a=control:")) {
            let control = control.trim();
            urls.push(if control.starts_with("rtsp://") {
                control.to_string()
            } else {
                format!("{}/{control}", base.trim_end_matches('/'))
            });
        }
    }
    urls
}

fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .context("usage: rtsp-bare-read rtsp://HOST:PORT/PATH")?;
    let parsed = url::Url::parse(&url).context("camera URL")?;
    let addr = format!(
        "{}:{}",
        parsed.host_str().context("camera host")?,
        parsed.port().unwrap_or(554)
    );
    let stream = TcpStream::connect(&addr).with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(1 << 17),
        cseq: 0,
        session: None,
    };
    let described = conn.request("DESCRIBE", &url, "Accept: application/sdp\r\n")?;
    let base = described.header("content-base").unwrap_or(&url).to_string();
    let sdp = String::from_utf8_lossy(&described.body).into_owned();
    let streams = stream_urls(&sdp, &base);
    if streams.is_empty() {
        bail!("the camera's SDP names no stream");
    }
    for (i, stream_url) in streams.iter().enumerate() {
        let transport = format!("Transport: RTP/AVP/TCP;unicast;interleaved={}-{}\r\n", 2 * i, 2 * i + 1);
        let r = conn.request("SETUP", stream_url, &transport)?;
        if conn.session.is_none() {
            let session = r.header("session").context("SETUP gave no session")?;
            conn.session = Some(session.split(';').next().unwrap_or(session).to_string());
        }
    }
    conn.request("PLAY", &base, "Range: npt=0.000-\r\n")?;

    let (mut packets, mut bytes, mut bad) = (0u64, 0u64, 0u64);
    let mut last_keepalive = Instant::now();
    let mut used = 0;
    let result = 'read: loop {
        if last_keepalive.elapsed() >= KEEPALIVE {
            // Its response arrives among the interleaved frames and is skipped below.
            if let Err(e) = conn.send("GET_PARAMETER", &base, "") {
                break Err(e);
            }
            last_keepalive = Instant::now();
        }
        // Split what is buffered into interleaved frames; keep a partial one for the next read.
        loop {
            let rest = &conn.buf[used..];
            match rest.first() {
                None => break,
                Some(b'$') => {
                    if rest.len() < 4 {
                        break;
                    }
                    let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
                    if rest.len() < 4 + len {
                        break;
                    }
                    let channel = rest[1];
                    let payload = &rest[4..4 + len];
                    if channel.is_multiple_of(2) {
                        if payload.len() >= 12 && payload[0] >> 6 == 2 {
                            packets += 1;
                            bytes += len as u64;
                        } else {
                            bad += 1;
                        }
                    }
                    used += 4 + len;
                }
                Some(_) => {
                    // An RTSP message (the keepalive's response): taken off whole, if it is.
                    conn.buf.drain(..used);
                    used = 0;
                    match conn.take_response() {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(e) => break 'read Err(e),
                    }
                }
            }
        }
        conn.buf.drain(..used);
        used = 0;
        if let Err(e) = conn.fill() {
            break Err(e);
        }
    };
    println!("{packets} RTP packets, {bytes} bytes, {bad} not RTP");
    match result {
        Err(e) if packets > 0 => {
            eprintln!("stopped: {e:#}");
            Ok(())
        }
        other => other,
    }
}

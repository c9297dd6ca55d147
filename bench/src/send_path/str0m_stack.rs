//! The `str0m` 0.24 stack under test: `peers` pairs of [`Rtc`] (server, client) connected in
//! memory, and the server halves sending the harness's stream.
//!
//! This file owns the str0m side of the benchmark: building the pairs, the SDP offer/answer, the
//! in-memory handshake on a simulated clock, and the per-packet send and verification.
//!
//! Configuration, per pair:
//! - server: RTP mode (`set_rtp_mode`, packets written as RTP through
//!   `direct_api().stream_tx(ssrc).write_rtp(..)`, as an SFU forwarding RTP does), ICE-lite, host
//!   candidate 127.0.0.1:10000+i; it offers one sendonly video m-line whose only codec is H.264
//!   at [`PT`] (90 kHz, packetization-mode 1) with RTX on [`PT`]+1, and whose send stream is
//!   [`SSRC`] (RTX [`SSRC`]+1);
//! - client: full ICE (controlling), RTP mode too (so that it surfaces each RTP packet as
//!   [`Event::RtpPacket`] without depacketising the synthetic payload), host candidate
//!   127.0.0.1:20000+i, same codec;
//! - everything else is str0m's default: the standard header extensions (transport-wide
//!   sequence number for TWCC, abs-send-time, mid, ...), a sender report every second, stats off,
//!   BWE off (so no pacer holds packets back), DTLS 1.2 with the aws-lc-rs crypto provider
//!   (str0m's default: AES-GCM in hardware, as `ring` is for rtc), and a
//!   video send buffer of 1000 packets kept for up to 3 s (capped at 15 % retransmitted bytes)
//!   to answer NACKs from. Packets are written `nackable` so that they go into that buffer.
//!
//! str0m picks a random SSRC for a new m-line and has no setting for it, so the offer is edited
//! to carry [`SSRC`] before the client sees it, and once the answer is in the server's send
//! stream is swapped, through the direct API, for an identical one on that SSRC.
//!
//! What differs from an SFU's real use: nothing comes back from the clients while the harness
//! sends (no receiver reports, TWCC feedback, NACKs or consent checks), so the server never
//! retransmits, keeps the mid extension on every packet (it drops it once a receiver report
//! acknowledges the SSRC) and, being ICE-lite, would drop the connection 15 s after the last
//! binding request; the harness's default 3 + 10 s of media fit within that. The payload is
//! shared by all servers behind one `Arc`, as a fan-out would hand it over.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use crate::measure::{Packet, Sent, Stack, PT, SSRC};

/// H.264 profile-level-id offered (constrained baseline, level 3.1).
const PROFILE_LEVEL_ID: u32 = 0x42e01f;
/// Rounds of the handshake loop before giving up.
const MAX_HANDSHAKE_ROUNDS: usize = 10_000;
/// How far the simulated clock moves when every pending timeout is already due.
const MIN_TICK: Duration = Duration::from_millis(1);

/// One datagram in flight between the two halves of a pair.
struct Datagram {
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

/// A server peer and the client it is connected to.
struct Pair {
    server: Rtc,
    client: Rtc,
}

/// N established str0m pairs; sending writes to the server halves only.
pub struct Str0mStack {
    pairs: Vec<Pair>,
    pt: Pt,
    ssrc: Ssrc,
    /// Last sequence number written, extended with its rollover count (str0m takes 64 bits).
    last_seq: Option<u64>,
}

/// N established server peers of this stack, and the simulated clock after setup.
/// `send_buffer` sets the server's video send buffer (packets kept for NACKs) instead of
/// str0m's default.
pub fn setup(peers: usize, send_buffer: Option<usize>) -> Result<(Box<dyn Stack>, Instant)> {
    let start = Instant::now();
    let mut pairs = Vec::with_capacity(peers);
    for i in 0..peers {
        pairs.push(Pair::negotiate(i, start, send_buffer).with_context(|| format!("pair {i}: offer/answer"))?);
    }
    let now = handshake(&mut pairs, start)?;
    let stack = Str0mStack {
        pairs,
        pt: Pt::from(PT),
        ssrc: Ssrc::from(SSRC),
        last_seq: None,
    };
    Ok((Box::new(stack), now))
}

/// The codec configuration both halves use: H.264 at [`PT`] with RTX at [`PT`] + 1, nothing else.
fn config() -> RtcConfig {
    let mut config = RtcConfig::new().clear_codecs().set_rtp_mode(true);
    config
        .codec_config()
        .add_h264(Pt::from(PT), Some(Pt::from(PT + 1)), true, PROFILE_LEVEL_ID);
    config
}

/// A host candidate on 127.0.0.1 at `base` + `i`.
fn host(base: u16, i: usize) -> Result<Candidate> {
    let port = u16::try_from(i)
        .ok()
        .and_then(|i| base.checked_add(i))
        .with_context(|| format!("no port left for peer {i} above {base}"))?;
    Candidate::host(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "udp").context("host candidate")
}

/// Replaces every whole-number occurrence of `from` in `sdp` by `to` (a=ssrc and a=ssrc-group).
fn replace_ssrc(sdp: &str, from: u32, to: u32) -> String {
    let (from, to) = (from.to_string(), to.to_string());
    sdp.split_inclusive(['\n', ' ', ':'])
        .map(|token| {
            let end = token.len() - token.ends_with(['\n', ' ', ':']) as usize;
            let word = token[..end].trim_end_matches('\r');
            if word == from {
                token.replacen(&from, &to, 1)
            } else {
                token.to_string()
            }
        })
        .collect()
}

impl Pair {
    /// Builds pair `i` at `start` (the server's video send buffer `send_buffer` packets, when
    /// set) and runs the SDP offer (server) / answer (client).
    fn negotiate(i: usize, start: Instant, send_buffer: Option<usize>) -> Result<Pair> {
        let mut server_config = config().set_ice_lite(true);
        if let Some(n) = send_buffer {
            server_config = server_config.set_send_buffer_video(n);
        }
        let mut server = server_config.build(start);
        let mut client = config().build(start);
        server
            .add_local_candidate(host(10_000, i)?)
            .context("server candidate refused")?;
        client
            .add_local_candidate(host(20_000, i)?)
            .context("client candidate refused")?;

        let mut change = server.sdp_api();
        let mid = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().context("server has no change to offer")?;

        // Give the stream our SSRC: rewrite the offer's main and RTX SSRCs, then the server's
        // stream once the answer has created it.
        let mut sdp = offer.to_sdp_string();
        let (main, rtx) = fid_group(&sdp).context("offer has no a=ssrc-group:FID line")?;
        sdp = replace_ssrc(&replace_ssrc(&sdp, main, SSRC), rtx, SSRC + 1);
        let offer = SdpOffer::from_sdp_string(&sdp).context("parse edited offer")?;

        let answer = client.sdp_api().accept_offer(offer).context("client accepts offer")?;
        server
            .sdp_api()
            .accept_answer(pending, answer)
            .context("server accepts answer")?;
        replace_stream(&mut server, mid)?;
        Ok(Pair { server, client })
    }

    /// Runs both halves' timers at `now` and exchanges datagrams until neither has anything to
    /// send; returns the earlier of the two next timeouts.
    fn pump(&mut self, now: Instant) -> Result<Instant> {
        self.server
            .handle_input(Input::Timeout(now))
            .context("server timeout")?;
        self.client
            .handle_input(Input::Timeout(now))
            .context("client timeout")?;
        let mut to_client = Vec::new();
        let mut to_server = Vec::new();
        loop {
            let server_next = drain(&mut self.server, &mut to_client, |_| ()).context("server output")?;
            let client_next = drain(&mut self.client, &mut to_server, |_| ()).context("client output")?;
            if to_client.is_empty() && to_server.is_empty() {
                return Ok(server_next.min(client_next));
            }
            deliver(&mut self.client, now, &mut to_client).context("client input")?;
            deliver(&mut self.server, now, &mut to_server).context("server input")?;
        }
    }

    /// Whether ICE, DTLS and SRTP are up on both halves.
    fn connected(&self) -> bool {
        self.server.is_connected() && self.client.is_connected()
    }
}

/// The main and RTX SSRCs of the first `a=ssrc-group:FID` line of `sdp`.
fn fid_group(sdp: &str) -> Option<(u32, u32)> {
    let line = sdp.lines().find_map(|l| l.strip_prefix("a=ssrc-group:FID "))?;
    let mut ssrcs = line.split_whitespace().map(str::parse::<u32>);
    Some((ssrcs.next()?.ok()?, ssrcs.next()?.ok()?))
}

/// Replaces the server's send stream on `mid` by one on [`SSRC`] (RTX [`SSRC`] + 1), as offered.
/// The SDP path and `declare_stream_tx` build the same stream (send buffer included); only the
/// SSRC differs. (`reset_stream_tx` would leave the stream filed under its old SSRC.)
fn replace_stream(server: &mut Rtc, mid: Mid) -> Result<()> {
    let mut api = server.direct_api();
    let old = api
        .stream_tx_by_mid(mid, None)
        .context("no send stream after the answer")?
        .ssrc();
    if old != Ssrc::from(SSRC) {
        api.remove_stream_tx(old);
        api.declare_stream_tx(Ssrc::from(SSRC), Some(Ssrc::from(SSRC + 1)), mid, None);
    }
    Ok(())
}

/// Drives every pair on one simulated clock from `start` until all are connected; returns the
/// clock then.
fn handshake(pairs: &mut [Pair], start: Instant) -> Result<Instant> {
    let mut now = start;
    for _ in 0..MAX_HANDSHAKE_ROUNDS {
        let mut next: Option<Instant> = None;
        for (i, pair) in pairs.iter_mut().enumerate() {
            if pair.connected() {
                continue;
            }
            let t = pair.pump(now).with_context(|| format!("pair {i}: handshake"))?;
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let Some(next) = next else {
            return Ok(now);
        };
        now = next.max(now + MIN_TICK);
    }
    let stuck = pairs.iter().filter(|p| !p.connected()).count();
    bail!(
        "{stuck} of {} pairs not connected after {:?} of simulated time",
        pairs.len(),
        now - start
    )
}

/// Polls `rtc` until it asks for a timeout, queueing its datagrams on `out` and handing its
/// events to `on_event`; returns the timeout.
fn drain(rtc: &mut Rtc, out: &mut Vec<Datagram>, mut on_event: impl FnMut(Event)) -> Result<Instant> {
    loop {
        match rtc.poll_output()? {
            Output::Timeout(t) => return Ok(t),
            Output::Transmit(t) => out.push(Datagram {
                proto: t.proto,
                source: t.source,
                destination: t.destination,
                contents: t.contents.to_vec(),
            }),
            Output::Event(e) => on_event(e),
        }
    }
}

/// Hands every datagram of `queue` to `rtc` as received at `now`, emptying the queue.
fn deliver(rtc: &mut Rtc, now: Instant, queue: &mut Vec<Datagram>) -> Result<()> {
    for d in queue.drain(..) {
        let receive = Receive::new(d.proto, d.source, d.destination, &d.contents).context("parse datagram")?;
        rtc.handle_input(Input::Receive(now, receive))?;
    }
    Ok(())
}

impl Str0mStack {
    /// `seq` extended to 64 bits from the previous packet's sequence number.
    fn extend_seq(&mut self, seq: u16) -> SeqNo {
        let extended = match self.last_seq {
            None => u64::from(seq),
            Some(last) => {
                let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
                last.saturating_add_signed(delta)
            }
        };
        self.last_seq = Some(extended);
        SeqNo::from(extended)
    }

    /// Writes `pkt` to server `i` and runs its timers to `pkt.now`.
    fn write(&mut self, i: usize, seq: SeqNo, payload: &Arc<[u8]>, pkt: &Packet<'_>) -> Result<()> {
        let (pt, ssrc) = (self.pt, self.ssrc);
        let server = &mut self.pairs[i].server;
        let mut api = server.direct_api();
        let stream = api
            .stream_tx(&ssrc)
            .with_context(|| format!("server {i}: no send stream {ssrc}"))?;
        stream.write_rtp(
            RtpWrite::new(pt, seq, pkt.timestamp, pkt.now, Arc::clone(payload))
                .marker(pkt.marker)
                .nackable(true),
        );
        server
            .handle_input(Input::Timeout(pkt.now))
            .with_context(|| format!("server {i}: timeout"))
    }
}

impl Stack for Str0mStack {
    fn send_all(&mut self, pkt: &Packet<'_>) -> Result<Sent> {
        let seq = self.extend_seq(pkt.seq);
        let payload: Arc<[u8]> = Arc::from(pkt.payload);
        let mut sent = Sent::default();
        for i in 0..self.pairs.len() {
            self.write(i, seq, &payload, pkt)?;
            let server = &mut self.pairs[i].server;
            let before = sent.datagrams;
            loop {
                match server.poll_output().with_context(|| format!("server {i}: output"))? {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        sent.datagrams += 1;
                        sent.bytes += t.contents.len() as u64;
                        crate::measure::wire(&t.contents);
                    }
                    Output::Event(_) => {}
                }
            }
            if sent.datagrams == before {
                bail!("server {i} sent nothing for packet {}: connection lost?", pkt.seq);
            }
        }
        Ok(sent)
    }

    fn verify(&mut self, pkt: &Packet<'_>) -> Result<usize> {
        let seq = self.extend_seq(pkt.seq);
        let payload: Arc<[u8]> = Arc::from(pkt.payload);
        let mut received = 0;
        let mut datagrams = Vec::new();
        for i in 0..self.pairs.len() {
            self.write(i, seq, &payload, pkt)?;
            let pair = &mut self.pairs[i];
            drain(&mut pair.server, &mut datagrams, |_| ()).with_context(|| format!("server {i}: output"))?;
            deliver(&mut pair.client, pkt.now, &mut datagrams).with_context(|| format!("client {i}: input"))?;
            let mut got = false;
            drain(&mut pair.client, &mut datagrams, |e| {
                if let Event::RtpPacket(p) = e {
                    got |= *p.payload == *pkt.payload;
                }
            })
            .with_context(|| format!("client {i}: output"))?;
            // The client's answers (receiver reports, TWCC feedback) are not needed.
            datagrams.clear();
            received += usize::from(got);
        }
        Ok(received)
    }
}

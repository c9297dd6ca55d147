//! A viewer's peer connection, driven by Fanfare rather than by the `webrtc` crate's
//! per-connection driver: the `rtc` sans-IO connection sits behind one mutex. The fan-out's
//! reader writes each packet into it and drains the encrypted datagrams into the outbox in its
//! own task ([`ViewerTrack::write`]), so no channel, task wake-up or driver loop pass is paid
//! per packet per viewer (that driver was 2–4 µs of the 7.3–9.5 µs a forwarded packet cost;
//! `bench/README.md`, `send-path`). One task per connection ([`io_loop`]) takes what arrives
//! (STUN, DTLS, RTCP, over UDP or ICE-TCP), runs the timers, reports the connection state and
//! hands each sender's feedback to its leg.
//!
//! Sockets are the same as a publisher's (`media/runtime.rs`): the connection's own UDP socket
//! or its seat on the shared port, and its virtual listener on the shared ICE-TCP port, all
//! sending through the outbox. Host candidates are added when the connection is built, so every
//! answer or offer carries them (no trickle from the server).

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::ice::tcp_type::TcpType;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::tcp_framing::{frame_packet, TcpFrameDecoder};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use webrtc::peer_connection::RTCSessionDescription;
use webrtc::runtime::{AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, RecvMeta, Transmit};

use super::peer::{media_stack, setting_engine, PeerRole, MAX_SDP_BYTES};
use super::probe::Probes;
use super::{lock, Media, PeerState};
use crate::error::EngineError;
use crate::metrics::EngineMetrics;

/// The client's feedback on one sent track (receiver reports, NACKs, PLI/FIR, REMB, the
/// send-side estimate), split per stream by the RTCP interceptor.
pub type Feedback = Vec<Box<dyn rtc::rtcp::Packet>>;

/// Feedback messages queued per track before more are dropped (the leg reads them at once).
const FEEDBACK_QUEUE: usize = 64;
/// Framed packets queued per ICE-TCP connection before more are dropped.
const TCP_WRITE_QUEUE: usize = 512;
/// Frames read from ICE-TCP connections queued for the connection.
const TCP_READ_QUEUE: usize = 256;
/// Bytes per received datagram (viewers receive only STUN, DTLS and RTCP).
const DATAGRAM: usize = 2048;
/// Datagrams one receive may coalesce (GRO) that the buffer holds whole. A viewer's client
/// sends a few small packets a second, rarely back to back; a larger batch loses its tail.
const MAX_GRO: usize = 2;
/// How long the loop sleeps when the connection names no timer.
const IDLE: Duration = Duration::from_secs(1);
/// How soon a timer that is still due after it ran may run again (so it cannot spin).
const TIMER_RETRY: Duration = Duration::from_millis(1);

/// What became of a packet handed to [`ViewerTrack::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Encrypted and queued for sending.
    Sent,
    /// Refused this time (the connection is not up yet, or the stack rejected the packet).
    Lost,
    /// The track or the connection is gone.
    Closed,
}

/// The connection and where its datagrams go.
struct Core {
    pc: RTCPeerConnection,
    udp: Vec<(SocketAddr, Arc<dyn AsyncUdpSocket>)>,
    /// Framed-packet queues of the accepted ICE-TCP connections, by the client's address.
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// Each sent track's feedback queue, by track id.
    feedback: HashMap<String, mpsc::Sender<Feedback>>,
    closed: bool,
}

impl Core {
    /// Sends every datagram the connection has ready: UDP into the outbox, ICE-TCP framed into
    /// its connection's queue.
    fn flush(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        while let Some(out) = self.pc.poll_write() {
            let t = out.transport;
            match t.transport_protocol {
                TransportProtocol::UDP => {
                    let socket = self.udp.iter().find(|(local, _)| *local == t.local_addr).or_else(|| {
                        self.udp
                            .iter()
                            .find(|(local, _)| local.is_ipv4() == t.peer_addr.is_ipv4())
                    });
                    if let Some((_, socket)) = socket {
                        let transmit = Transmit {
                            destination: t.peer_addr,
                            ecn: None,
                            contents: &out.message,
                            segment_size: None,
                            src_ip: None,
                        };
                        // Our sockets queue into the outbox and are always ready.
                        let _ = socket.poll_send(&mut cx, &transmit);
                    }
                }
                TransportProtocol::TCP => {
                    if let Some(queue) = self.tcp.get(&t.peer_addr) {
                        let _ = queue.try_send(frame_packet(&out.message));
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends what is ready, publishes state changes and hands RTCP to the tracks' legs.
    fn drain(&mut self, state: &watch::Sender<PeerState>) {
        self.flush();
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = event {
                state.send_replace(s);
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            if let RTCMessage::RtcpPacket(track, packets) = message {
                if let Some(queue) = self.feedback.get(&track) {
                    let _ = queue.try_send(packets);
                }
            }
        }
        // Timers and reads may have produced more to send.
        self.flush();
    }

    /// Hands the connection one received datagram or ICE-TCP frame.
    fn receive(&mut self, local: SocketAddr, peer: SocketAddr, protocol: TransportProtocol, data: BytesMut) {
        let read = self.pc.handle_read(TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: local,
                peer_addr: peer,
                ecn: None,
                transport_protocol: protocol,
            },
            message: data,
        });
        if let Err(e) = read {
            tracing::trace!(%peer, error = %e, "viewer connection refused a packet");
        }
    }
}

struct Shared {
    core: Mutex<Core>,
    /// Wakes the I/O loop after a control change (new description, close), whose timers may
    /// have moved.
    wake: Notify,
    state: watch::Sender<PeerState>,
    /// Its probes, when it estimates its bandwidth.
    probes: Option<Arc<Probes>>,
}

impl Shared {
    /// Marks the connection closed and failed (something in the stack went wrong, not `close`),
    /// so its session ends rather than waits, and wakes the I/O loop to end.
    fn fail(&self, mut core: std::sync::MutexGuard<'_, Core>) {
        core.closed = true;
        drop(core);
        self.state.send_replace(PeerState::Failed);
        self.wake.notify_one();
    }
}

/// A viewer's connection, closed when dropped. Build it on the media runtime; its methods lock
/// the connection briefly and never wait.
pub struct ViewerPeer {
    shared: Arc<Shared>,
    media: Media,
}

/// One track the viewer is sent: the leg's way into the connection, and its feedback.
pub struct ViewerTrack {
    shared: Arc<Shared>,
    sender: RTCRtpSenderId,
    feedback: Mutex<Option<mpsc::Receiver<Feedback>>>,
}

impl ViewerTrack {
    /// Encrypts `pkt` and queues its datagram for sending, in the caller's task. A panic in
    /// the stack closes this connection only, not the fan-out that called.
    pub fn write(&self, pkt: rtp::Packet) -> Written {
        let mut core = lock(&self.shared.core);
        if core.closed {
            return Written::Closed;
        }
        let sender = self.sender;
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let written = match core.pc.rtp_sender(sender) {
                None => Written::Closed,
                Some(mut sender) => match sender.write_rtp(Instant::now(), pkt) {
                    Ok(()) => Written::Sent,
                    Err(_) => Written::Lost,
                },
            };
            core.flush();
            written
        }));
        written.unwrap_or_else(|_| {
            tracing::error!("a viewer connection panicked while sending; closing it");
            self.shared.fail(core);
            Written::Closed
        })
    }

    /// Pads this track's stream `ssrc` at `kbps` for `duration` (0 kbps: stops; see
    /// `probe.rs`). False when it cannot be padded: the connection does not estimate its
    /// bandwidth, or the client negotiated no RTX for it.
    pub fn probe(&self, ssrc: u32, kbps: u32, duration: Duration) -> bool {
        self.shared.probes.as_ref().is_some_and(|p| p.set(ssrc, kbps, duration))
    }

    /// The client's feedback on this track (taken once).
    pub fn take_feedback(&self) -> Option<mpsc::Receiver<Feedback>> {
        lock(&self.feedback).take()
    }
}

/// The connection's sockets: UDP ones with the address they are named by, ICE-TCP listeners.
type Bound = (
    Vec<(SocketAddr, Arc<dyn AsyncUdpSocket>)>,
    Vec<(SocketAddr, Arc<dyn AsyncTcpListener>)>,
);

/// Binds the sockets of `media`'s next connection and returns them with its ICE credentials.
fn bind(media: &Media) -> io::Result<(Bound, Option<(String, String)>)> {
    let transport = media.transport();
    let mut udp = Vec::new();
    for addr in &transport.udp_addrs {
        let socket = std::net::UdpSocket::bind(addr.as_str())?;
        let socket = transport.runtime.wrap_udp_socket(socket)?;
        udp.push((socket.local_addr()?, socket));
    }
    let mut tcp = Vec::new();
    for addr in &transport.tcp_addrs {
        let listener = std::net::TcpListener::bind(addr.as_str())?;
        let listener = transport.runtime.wrap_tcp_listener(listener)?;
        tcp.push((listener.local_addr()?, listener));
    }
    Ok(((udp, tcp), transport.credentials))
}

/// A host candidate at `addr` (`tcp`: a passive ICE-TCP one).
fn host_candidate(addr: SocketAddr, tcp: bool) -> Result<RTCIceCandidateInit, EngineError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: if tcp { "tcp" } else { "udp" }.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type: if tcp { TcpType::Passive } else { TcpType::Unspecified },
    }
    .new_candidate_host()
    .map_err(|e| EngineError::Media(format!("cannot make a host candidate: {e}")))?;
    RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(|e| EngineError::Media(format!("cannot encode a host candidate: {e}")))
}

fn media_error(what: &str) -> impl Fn(rtc::shared::error::Error) -> EngineError + '_ {
    move |e| EngineError::Media(format!("{what}: {e}"))
}

fn sdp_error(e: rtc::shared::error::Error) -> EngineError {
    EngineError::InvalidSdp(e.to_string())
}

impl ViewerPeer {
    /// Builds a viewer's connection on fresh sockets and starts its I/O loop. Must run on the
    /// media runtime.
    pub fn new(media: &Media, metrics: &EngineMetrics) -> Result<ViewerPeer, EngineError> {
        let mut last_error = String::new();
        for _ in 0..media.bind_attempts() {
            match bind(media) {
                Ok((bound, credentials)) => return Self::build(media, metrics, bound, credentials),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(EngineError::Media(format!(
            "cannot open a peer connection: {last_error}"
        )))
    }

    fn build(
        media: &Media,
        metrics: &EngineMetrics,
        (udp, tcp): Bound,
        credentials: Option<(String, String)>,
    ) -> Result<ViewerPeer, EngineError> {
        let (engine, registry, probes) = media_stack(media, metrics, PeerRole::Viewer)?;
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(engine)
            .with_setting_engine(setting_engine(media, credentials))
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .map_err(media_error("cannot build a peer connection"))?;
        let candidates = udp
            .iter()
            .map(|(addr, _)| (*addr, false))
            .chain(tcp.iter().map(|(addr, _)| (*addr, true)));
        for (addr, is_tcp) in candidates {
            pc.add_local_candidate(host_candidate(addr, is_tcp)?)
                .map_err(media_error("cannot add a local candidate"))?;
        }
        let (state, _) = watch::channel(PeerState::New);
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                pc,
                udp: udp.clone(),
                tcp: HashMap::new(),
                feedback: HashMap::new(),
                closed: false,
            }),
            wake: Notify::new(),
            state,
            probes,
        });
        let live = metrics.rtc_viewer_connections.clone();
        live.inc();
        media.spawn(io_loop(shared.clone(), udp, tcp, live));
        Ok(ViewerPeer {
            shared,
            media: media.clone(),
        })
    }

    /// The connection state; `Connected` once DTLS is up (RTP written before that is lost).
    pub fn state(&self) -> watch::Receiver<PeerState> {
        self.shared.state.subscribe()
    }

    /// Runs `f` on the open connection, then lets the I/O loop look at its timers again.
    fn with<T>(&self, f: impl FnOnce(&mut Core) -> Result<T, EngineError>) -> Result<T, EngineError> {
        let result = {
            let mut core = lock(&self.shared.core);
            if core.closed {
                return Err(EngineError::Media("the connection is closed".into()));
            }
            f(&mut core)
        };
        self.shared.wake.notify_one();
        result
    }

    /// Adds `track` to the connection (negotiated by the next answer or offer).
    pub fn add_track(&self, track: MediaStreamTrack) -> Result<Arc<ViewerTrack>, EngineError> {
        let id = track.track_id().clone();
        let (tx, rx) = mpsc::channel(FEEDBACK_QUEUE);
        let sender = self.with(|core| {
            let sender = core
                .pc
                .add_track(track)
                .map_err(|e| EngineError::Media(format!("cannot add a track: {e}")))?;
            core.feedback.insert(id, tx);
            Ok(sender)
        })?;
        Ok(Arc::new(ViewerTrack {
            shared: self.shared.clone(),
            sender,
            feedback: Mutex::new(Some(rx)),
        }))
    }

    /// Removes the tracks whose ids are in `ids` (negotiated by the next offer).
    pub fn remove_tracks(&self, ids: &[String]) -> Result<(), EngineError> {
        self.with(|core| {
            let senders: Vec<RTCRtpSenderId> = core.pc.get_senders().collect();
            for sender in senders {
                let Some(id) = core.pc.rtp_sender(sender).map(|s| s.track().track_id().clone()) else {
                    continue;
                };
                if ids.contains(&id) {
                    core.pc
                        .remove_track(sender)
                        .map_err(|e| EngineError::Media(format!("cannot remove a track: {e}")))?;
                    core.feedback.remove(&id);
                }
            }
            Ok(())
        })
    }

    /// Answers the client's `offer`; the answer carries every candidate.
    pub fn answer(&self, offer: String) -> Result<String, EngineError> {
        let offer = RTCSessionDescription::offer(offer).map_err(sdp_error)?;
        let sdp = self.with(|core| {
            let now = Instant::now();
            core.pc.set_remote_description(now, offer).map_err(sdp_error)?;
            let answer = core.pc.create_answer(None).map_err(sdp_error)?;
            core.pc
                .set_local_description(now, answer)
                .map_err(media_error("cannot apply the answer"))?;
            local_sdp(core)
        })?;
        Ok(self.media.advertise(sdp))
    }

    /// Makes a server offer (the tracks changed); apply the client's answer with
    /// [`ViewerPeer::accept_answer`].
    pub fn offer(&self) -> Result<String, EngineError> {
        let sdp = self.with(|core| {
            let offer = core
                .pc
                .create_offer(None)
                .map_err(media_error("cannot make an offer"))?;
            core.pc
                .set_local_description(Instant::now(), offer)
                .map_err(media_error("cannot apply the offer"))?;
            local_sdp(core)
        })?;
        Ok(self.media.advertise(sdp))
    }

    /// Applies the client's answer to a server offer.
    pub fn accept_answer(&self, answer: String) -> Result<(), EngineError> {
        if answer.len() > MAX_SDP_BYTES {
            return Err(EngineError::InvalidSdp(format!(
                "the answer is larger than {MAX_SDP_BYTES} bytes"
            )));
        }
        let answer = RTCSessionDescription::answer(answer).map_err(sdp_error)?;
        self.with(|core| {
            core.pc
                .set_remote_description(Instant::now(), answer)
                .map_err(sdp_error)
        })
    }

    /// Adds trickled client candidates (SDP `candidate:` lines); returns how many.
    pub fn add_remote_candidates(&self, lines: Vec<String>) -> Result<usize, EngineError> {
        self.with(|core| {
            let mut n = 0;
            for candidate in lines {
                let init = RTCIceCandidateInit {
                    candidate,
                    ..Default::default()
                };
                core.pc
                    .add_remote_candidate(init)
                    .map_err(|e| EngineError::InvalidSdp(format!("bad candidate: {e}")))?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// The payload type `track` negotiated for `codec` (the same fmtp line if the client
    /// accepted it, else the same MIME type); `None` when the client accepted neither.
    pub fn payload_type(&self, track: &ViewerTrack, codec: &RTCRtpCodec) -> Option<u8> {
        let mut core = lock(&self.shared.core);
        let mut sender = core.pc.rtp_sender(track.sender)?;
        let codecs = &sender.get_parameters().rtp_parameters.codecs;
        let same_mime = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
            c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type)
        };
        codecs
            .iter()
            .filter(same_mime)
            .find(|c| c.rtp_codec.sdp_fmtp_line == codec.sdp_fmtp_line)
            .or_else(|| codecs.iter().find(same_mime))
            .map(|c| c.payload_type)
    }

    /// Closes the connection: its legs' writes fail from now on, its I/O loop ends and its
    /// sockets are released.
    pub fn close(&self) {
        {
            let mut core = lock(&self.shared.core);
            if !core.closed {
                let _ = core.pc.close();
                core.flush();
                core.closed = true;
                // Off the shared ports now, not when the last leg lets go.
                core.udp.clear();
                core.tcp.clear();
                core.feedback.clear();
            }
        }
        self.shared.state.send_replace(PeerState::Closed);
        self.shared.wake.notify_one();
    }
}

impl Drop for ViewerPeer {
    fn drop(&mut self) {
        self.close();
    }
}

/// The SDP of the connection's local description.
fn local_sdp(core: &mut Core) -> Result<String, EngineError> {
    core.pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| EngineError::Media("no local description".into()))
}

/// What one UDP receive gave: the socket's index and the datagrams (GRO batches split).
type Received = (usize, SocketAddr, Vec<BytesMut>);

thread_local! {
    /// The receive buffer of every connection whose I/O runs on this thread: a receive copies
    /// what it got out before it returns, so one buffer serves them all.
    static RECEIVE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; DATAGRAM * MAX_GRO]);
}

/// Receives from whichever of `udp` has something; `Err` with the socket's index when one
/// failed.
fn recv_any(
    udp: &[(SocketAddr, Arc<dyn AsyncUdpSocket>)],
) -> impl std::future::Future<Output = Result<Received, (usize, io::Error)>> + '_ {
    std::future::poll_fn(move |cx| RECEIVE.with_borrow_mut(|buf| poll_recv_any(cx, udp, buf)))
}

/// One pass of [`recv_any`] over the sockets, receiving into `buf`.
fn poll_recv_any(
    cx: &mut std::task::Context<'_>,
    udp: &[(SocketAddr, Arc<dyn AsyncUdpSocket>)],
    buf: &mut [u8],
) -> Poll<Result<Received, (usize, io::Error)>> {
    for (i, (_, socket)) in udp.iter().enumerate() {
        let len = DATAGRAM * socket.max_gro_segments().clamp(1, MAX_GRO);
        let mut meta = [RecvMeta::default()];
        let mut iov = [IoSliceMut::new(&mut buf[..len])];
        match socket.poll_recv(cx, &mut iov, &mut meta) {
            Poll::Ready(Ok(n)) if n > 0 => {
                let m = meta[0];
                let data = iov[0].get(..m.len).unwrap_or_default();
                let datagrams = data.chunks(m.stride.max(1)).map(BytesMut::from).collect();
                return Poll::Ready(Ok((i, m.addr, datagrams)));
            }
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err((i, e))),
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

/// Whether a UDP receive error leaves the socket usable (an ICMP error from a client that left).
fn transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock | TimedOut
    )
}

/// Marks the connection failed (and closed) when the I/O loop ends without `close`, e.g. by
/// a panic in the stack, so its session ends rather than waits; and counts the loop gone.
struct Ended(Arc<Shared>, prometheus::IntGauge);

impl Drop for Ended {
    fn drop(&mut self) {
        self.1.dec();
        let core = lock(&self.0.core);
        if !core.closed {
            self.0.fail(core);
        }
    }
}

/// A frame read from an ICE-TCP connection: the listener's address, the client's, the frame.
type Frame = (SocketAddr, SocketAddr, BytesMut);

/// The connection's I/O: received datagrams and ICE-TCP frames, timers, and what they produce;
/// ends when the connection is closed, dropping its sockets.
async fn io_loop(
    shared: Arc<Shared>,
    mut udp: Vec<(SocketAddr, Arc<dyn AsyncUdpSocket>)>,
    listeners: Vec<(SocketAddr, Arc<dyn AsyncTcpListener>)>,
    live: prometheus::IntGauge,
) {
    let (frames_tx, mut frames) = mpsc::channel::<Frame>(TCP_READ_QUEUE);
    let mut tasks = JoinSet::new();
    for (local, listener) in listeners {
        tasks.spawn(accept_loop(shared.clone(), local, listener, frames_tx.clone()));
    }
    drop(frames_tx);
    // Reports the connection failed if this loop ends any other way than by `close`.
    let _ended = Ended(shared.clone(), live);
    // When the timers last ran.
    let mut fired: Option<Instant> = None;
    // One timer, moved only when the connection's next deadline moves (most passes are for a
    // received packet, which leaves it where it was).
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    loop {
        let deadline = {
            let mut core = lock(&shared.core);
            if core.closed {
                break;
            }
            core.drain(&shared.state);
            core.pc.poll_timeout()
        };
        let now = Instant::now();
        let deadline = match (deadline, fired) {
            (Some(due), Some(last)) if due <= now && now < last + TIMER_RETRY => last + TIMER_RETRY,
            (Some(due), _) => due,
            (None, _) => now + IDLE,
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if timer.is_elapsed() || timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = &mut timer => {
                let now = Instant::now();
                fired = Some(now);
                let mut core = lock(&shared.core);
                if let Err(e) = core.pc.handle_timeout(now) {
                    tracing::debug!(error = %e, "viewer connection timer failed");
                }
            }
            got = recv_any(&udp), if !udp.is_empty() => match got {
                Ok((i, peer, datagrams)) => {
                    let local = udp[i].0;
                    let mut core = lock(&shared.core);
                    for d in datagrams {
                        core.receive(local, peer, TransportProtocol::UDP, d);
                    }
                }
                Err((i, e)) if !transient(&e) => {
                    tracing::debug!(error = %e, "a viewer connection's UDP socket failed");
                    udp.remove(i);
                    lock(&shared.core).udp.remove(i);
                }
                Err(_) => {}
            },
            Some((local, peer, frame)) = frames.recv() => {
                let mut core = lock(&shared.core);
                core.receive(local, peer, TransportProtocol::TCP, frame);
                while let Ok((local, peer, frame)) = frames.try_recv() {
                    core.receive(local, peer, TransportProtocol::TCP, frame);
                }
            }
        }
    }
    tasks.abort_all();
}

/// Accepts the ICE-TCP connections routed to `listener`, each with a reader (frames into
/// `frames`) and a writer (the connection's queue); the connections end with this task.
async fn accept_loop(
    shared: Arc<Shared>,
    local: SocketAddr,
    listener: Arc<dyn AsyncTcpListener>,
    frames: mpsc::Sender<Frame>,
) {
    let mut streams = JoinSet::new();
    while let Ok((stream, peer)) = listener.accept().await {
        let (tx, rx) = mpsc::channel(TCP_WRITE_QUEUE);
        lock(&shared.core).tcp.insert(peer, tx);
        streams.spawn(write_frames(stream.clone(), rx));
        streams.spawn(read_frames(shared.clone(), stream, local, peer, frames.clone()));
    }
}

async fn write_frames(stream: Arc<dyn AsyncTcpStream>, mut queue: mpsc::Receiver<Vec<u8>>) {
    while let Some(framed) = queue.recv().await {
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

async fn read_frames(
    shared: Arc<Shared>,
    stream: Arc<dyn AsyncTcpStream>,
    local: SocketAddr,
    peer: SocketAddr,
    frames: mpsc::Sender<Frame>,
) {
    let mut decoder = TcpFrameDecoder::new();
    let mut buf = vec![0u8; 4096];
    'read: loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.extend_from_slice(buf.get(..n).unwrap_or_default());
        while let Some(frame) = decoder.next_packet() {
            if frames
                .send((local, peer, BytesMut::from(frame.as_slice())))
                .await
                .is_err()
            {
                break 'read;
            }
        }
    }
    lock(&shared.core).tcp.remove(&peer);
}

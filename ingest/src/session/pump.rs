//! The RTSP side of one ingest, run as a task on the media runtime: connect (bounded by the
//! connect timeout), play, read the session's RTP packet by packet ([`super::demux`]), forward
//! every frame into the tracks' fan-outs, and on any failure or silence longer than the read
//! timeout, count it, wait (exponential backoff, jittered) and reconnect. The tracks and their
//! RTP timelines outlive connections, so subscribers see one continuous stream with a gap.
//! An `rtsps` camera is dialed through a TLS bridge ([`crate::tls`]) first, on every attempt,
//! and a camera with `"transport": "http"` through an RTSP-over-HTTP tunnel
//! ([`crate::http_tunnel`]: the GET/POST handshake is part of the attempt): retina is then
//! given the bridge's loopback URL (and speaks TCP-interleaved RTSP to it), and the bridge
//! lives as long as the connection. An `on_demand` camera starts idle (its tracks from the
//! record, or from a DESCRIBE alone), is connected when a reader comes, and let go once nobody
//! has read it for `on_demand_close_after_s` (state `idle`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use engine::metrics::EngineMetrics;
use engine::track::{Fanout, MediaKind, Source, TrackInfo, Upstream};
use futures_util::StreamExt;
use retina::client::{
    Credentials, InitialSequenceNumberPolicy, PacketItem, PlayOptions, Playing, Session, SessionOptions, SetupOptions,
    Transport,
};
use tokio::sync::watch;
use url::Url;

use super::demux::{self, Demux, Item};
use super::tracks::{self, H264Track, IngestCodec, LiveTrack, OpusTrack, StoredPlan, TrackPlan};
use super::IngestSession;
use super::TracksReady;
use crate::backoff::Backoff;
use crate::config::IngestConfig;
use crate::http_tunnel::TunnelDialer;
use crate::model::{IngestState, RtspTransport, TrackSummary};
use crate::packetize::RtpTimeline;
use crate::source::{redact_text, SourceUrl};
use crate::status::IngestStatus;
use crate::tls::{Fingerprint, TlsBridge, TlsDialer};

/// What the pump tells cameras it is (RTSP and the HTTP tunnel's requests).
const USER_AGENT: &str = concat!("fanfare/", env!("CARGO_PKG_VERSION"));

/// The loopback bridge under one retina session (TLS or HTTP tunnel), if any: only held, as
/// dropping it ends the bridge.
type Bridge = Box<dyn Send>;

/// Everything the pump needs.
pub struct Pump {
    pub id: String,
    pub participant: engine::ids::UserId,
    pub source: SourceUrl,
    /// The pinned certificate of an `rtsps` camera (without: its chain is checked against the
    /// system's roots).
    pub tls_pin: Option<Fingerprint>,
    pub transport: RtspTransport,
    pub config: IngestConfig,
    pub status: Arc<IngestStatus>,
    pub metrics: EngineMetrics,
    pub session: Addr<IngestSession>,
    pub stop: watch::Receiver<bool>,
    /// The tracks the record remembers from an earlier run: an on-demand ingest publishes them
    /// at once and connects only for a reader. Cleared once a connection has described the
    /// camera (the tracks then stand, or were replaced by what it carries now).
    pub remembered: Vec<TrackPlan>,
}

/// How one connection ended.
enum Ended {
    /// Frames flowed for a while before it ended (reset the backoff).
    AfterLive(String),
    /// It never got going.
    Failed(String),
    /// An on-demand camera nobody read: let go until someone does.
    Unread,
}

/// How often an on-demand camera's readers are counted.
const DEMAND_EVERY: Duration = Duration::from_millis(250);

impl Pump {
    /// Runs until told to stop.
    pub async fn run(mut self) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = self.run_loop() => {}
        }
        tracing::info!(ingest = %self.id, "ingest pump stopped");
    }

    async fn run_loop(&mut self) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.backoff_min_ms),
            Duration::from_millis(self.config.backoff_max_ms),
        );
        let mut tracks: Option<Vec<LiveTrack>> = None;
        let mut dialer: Option<TlsDialer> = None;
        if self.on_demand() {
            // An on-demand camera streams only for a reader: its tracks are published as the
            // record remembers them, or as a DESCRIBE alone gives them (no media), and it
            // waits idle. If the DESCRIBE fails, it is connected as any camera (and retried).
            if !self.remembered.is_empty() {
                tracks = Some(self.announce(self.remembered.clone(), false));
            } else {
                match self.describe(&mut dialer).await {
                    Ok(plans) => tracks = Some(self.announce(plans, true)),
                    Err(e) => tracing::info!(ingest = %self.id, "describing the camera failed: {}", self.redact(&e)),
                }
            }
            if tracks.is_some() {
                self.idle(fanouts_of(&tracks)).await;
            }
        } else {
            self.remembered.clear();
        }
        loop {
            let ended = self.connection(&mut tracks, &mut dialer).await;
            let message = match ended {
                Ended::AfterLive(m) => {
                    backoff.reset();
                    m
                }
                Ended::Failed(m) => m,
                Ended::Unread => {
                    backoff.reset();
                    self.idle(fanouts_of(&tracks)).await;
                    continue;
                }
            };
            let message = self.redact(&message);
            tracing::warn!(ingest = %self.id, url = %self.source.redacted, "camera session ended: {message}");
            self.status.set_error(message);
            self.status.set_state(IngestState::Retrying);
            let delay = backoff.next_delay(rand::random::<f64>());
            tokio::time::sleep(delay).await;
            // An on-demand camera that failed while nobody reads it waits for a reader rather
            // than retrying for nobody.
            let fanouts = fanouts_of(&tracks);
            if self.on_demand() && !fanouts.is_empty() && !read(&fanouts) {
                self.idle(fanouts).await;
            }
            self.status
                .reconnects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether the camera is connected only while read.
    fn on_demand(&self) -> bool {
        self.status.on_demand.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Nobody reads the camera: waits, disconnected, until a reader comes (or on-demand is
    /// turned off). Its tracks stay in the calls; their cached keyframes go, so the next
    /// viewer starts on a fresh picture.
    async fn idle(&self, fanouts: Vec<Arc<Fanout>>) {
        tracing::info!(ingest = %self.id, "nobody reads the camera: disconnected until someone does");
        self.status.set_state(IngestState::Idle);
        for f in &fanouts {
            f.forget_keyframes();
            f.set_source_idle(true);
        }
        while self.on_demand() && !read(&fanouts) {
            tokio::time::sleep(DEMAND_EVERY).await;
        }
        for f in &fanouts {
            f.set_source_idle(false);
        }
        tracing::info!(ingest = %self.id, "the camera has a reader: connecting");
        self.status.set_state(IngestState::Connecting);
    }

    fn redact(&self, text: &str) -> String {
        let secrets: Vec<&str> = self
            .source
            .credentials
            .iter()
            .flat_map(|(u, p)| [p.as_str(), u.as_str()])
            .collect();
        redact_text(text, &secrets)
    }

    /// One connection, from DESCRIBE (for `rtsps`, from the TLS handshake; for the HTTP
    /// tunnel, from its GET) until it fails.
    async fn connection(&mut self, tracks: &mut Option<Vec<LiveTrack>>, dialer: &mut Option<TlsDialer>) -> Ended {
        let connect_timeout = Duration::from_secs(self.config.connect_timeout_s);
        if let Err(e) = self
            .source
            .check_allowed(self.config.allow_remote, connect_timeout)
            .await
        {
            return Ended::Failed(e.to_string());
        }
        let attempt = async {
            let (url, bridge) = self.dial(dialer).await?;
            Ok::<_, String>((self.connect(url, tracks).await?, bridge))
        };
        // `_bridge` (rtsps, HTTP tunnel) carries the retina session's bytes: it lives as long
        // as the session.
        let ((mut session, mut demux, by_stream), _bridge) = match within(connect_timeout, attempt).await {
            Ok(c) => c,
            Err(e) => return Ended::Failed(e),
        };
        let Some(live) = tracks.as_mut() else {
            return Ended::Failed("no track to publish".into());
        };
        for t in live.iter_mut() {
            t.reconnected();
        }
        let read_timeout = Duration::from_secs(self.config.read_timeout_s);
        let started = Instant::now();
        // Moved on each forwarded frame; only consulted (and registered as a timer) while the
        // session has nothing to read, so packets in a burst cost no clock read or timer.
        let silence = tokio::time::sleep(read_timeout);
        tokio::pin!(silence);
        let mut went_live = false;
        // On demand: counted every DEMAND_EVERY; unread since when.
        let close_after = Duration::from_secs(self.config.on_demand_close_after_s);
        let mut demand = tokio::time::interval(DEMAND_EVERY);
        let mut unread_since: Option<Instant> = None;
        loop {
            let item = tokio::select! {
                biased;
                item = session.next() => item,
                () = &mut silence => {
                    return self.ended(
                        went_live,
                        started,
                        format!("no frame for {} s (read timeout)", read_timeout.as_secs()),
                    )
                }
                _ = demand.tick(), if went_live && self.on_demand() => {
                    if read(live.iter().flat_map(LiveTrack::fanouts)) {
                        unread_since = None;
                    } else if unread_since.get_or_insert_with(Instant::now).elapsed() >= close_after {
                        return Ended::Unread;
                    }
                    continue;
                }
            };
            let item = match item {
                None => return self.ended(went_live, started, "the camera closed the session".into()),
                Some(Err(e)) => return self.ended(went_live, started, e.to_string()),
                Some(Ok(item)) => item,
            };
            let PacketItem::Rtp(pkt) = item else { continue };
            let items = match demux.push(pkt) {
                Ok(items) => items,
                Err(e) => return self.ended(went_live, started, e),
            };
            if items.is_empty() {
                continue; // a packet inside a frame
            }
            let now = Instant::now();
            let mut forwarded = false;
            for item in items {
                forwarded |= self.forward(item, live, &by_stream, now);
            }
            if !forwarded {
                continue;
            }
            silence.as_mut().reset((now + read_timeout).into());
            if !went_live {
                went_live = true;
                self.status.set_state(IngestState::Live);
                tracing::info!(ingest = %self.id, url = %self.source.redacted, "camera live");
            }
        }
    }

    /// Forwards one demuxed item into its track; false when it belongs to none.
    fn forward(&self, item: Item, live: &mut [LiveTrack], by_stream: &[Option<usize>], now: Instant) -> bool {
        let stream = match &item {
            Item::Video { frame, .. } => frame.stream_id(),
            Item::Audio(frame) => frame.stream_id(),
            Item::Payload { stream, .. } => *stream,
        };
        let Some(track) = by_stream.get(stream).copied().flatten().and_then(|i| live.get_mut(i)) else {
            return false;
        };
        match item {
            Item::Video { frame, params } => {
                self.status.count_frame(frame.data().len());
                track.video(&frame, params.as_deref(), now);
            }
            Item::Audio(frame) => {
                self.status.count_frame(frame.data().len());
                track.audio(&frame, now);
            }
            Item::Payload { payload, elapsed, .. } => {
                self.status.count_frame(payload.len());
                track.payload(payload, elapsed, now);
            }
        }
        true
    }

    fn ended(&self, went_live: bool, started: Instant, message: String) -> Ended {
        // A session that delivered frames for a few seconds counts as a success for backoff.
        if went_live && started.elapsed() >= Duration::from_secs(3) {
            Ended::AfterLive(message)
        } else {
            Ended::Failed(message)
        }
    }

    /// Where retina connects for one attempt: the camera URL itself, or a bridge to the camera
    /// that must outlive the retina session: for `rtsps` a TLS bridge (TCP and TLS handshake
    /// done here, so a certificate problem is reported as such), for the `http` transport an
    /// HTTP tunnel (both HTTP requests done and the answer checked here). The TLS dialer is
    /// built on the first attempt and kept.
    async fn dial(&self, dialer: &mut Option<TlsDialer>) -> Result<(Url, Option<Bridge>), String> {
        if self.transport == RtspTransport::Http {
            let tunnel = TunnelDialer::new(&self.source, USER_AGENT)
                .open(&self.source.url)
                .await
                .map_err(|e| e.to_string())?;
            return Ok((tunnel.url().clone(), Some(Box::new(tunnel))));
        }
        if !self.source.is_tls() {
            return Ok((self.source.url.clone(), None));
        }
        let dialer = match dialer {
            Some(d) => d,
            None => dialer.insert(
                TlsDialer::new(&self.source, self.tls_pin)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        let bridge: TlsBridge = dialer.open(&self.source.url).await.map_err(|e| e.to_string())?;
        Ok((bridge.url().clone(), Some(Box::new(bridge))))
    }

    /// The tracks the camera's DESCRIBE offers (bounded by the connect timeout), without
    /// setting up or playing anything.
    async fn describe(&self, dialer: &mut Option<TlsDialer>) -> Result<Vec<TrackPlan>, String> {
        let connect_timeout = Duration::from_secs(self.config.connect_timeout_s);
        self.source
            .check_allowed(self.config.allow_remote, connect_timeout)
            .await
            .map_err(|e| e.to_string())?;
        let attempt = async {
            let (url, _bridge) = self.dial(dialer).await?;
            let session = retina::client::Session::describe(url, self.session_options())
                .await
                .map_err(|e| e.to_string())?;
            let (plans, skipped) = tracks::plan(session.streams());
            if plans.is_empty() {
                return Err(no_supported_stream(&skipped));
            }
            Ok(plans)
        };
        within(connect_timeout, attempt).await
    }

    /// How retina talks to the camera: its credentials and our user agent.
    fn session_options(&self) -> SessionOptions {
        let creds = self.source.credentials.as_ref().map(|(u, p)| Credentials {
            username: u.clone(),
            password: p.clone(),
        });
        SessionOptions::default()
            .creds(creds)
            .user_agent(USER_AGENT.to_string())
    }

    /// DESCRIBE `url`, SETUP of the chosen streams, PLAY. On the first success the tracks are
    /// created and announced to the session actor; later connections reuse them. Returns the
    /// playing session, its demuxer and, per camera stream, the index of its track.
    async fn connect(
        &mut self,
        url: Url,
        tracks: &mut Option<Vec<LiveTrack>>,
    ) -> Result<(Session<Playing>, Demux, Vec<Option<usize>>), String> {
        let mut session = retina::client::Session::describe(url, self.session_options())
            .await
            .map_err(|e| e.to_string())?;
        // Only the described session keeps the SDP: the depacketizers need its fmtp lines.
        let fmtp = demux::fmtp_by_stream(session.sdp());
        let (plans, skipped) = tracks::plan(session.streams());
        for note in &skipped {
            tracing::info!(ingest = %self.id, "{note}");
        }
        // Map camera streams onto tracks: all new on the first connection (or when the camera
        // carries other tracks than the record remembered), else by codec, in order (a
        // camera's second H.264 stream goes on to the second H.264 track).
        let fresh = match tracks.as_ref() {
            None => true,
            Some(live) => {
                !self.remembered.is_empty()
                    && (live.len() != plans.len() || live.iter().zip(&plans).any(|(t, p)| !t.plan.same_as(p)))
            }
        };
        let mut chosen: Vec<(TrackPlan, usize)> = Vec::new();
        match tracks.as_ref() {
            _ if fresh => chosen = plans.iter().cloned().enumerate().map(|(i, p)| (p, i)).collect(),
            None => {}
            Some(live) => {
                for p in &plans {
                    let free =
                        |&(i, t): &(usize, &LiveTrack)| t.plan.same_as(p) && !chosen.iter().any(|(_, c)| *c == i);
                    match live.iter().enumerate().find(free).map(|(i, _)| i) {
                        Some(i) => chosen.push((p.clone(), i)),
                        None => tracing::warn!(ingest = %self.id, stream = p.stream, codec = %p.rtp.mime_type,
                            "no track of this codec is left from the first connection; left out"),
                    }
                }
            }
        }
        if chosen.is_empty() {
            return Err(no_supported_stream(&skipped));
        }
        let transport: Transport = match self.transport {
            // The tunnel carries TCP-interleaved RTSP.
            RtspTransport::Tcp | RtspTransport::Http => Transport::default(),
            RtspTransport::Udp => "udp".parse().map_err(|e: retina::Error| e.to_string())?,
        };
        for (p, _) in &chosen {
            session
                .setup(
                    p.stream,
                    SetupOptions::default()
                        .transport(transport.clone())
                        .frame_format(retina::codec::FrameFormat::MP4),
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        // Start from the sequence numbers actually received: a shared-media server (GStreamer)
        // may send a joining client one packet older than the RTP-Info it announced, which
        // retina would otherwise treat as loss and drop the session.
        let options = PlayOptions::default().initial_seq(InitialSequenceNumberPolicy::Ignore);
        let playing = session.play(options).await.map_err(|e| e.to_string())?;
        let read: Vec<_> = chosen.iter().map(|(p, _)| (p.stream, p.read_as())).collect();
        let demux = Demux::new(playing.streams(), &fmtp, &read)?;
        let mut by_stream = vec![None; playing.streams().len()];
        for (p, i) in &chosen {
            if let Some(slot) = by_stream.get_mut(p.stream) {
                *slot = Some(*i);
            }
        }
        if fresh {
            if !self.remembered.is_empty() {
                tracing::info!(ingest = %self.id, "the camera carries other tracks than remembered: replacing them");
            }
            *tracks = Some(self.announce(chosen.into_iter().map(|(p, _)| p).collect(), true));
        }
        self.remembered.clear();
        Ok((playing, demux, by_stream))
    }

    /// Creates a track for each of `plans`, shows them in the status and hands them to the
    /// session actor to publish (`described`: the camera described them now, so the record
    /// remembers them).
    fn announce(&self, plans: Vec<TrackPlan>, described: bool) -> Vec<LiveTrack> {
        let stored = if described {
            plans.iter().map(StoredPlan::from).collect()
        } else {
            Vec::new()
        };
        // The first video track keeps the camera's latest picture.
        let first_video = plans.iter().position(|p| p.kind == MediaKind::Video);
        let live: Vec<LiveTrack> = plans
            .into_iter()
            .enumerate()
            .map(|(i, p)| self.new_track(p, Some(i) == first_video))
            .collect();
        self.status.set_tracks(
            live.iter()
                .flat_map(LiveTrack::fanouts)
                .map(|f| TrackSummary {
                    id: f.info.id.clone(),
                    kind: f.info.kind,
                    codec: f.info.codec.mime_type.clone(),
                })
                .collect(),
        );
        self.session.do_send(TracksReady {
            tracks: live.iter().flat_map(LiveTrack::fanouts).cloned().collect(),
            plans: stored,
        });
        live
    }

    fn new_track(&self, plan: TrackPlan, keeps_picture: bool) -> LiveTrack {
        let fanout = |kind, codec, stands_in_for: Option<&str>| {
            let info = TrackInfo {
                id: format!("TR_{}", engine::next_id()),
                kind,
                source: Source::Ingest,
                codec,
                publisher: self.participant.clone(),
                stands_in_for: stands_in_for.map(str::to_owned),
            };
            Fanout::new(info, Upstream::Local, self.metrics.clone())
        };
        // AAC: WebRTC viewers hear it on an Opus companion track.
        let opus = match &plan.codec {
            IngestCodec::Aac(config) => Some(OpusTrack::new(
                fanout(MediaKind::Audio, tracks::opus_codec(), None),
                config.clone(),
                plan.rtp.clock_rate,
            )),
            _ => None,
        };
        let timeline = RtpTimeline::random(plan.rtp.clock_rate);
        let picture = keeps_picture.then(|| self.status.clone());
        // H.265: WebRTC viewers that cannot take it get an H.264 companion instead.
        let h264 = (plan.codec == IngestCodec::H265).then(|| {
            H264Track::new(fanout(
                MediaKind::Video,
                tracks::h264_stand_in_codec(),
                Some("video/H265"),
            ))
        });
        let main = fanout(plan.kind, plan.rtp.clone(), None);
        LiveTrack::new(plan, main, timeline, (opus, h264), picture)
    }
}

/// Runs one attempt at the camera, failing it after `connect_timeout`.
async fn within<T>(
    connect_timeout: Duration,
    attempt: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(connect_timeout, attempt)
        .await
        .map_err(|_| format!("no answer within {} s (connect timeout)", connect_timeout.as_secs()))?
}

/// The error of a camera that offers nothing we take; `skipped` says what it offers.
fn no_supported_stream(skipped: &[String]) -> String {
    format!(
        "no supported stream (H.264/H.265 video, AAC/Opus/PCMU/PCMA audio){}",
        if skipped.is_empty() {
            String::new()
        } else {
            format!(": {}", skipped.join("; "))
        }
    )
}

/// Whether anyone reads any of the camera's tracks: a WebRTC viewer's leg, or a frame tap
/// (live HLS, a recording).
fn read<'a>(fanouts: impl IntoIterator<Item = &'a Arc<Fanout>>) -> bool {
    fanouts.into_iter().any(|f| f.subscribers() > 0 || f.wants_frames())
}

/// Every fan-out of the camera's tracks (none before its first connection).
fn fanouts_of(tracks: &Option<Vec<LiveTrack>>) -> Vec<Arc<Fanout>> {
    tracks.iter().flatten().flat_map(LiveTrack::fanouts).cloned().collect()
}

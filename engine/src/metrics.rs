//! The engine's Prometheus instruments, registered once into the server's registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Counters and gauges the actors update.
#[derive(Clone)]
pub struct EngineMetrics {
    /// Open realtime (WebSocket) connections.
    pub connections: IntGauge,
    /// Active room actors.
    pub rooms: IntGauge,
    /// Chat messages accepted.
    pub messages: IntCounter,
    /// Chat message deliveries to connections.
    pub deliveries: IntCounter,
    /// Deliveries dropped because a connection's outbox was full (the connection is closed).
    pub dropped: IntCounter,
    /// Room actors restarted after a panic.
    pub room_restarts: IntCounter,
    /// Live WebRTC sessions by kind (`publish`, `view`).
    pub rtc_sessions: IntGaugeVec,
    /// Published tracks being read.
    pub tracks: IntGauge,
    /// Subscriber legs attached to tracks.
    pub legs: IntGauge,
    /// Subscriber video legs paused because their viewer hides the video.
    pub legs_paused: IntGauge,
    /// Scaled layers running (`track/scaled.rs`): video decoded, scaled down and encoded
    /// again for viewers capped below every layer of a publisher.
    pub scaled_layers: IntGauge,
    /// Companion tracks being re-encoded in another codec (an H.265 camera's H.264, for
    /// viewers without H.265), while they have viewers.
    pub reencoded_tracks: IntGauge,
    /// RTP packets and payload bytes received from publishers.
    pub rtp_packets_in: IntCounter,
    pub rtp_bytes_in: IntCounter,
    /// RTP packets and payload bytes sent to subscribers.
    pub rtp_packets_out: IntCounter,
    pub rtp_bytes_out: IntCounter,
    /// RTP packets a slow subscriber leg lost (its queue was full).
    pub rtp_dropped: IntCounter,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests: IntCounter,
    /// Round trips measured, by `direction`: `up` (a publisher's connection, from the server's
    /// ICE consent checks), `down` (a viewer's, from its receiver reports).
    pub link_rtt: HistogramVec,
    /// NACKs received from subscribers (answered from the sender's history).
    pub nacks: IntCounter,
    /// TWCC feedback packets received from viewers' clients.
    pub twcc_feedback: IntCounter,
    /// Packets resent to subscribers on their NACKs.
    pub retransmissions: IntCounter,
    /// Changes of a subscriber leg's congestion cap, by `direction`: `down` (loss, a falling
    /// REMB or a cut of the send-side estimate lowered it), `up` (a clean period raised or
    /// lifted it).
    pub congestion_caps: IntCounterVec,
    /// Padding probes before a subscriber leg climbs a layer, by `result`: `passed` (the
    /// link carried the higher rate: the leg climbed), `failed` (the send-side estimate was
    /// cut, or loss or a falling REMB came back, while probing: the leg stayed).
    pub congestion_probes: IntCounterVec,
    /// Packets sent to subscribers as probe padding (copies of packets they already have, on
    /// the stream's RTX SSRC).
    pub probe_packets: IntCounter,
    /// Bandwidth estimates applied to subscriber legs, by `source`: `remb` (the client's),
    /// `send_side` (the server's, from the client's TWCC feedback).
    pub bandwidth_estimates: IntCounterVec,
    /// Datagrams the shared UDP port (`[rtc] udp_port`) dropped, by `reason`: `unknown` (an
    /// unknown sender and not a Binding request for a registered ICE ufrag), `queue_full`.
    pub rtc_mux_dropped: IntCounterVec,
    /// Peer connections registered on the shared UDP port (once per rtc address).
    pub rtc_mux_peers: IntGauge,
    /// Viewers' connections whose I/O task is running.
    pub rtc_viewer_connections: IntGauge,
    /// Publishers' peer connections still held (down when the connection is dropped, not when
    /// it closes: a reference kept somewhere keeps it up).
    pub rtc_publisher_connections: IntGauge,
    /// UDP send calls of the media plane (one GSO call carries several datagrams).
    pub rtc_send_calls: IntCounter,
    /// Datagrams the media plane sent.
    pub rtc_sent_datagrams: IntCounter,
    /// Datagrams the media plane dropped: its outbox was full, or the send failed.
    pub rtc_send_dropped: IntCounter,
    /// Live tracks, reported per track at scrape time.
    pub tracks_live: crate::track::TrackDirectory,
    /// Per room (label `group`): realtime connections, published tracks, viewing sessions.
    pub room_connections: IntGaugeVec,
    pub room_tracks: IntGaugeVec,
    pub room_viewers: IntGaugeVec,
}

impl EngineMetrics {
    /// Creates the instruments and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = EngineMetrics {
            connections: IntGauge::new("fanfare_connections", "Open realtime WebSocket connections")?,
            rooms: IntGauge::new("fanfare_rooms", "Active room actors")?,
            messages: IntCounter::new("fanfare_messages_total", "Chat messages accepted")?,
            deliveries: IntCounter::new(
                "fanfare_message_deliveries_total",
                "Chat messages delivered to connections",
            )?,
            dropped: IntCounter::new(
                "fanfare_message_drops_total",
                "Deliveries dropped because a connection could not keep up",
            )?,
            room_restarts: IntCounter::new("fanfare_room_restarts_total", "Room actors restarted after a panic")?,
            rtc_sessions: IntGaugeVec::new(Opts::new("fanfare_rtc_sessions", "Live WebRTC sessions"), &["kind"])?,
            tracks: IntGauge::new("fanfare_tracks", "Published tracks being read")?,
            legs: IntGauge::new("fanfare_subscriber_legs", "Subscriber legs attached to tracks")?,
            legs_paused: IntGauge::new(
                "fanfare_subscriber_legs_paused",
                "Subscriber video legs paused because their viewer hides the video",
            )?,
            scaled_layers: IntGauge::new(
                "fanfare_scaled_layers",
                "Scaled layers running: video re-encoded smaller for viewers capped below every layer",
            )?,
            reencoded_tracks: IntGauge::new(
                "fanfare_reencoded_tracks",
                "Companion tracks being re-encoded in another codec (an H.265 camera's H.264)",
            )?,
            rtp_packets_in: IntCounter::new("fanfare_rtp_packets_in_total", "RTP packets received from publishers")?,
            rtp_bytes_in: IntCounter::new(
                "fanfare_rtp_bytes_in_total",
                "RTP payload bytes received from publishers",
            )?,
            rtp_packets_out: IntCounter::new("fanfare_rtp_packets_out_total", "RTP packets sent to subscribers")?,
            rtp_bytes_out: IntCounter::new("fanfare_rtp_bytes_out_total", "RTP payload bytes sent to subscribers")?,
            rtp_dropped: IntCounter::new("fanfare_rtp_dropped_total", "RTP packets lost by slow subscriber legs")?,
            keyframe_requests: IntCounter::new(
                "fanfare_keyframe_requests_total",
                "Keyframe requests sent to publishers",
            )?,
            link_rtt: HistogramVec::new(
                HistogramOpts::new(
                    "fanfare_link_rtt_seconds",
                    "Round trips measured on publishers' (up) and viewers' (down) connections",
                )
                .buckets(vec![0.005, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.5, 3.0]),
                &["direction"],
            )?,
            nacks: IntCounter::new("fanfare_nacks_received_total", "NACKs received from subscribers")?,
            twcc_feedback: IntCounter::new(
                "fanfare_twcc_feedback_received_total",
                "TWCC feedback packets received from subscribers",
            )?,
            retransmissions: IntCounter::new(
                "fanfare_retransmissions_sent_total",
                "Packets resent to subscribers on their NACKs (RTX or not)",
            )?,
            congestion_caps: IntCounterVec::new(
                Opts::new(
                    "fanfare_congestion_cap_changes_total",
                    "Changes of subscriber legs' congestion caps",
                ),
                &["direction"],
            )?,
            congestion_probes: IntCounterVec::new(
                Opts::new(
                    "fanfare_congestion_probes_total",
                    "Padding probes before subscriber legs climbed a layer",
                ),
                &["result"],
            )?,
            probe_packets: IntCounter::new(
                "fanfare_probe_packets_sent_total",
                "Packets sent to subscribers as probe padding",
            )?,
            bandwidth_estimates: IntCounterVec::new(
                Opts::new(
                    "fanfare_bandwidth_estimates_total",
                    "Bandwidth estimates applied to subscriber legs",
                ),
                &["source"],
            )?,
            rtc_mux_dropped: IntCounterVec::new(
                Opts::new("fanfare_rtc_mux_dropped_total", "Datagrams the shared UDP port dropped"),
                &["reason"],
            )?,
            rtc_mux_peers: IntGauge::new(
                "fanfare_rtc_mux_peers",
                "Peer connections registered on the shared UDP port",
            )?,
            rtc_viewer_connections: IntGauge::new(
                "fanfare_rtc_viewer_connections",
                "Viewers' connections whose I/O task is running",
            )?,
            rtc_publisher_connections: IntGauge::new(
                "fanfare_rtc_publisher_connections",
                "Publishers' peer connections still held in memory",
            )?,
            rtc_send_calls: IntCounter::new(
                "fanfare_rtc_send_calls_total",
                "UDP send calls of the media plane (a GSO call carries several datagrams)",
            )?,
            rtc_sent_datagrams: IntCounter::new("fanfare_rtc_sent_datagrams_total", "Datagrams the media plane sent")?,
            rtc_send_dropped: IntCounter::new(
                "fanfare_rtc_send_dropped_total",
                "Datagrams the media plane dropped (outbox full or send failed)",
            )?,
            tracks_live: Default::default(),
            room_connections: IntGaugeVec::new(
                Opts::new("fanfare_room_connections", "Realtime connections in the room"),
                &["group"],
            )?,
            room_tracks: IntGaugeVec::new(
                Opts::new("fanfare_room_tracks", "Tracks published in the room"),
                &["group"],
            )?,
            room_viewers: IntGaugeVec::new(
                Opts::new("fanfare_room_viewers", "Playback sessions in the room"),
                &["group"],
            )?,
        };
        registry.register(Box::new(m.tracks_live.collector()?))?;
        m.rtc_sessions.with_label_values(&["publish"]).set(0);
        m.rtc_sessions.with_label_values(&["view"]).set(0);
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.rooms.clone()))?;
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.room_restarts.clone()))?;
        registry.register(Box::new(m.rtc_sessions.clone()))?;
        registry.register(Box::new(m.tracks.clone()))?;
        registry.register(Box::new(m.legs.clone()))?;
        registry.register(Box::new(m.legs_paused.clone()))?;
        registry.register(Box::new(m.scaled_layers.clone()))?;
        registry.register(Box::new(m.reencoded_tracks.clone()))?;
        registry.register(Box::new(m.rtp_packets_in.clone()))?;
        registry.register(Box::new(m.rtp_bytes_in.clone()))?;
        registry.register(Box::new(m.rtp_packets_out.clone()))?;
        registry.register(Box::new(m.rtp_bytes_out.clone()))?;
        registry.register(Box::new(m.rtp_dropped.clone()))?;
        registry.register(Box::new(m.keyframe_requests.clone()))?;
        registry.register(Box::new(m.link_rtt.clone()))?;
        registry.register(Box::new(m.nacks.clone()))?;
        registry.register(Box::new(m.twcc_feedback.clone()))?;
        registry.register(Box::new(m.retransmissions.clone()))?;
        registry.register(Box::new(m.congestion_caps.clone()))?;
        m.congestion_caps.with_label_values(&["down"]);
        m.congestion_caps.with_label_values(&["up"]);
        registry.register(Box::new(m.congestion_probes.clone()))?;
        m.congestion_probes.with_label_values(&["passed"]);
        m.congestion_probes.with_label_values(&["failed"]);
        registry.register(Box::new(m.probe_packets.clone()))?;
        registry.register(Box::new(m.bandwidth_estimates.clone()))?;
        m.bandwidth_estimates.with_label_values(&["remb"]);
        m.bandwidth_estimates.with_label_values(&["send_side"]);
        m.rtc_mux_dropped.with_label_values(&["unknown"]);
        m.rtc_mux_dropped.with_label_values(&["queue_full"]);
        m.rtc_mux_dropped.with_label_values(&["tcp_unknown"]);
        registry.register(Box::new(m.rtc_mux_dropped.clone()))?;
        registry.register(Box::new(m.rtc_mux_peers.clone()))?;
        registry.register(Box::new(m.rtc_viewer_connections.clone()))?;
        registry.register(Box::new(m.rtc_publisher_connections.clone()))?;
        registry.register(Box::new(m.rtc_send_calls.clone()))?;
        registry.register(Box::new(m.rtc_sent_datagrams.clone()))?;
        registry.register(Box::new(m.rtc_send_dropped.clone()))?;
        registry.register(Box::new(m.room_connections.clone()))?;
        registry.register(Box::new(m.room_tracks.clone()))?;
        registry.register(Box::new(m.room_viewers.clone()))?;
        Ok(m)
    }

    /// Instruments registered nowhere, for unit tests.
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("fresh registry accepts every instrument")
    }
}

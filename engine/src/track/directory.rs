//! Live tracks, for per-track and per-room metrics: a weak list read by a Prometheus collector
//! at scrape time, so the packet path only bumps its own atomics. A room's figures are its
//! tracks' (what came in, keyframe requests) and its viewers' legs' (what went out, NACKs).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

use super::Fanout;

const LABELS: [&str; 3] = ["track", "publisher", "kind"];
const ROOM_LABELS: [&str; 1] = ["group"];

/// One room's traffic: what its tracks received (and the keyframe requests sent for them)
/// while the room listed them, and what its viewers' legs sent and were asked to resend.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoomTraffic {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub plis: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub nacked: u64,
}

impl RoomTraffic {
    /// What was added since `earlier` (both read from the same counters).
    pub fn since(&self, earlier: &RoomTraffic) -> RoomTraffic {
        RoomTraffic {
            packets_in: self.packets_in.saturating_sub(earlier.packets_in),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            plis: self.plis.saturating_sub(earlier.plis),
            packets_out: self.packets_out.saturating_sub(earlier.packets_out),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            nacked: self.nacked.saturating_sub(earlier.nacked),
        }
    }
}

impl std::ops::AddAssign for RoomTraffic {
    fn add_assign(&mut self, o: RoomTraffic) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.plis += o.plis;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.nacked += o.nacked;
    }
}

/// The live tracks, and the collector that reports them.
#[derive(Clone, Default)]
pub struct TrackDirectory {
    tracks: Arc<Mutex<Vec<Weak<Fanout>>>>,
    /// Per group, the traffic of tracks that left its call and legs that ended: the room's
    /// figures stay totals as tracks and viewers come and go.
    gone: Arc<Mutex<BTreeMap<String, RoomTraffic>>>,
}

impl TrackDirectory {
    /// Adds a track; it drops out by itself once the track is gone.
    pub fn add(&self, track: &Arc<Fanout>) {
        if let Ok(mut t) = self.tracks.lock() {
            t.retain(|w| w.strong_count() > 0);
            t.push(Arc::downgrade(track));
        }
    }

    /// Keeps the traffic of a track that left `group`'s call, or of a leg that ended there.
    pub fn add_gone(&self, group: &str, traffic: RoomTraffic) {
        if let Ok(mut gone) = self.gone.lock() {
            *gone.entry(group.to_owned()).or_default() += traffic;
        }
    }

    fn live(&self) -> Vec<Arc<Fanout>> {
        self.tracks
            .lock()
            .map(|t| t.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    /// A collector emitting `fanfare_track_*{track,publisher,kind}` for every live track and
    /// `fanfare_room_*{group}` traffic for every group that has had a track or a viewer.
    pub fn collector(&self) -> Result<TrackCollector, prometheus::Error> {
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &LABELS);
        let room = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &ROOM_LABELS);
        Ok(TrackCollector {
            room_packets_in: room(
                "fanfare_room_packets_in",
                "RTP packets received on the tracks published in the room",
            )?,
            room_bytes_in: room(
                "fanfare_room_bytes_in",
                "RTP payload bytes received on the tracks published in the room",
            )?,
            room_packets_out: room("fanfare_room_packets_out", "RTP packets sent to the room's viewers")?,
            room_bytes_out: room("fanfare_room_bytes_out", "RTP payload bytes sent to the room's viewers")?,
            room_nacked: room(
                "fanfare_room_nacked_packets",
                "Packets the room's viewers asked to have resent (NACK)",
            )?,
            room_plis: room(
                "fanfare_room_keyframe_requests",
                "Keyframe requests sent for the tracks published in the room",
            )?,
            room_legs: room("fanfare_room_subscriber_legs", "Subscriber legs of the room's viewers")?,
            directory: self.clone(),
            packets_in: gauge("fanfare_track_packets_in", "RTP packets received on this track")?,
            bytes_in: gauge("fanfare_track_bytes_in", "RTP payload bytes received on this track")?,
            packets_out: gauge(
                "fanfare_track_packets_out",
                "RTP packets sent to this track's subscribers",
            )?,
            bytes_out: gauge(
                "fanfare_track_bytes_out",
                "RTP payload bytes sent to this track's subscribers",
            )?,
            dropped: gauge(
                "fanfare_track_dropped",
                "RTP packets slow subscribers of this track lost",
            )?,
            plis: gauge(
                "fanfare_track_keyframe_requests",
                "Keyframe requests sent for this track",
            )?,
            nacked: gauge(
                "fanfare_track_nacked_packets",
                "Packets this track's subscribers asked to have resent (NACK)",
            )?,
            subscribers: gauge("fanfare_track_subscribers", "Subscriber legs of this track")?,
        })
    }
}

/// Reports every live track's counters at scrape time.
pub struct TrackCollector {
    directory: TrackDirectory,
    packets_in: IntGaugeVec,
    bytes_in: IntGaugeVec,
    packets_out: IntGaugeVec,
    bytes_out: IntGaugeVec,
    dropped: IntGaugeVec,
    plis: IntGaugeVec,
    nacked: IntGaugeVec,
    subscribers: IntGaugeVec,
    room_packets_in: IntGaugeVec,
    room_bytes_in: IntGaugeVec,
    room_packets_out: IntGaugeVec,
    room_bytes_out: IntGaugeVec,
    room_nacked: IntGaugeVec,
    room_plis: IntGaugeVec,
    room_legs: IntGaugeVec,
}

impl TrackCollector {
    fn all(&self) -> [&IntGaugeVec; 15] {
        [
            &self.packets_in,
            &self.bytes_in,
            &self.packets_out,
            &self.bytes_out,
            &self.dropped,
            &self.plis,
            &self.nacked,
            &self.subscribers,
            &self.room_packets_in,
            &self.room_bytes_in,
            &self.room_packets_out,
            &self.room_bytes_out,
            &self.room_nacked,
            &self.room_plis,
            &self.room_legs,
        ]
    }
}

impl Collector for TrackCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.all().into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for g in self.all() {
            g.reset();
        }
        let mut rooms: BTreeMap<String, (RoomTraffic, u64)> = self
            .directory
            .gone
            .lock()
            .map(|g| g.iter().map(|(k, v)| (k.clone(), (*v, 0))).collect())
            .unwrap_or_default();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for t in self.directory.live() {
            let kind = match t.info.kind {
                super::MediaKind::Audio => "audio",
                super::MediaKind::Video => "video",
            };
            let labels = [t.info.id.as_str(), t.info.publisher.as_str(), kind];
            let c = &t.counters;
            let sent = t.sent(|leg, traffic| {
                let r = rooms.entry(leg.room.as_str().to_owned()).or_default();
                r.0 += traffic;
                r.1 += 1;
            });
            for (group, traffic) in t.room_traffic() {
                rooms.entry(group.as_str().to_owned()).or_default().0 += traffic;
            }
            let set = |g: &IntGaugeVec, v: u64| g.with_label_values(&labels).set(v as i64);
            set(&self.packets_in, get(&c.packets_in));
            set(&self.bytes_in, get(&c.bytes_in));
            set(&self.packets_out, sent.packets_out);
            set(&self.bytes_out, sent.bytes_out);
            set(&self.dropped, get(&c.dropped));
            set(&self.plis, get(&c.plis));
            set(&self.nacked, sent.nacked);
            set(&self.subscribers, t.subscribers() as u64);
        }
        for (group, (r, legs)) in &rooms {
            let labels = [group.as_str()];
            let set = |g: &IntGaugeVec, v: u64| g.with_label_values(&labels).set(v as i64);
            set(&self.room_packets_in, r.packets_in);
            set(&self.room_bytes_in, r.bytes_in);
            set(&self.room_packets_out, r.packets_out);
            set(&self.room_bytes_out, r.bytes_out);
            set(&self.room_nacked, r.nacked);
            set(&self.room_plis, r.plis);
            set(&self.room_legs, *legs);
        }
        self.all().into_iter().flat_map(|g| g.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{GroupId, UserId};
    use crate::metrics::EngineMetrics;
    use crate::track::{MediaKind, Source, TrackInfo, Upstream};
    use rtc::rtp;
    use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

    fn room_gauge(collector: &TrackCollector, name: &str, group: &str) -> Option<i64> {
        collector
            .collect()
            .into_iter()
            .find(|f| f.name() == name)?
            .get_metric()
            .iter()
            .find(|m| m.get_label().iter().any(|l| l.value() == group))
            .map(|m| m.get_gauge().get_value() as i64)
    }

    fn packet(seq: u16) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.sequence_number = seq;
        p.payload = bytes::Bytes::from_static(&[1; 100]);
        p
    }

    #[test]
    fn a_room_keeps_what_came_in_while_it_listed_the_track_after_the_track_leaves() {
        let metrics = EngineMetrics::new(&prometheus::Registry::new()).expect("metrics");
        let info = TrackInfo {
            id: "t1".into(),
            kind: MediaKind::Audio,
            source: Source::Microphone,
            codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                ..Default::default()
            },
            publisher: UserId::new("pub").expect("user"),
            stands_in_for: None,
        };
        let track = Fanout::new(info, Upstream::Local, metrics.clone());
        let collector = metrics.tracks_live.collector().expect("collector");
        let (a, b) = (GroupId::new("a").expect("a"), GroupId::new("b").expect("b"));
        track.forward(packet(1)); // before any room lists it: no room's
        track.enter_room(&a);
        for seq in 2..5 {
            track.forward(packet(seq));
        }
        track.enter_room(&b);
        track.forward(packet(5));
        assert_eq!(room_gauge(&collector, "fanfare_room_packets_in", "a"), Some(4));
        assert_eq!(room_gauge(&collector, "fanfare_room_packets_in", "b"), Some(1));
        track.leave_room(&a);
        track.forward(packet(6));
        assert_eq!(
            room_gauge(&collector, "fanfare_room_packets_in", "a"),
            Some(4),
            "kept, not grown"
        );
        track.enter_room(&a);
        track.forward(packet(7));
        assert_eq!(
            room_gauge(&collector, "fanfare_room_packets_in", "a"),
            Some(5),
            "counted from its return"
        );
        assert_eq!(room_gauge(&collector, "fanfare_room_bytes_in", "b"), Some(300));
        drop(track);
        assert_eq!(
            room_gauge(&collector, "fanfare_room_packets_in", "b"),
            Some(3),
            "kept once the track is gone"
        );
    }
}

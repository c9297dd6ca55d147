//! [`NackHistory`]: the NACK responder of every connection of ours. It keeps the last packets
//! of each outgoing stream that the client negotiated NACK for, and answers the client's NACKs
//! by sending them again (as RFC 4588 retransmissions where RTX was negotiated), tagged
//! [`Attribute::Retransmission`] so that the bandwidth estimate below counts them as new bytes.
//!
//! It does what the `rtc` crate's `NackResponderInterceptor` does, in less memory, and with a
//! shorter ring for audio streams. That one keeps each packet whole (an `rtp::Packet` is 112
//! bytes before its payload, and a ring of 256 was about 29 KB of every viewer's connection). A
//! packet as it leaves a viewer leg has a plain header (no CSRCs, no header extensions: the
//! transport-wide number is added later, wire-most), so a kept packet is its sequence number,
//! timestamp, payload type, marker and payload (shared with the publisher's packet): 48 bytes.
//! Any other header is kept whole, boxed.
//!
//! It also sends the padding of a running probe (`probe.rs`): after the last packet of each
//! frame of a probed stream, copies of that stream's newest kept packets, as retransmissions
//! on its RTX SSRC, to the amount the probe owes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use rtc::interceptor::{Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::header::Header;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;

use super::probe::{ProbeSlot, Probes};

/// Padding packets sent after one frame, at most.
const MAX_PADDING_PACKETS: u16 = 32;
/// What a packet costs on the wire beyond its payload, as the send-side estimate counts it
/// (RTP header, transport-wide number, SRTP tag).
const PACKET_OVERHEAD: usize = 12 + 8 + 16;

/// One kept packet.
struct Kept {
    head: Head,
    payload: Bytes,
}

/// A kept packet's header: its variable fields when the rest is plain, or all of it.
enum Head {
    Plain {
        sequence_number: u16,
        timestamp: u32,
        payload_type: u8,
        marker: bool,
    },
    Whole(Box<Header>),
}

impl Kept {
    fn new(packet: &rtc::rtp::Packet) -> Kept {
        let h = &packet.header;
        let plain = h.version == 2 && !h.padding && !h.extension && h.csrc.is_empty() && h.extensions.is_empty();
        let head = if plain {
            Head::Plain {
                sequence_number: h.sequence_number,
                timestamp: h.timestamp,
                payload_type: h.payload_type,
                marker: h.marker,
            }
        } else {
            Head::Whole(Box::new(h.clone()))
        };
        Kept {
            head,
            payload: packet.payload.clone(),
        }
    }

    fn sequence_number(&self) -> u16 {
        match &self.head {
            Head::Plain { sequence_number, .. } => *sequence_number,
            Head::Whole(h) => h.sequence_number,
        }
    }

    /// The packet as it was sent on stream `ssrc`.
    fn packet(&self, ssrc: u32) -> rtc::rtp::Packet {
        let header = match &self.head {
            Head::Plain {
                sequence_number,
                timestamp,
                payload_type,
                marker,
            } => Header {
                version: 2,
                marker: *marker,
                payload_type: *payload_type,
                sequence_number: *sequence_number,
                timestamp: *timestamp,
                ssrc,
                ..Default::default()
            },
            Head::Whole(h) => (**h).clone(),
        };
        rtc::rtp::Packet {
            header,
            payload: self.payload.clone(),
        }
    }
}

/// One outgoing stream: its ring of kept packets (indexed by sequence number) and its RTX.
struct Stream {
    kept: Box<[Option<Kept>]>,
    /// RTX SSRC and payload type, where negotiated.
    rtx: Option<(u32, u8)>,
    rtx_sequence_number: u16,
    /// Its probe, where one can run (video with RTX, on a connection that probes).
    probe: Option<Arc<ProbeSlot>>,
}

impl Stream {
    fn slot(&mut self, seq: u16) -> &mut Option<Kept> {
        let mask = self.kept.len() - 1;
        &mut self.kept[usize::from(seq) & mask]
    }

    /// The packet to send again for `seq`, if it is still kept.
    fn resend(&mut self, ssrc: u32, seq: u16) -> Option<rtc::rtp::Packet> {
        let kept = self.slot(seq).as_ref().filter(|k| k.sequence_number() == seq)?;
        let original = kept.packet(ssrc);
        let Some((rtx_ssrc, rtx_pt)) = self.rtx else {
            return Some(original);
        };
        // RFC 4588: the original sequence number, then the original payload.
        let mut payload = BytesMut::with_capacity(2 + original.payload.len());
        payload.put_u16(seq);
        payload.put_slice(&original.payload);
        let sequence_number = self.rtx_sequence_number;
        self.rtx_sequence_number = sequence_number.wrapping_add(1);
        Some(rtc::rtp::Packet {
            header: Header {
                version: 2,
                marker: original.header.marker,
                payload_type: rtx_pt,
                sequence_number,
                timestamp: original.header.timestamp,
                ssrc: rtx_ssrc,
                ..Default::default()
            },
            payload: payload.freeze(),
        })
    }

    /// The padding a running probe owes after the frame that ended with packet `last`:
    /// retransmissions of the newest kept packets, back from `last`, until they cover it.
    fn padding(&mut self, ssrc: u32, last: u16, now: Instant) -> Vec<rtc::rtp::Packet> {
        let owed = self.probe.as_ref().map_or(0, |p| p.take_owed(now));
        let mut out = Vec::new();
        let mut bytes = 0;
        let most = self.kept.len().min(usize::from(MAX_PADDING_PACKETS)) as u16;
        for back in 0..most {
            if bytes >= owed {
                break;
            }
            if let Some(packet) = self.resend(ssrc, last.wrapping_sub(back)) {
                bytes += packet.payload.len() + PACKET_OVERHEAD;
                out.push(packet);
            }
        }
        if let Some(probe) = self.probe.as_ref().filter(|_| !out.is_empty()) {
            probe.sent(out.len(), bytes);
        }
        out
    }
}

/// The NACK responder interceptor (see the module doc).
pub struct NackHistory {
    /// Packets kept per video stream and per audio stream; powers of two.
    video: usize,
    audio: usize,
    streams: HashMap<u32, Stream>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    /// The connection's probes, if it probes (a viewer's, estimating its bandwidth).
    probes: Option<Arc<Probes>>,
}

impl NackHistory {
    /// Keeps the last `video` packets of each video stream and `audio` of each audio stream
    /// (each rounded up to a power of two).
    pub fn new(video: u16, audio: u16) -> Self {
        let ring = |n: u16| usize::from(n.max(1)).next_power_of_two();
        NackHistory {
            video: ring(video),
            audio: ring(audio),
            streams: HashMap::new(),
            read: VecDeque::new(),
            write: VecDeque::new(),
            probes: None,
        }
    }

    /// Also sends the padding of `probes`' probes.
    pub fn with_probes(self, probes: Arc<Probes>) -> Self {
        NackHistory {
            probes: Some(probes),
            ..self
        }
    }

    fn on_nack(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(stream) = self.streams.get_mut(&nack.media_ssrc) else {
            return;
        };
        for pair in &nack.nacks {
            let lost = (0..16u16)
                .filter(|bit| pair.lost_packets & (1 << bit) != 0)
                .map(|bit| pair.packet_id.wrapping_add(bit + 1));
            for seq in std::iter::once(pair.packet_id).chain(lost) {
                if let Some(packet) = stream.resend(nack.media_ssrc, seq) {
                    self.write.push_back(TaggedPacket {
                        now,
                        transport: TransportContext::default(),
                        message: AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission),
                    });
                }
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackHistory {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(pkts) = &msg.message.packet {
            for nack in pkts
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
            {
                self.on_nack(msg.now, nack);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let mut padding = Vec::new();
        if let Packet::Rtp(p) = &msg.message.packet {
            if let Some(stream) = self.streams.get_mut(&p.header.ssrc) {
                *stream.slot(p.header.sequence_number) = Some(Kept::new(p));
                if p.header.marker {
                    padding = stream.padding(p.header.ssrc, p.header.sequence_number, msg.now);
                }
            }
        }
        let now = msg.now;
        self.write.push_back(msg);
        for packet in padding {
            self.write.push_back(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(packet)),
            });
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }

    fn handle_timeout(&mut self, _: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for NackHistory {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|fb| fb.typ == "nack" && fb.parameter.is_empty());
        if nack {
            let audio = info.mime_type.to_ascii_lowercase().starts_with("audio/");
            let size = if audio { self.audio } else { self.video };
            let rtx = info.ssrc_rtx.zip(info.payload_type_rtx);
            let probe = match &self.probes {
                Some(probes) if !audio && rtx.is_some() => Some(probes.open(info.ssrc)),
                _ => None,
            };
            let stream = Stream {
                kept: (0..size).map(|_| None).collect(),
                rtx,
                rtx_sequence_number: 0,
                probe,
            };
            self.streams.insert(info.ssrc, stream);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if self.streams.remove(&info.ssrc).is_some_and(|s| s.probe.is_some()) {
            if let Some(probes) = &self.probes {
                probes.close(info.ssrc);
            }
        }
    }

    fn bind_remote_stream(&mut self, _: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::RTCPFeedback;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    fn stream(rtx: Option<(u32, u8)>) -> StreamInfo {
        StreamInfo {
            ssrc: 7,
            ssrc_rtx: rtx.map(|r| r.0),
            payload_type_rtx: rtx.map(|r| r.1),
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: String::new(),
            }],
            ..Default::default()
        }
    }

    fn sent(seq: u16) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: Header {
                    version: 2,
                    marker: seq.is_multiple_of(2),
                    payload_type: 102,
                    sequence_number: seq,
                    timestamp: 90 * u32::from(seq),
                    ssrc: 7,
                    ..Default::default()
                },
                payload: Bytes::from(vec![seq as u8; 100]),
            })),
        }
    }

    fn nack(first: u16, lost: u16) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: 7,
                nacks: vec![NackPair {
                    packet_id: first,
                    lost_packets: lost,
                }],
            })])),
        }
    }

    /// Sends 0..n through `h`, then returns the retransmissions `request` brings.
    fn resent(h: &mut NackHistory, n: u16, request: TaggedPacket) -> Vec<TaggedPacket> {
        for seq in 0..n {
            h.handle_write(sent(seq)).expect("write");
            assert!(h.poll_write().is_some(), "what is sent passes on");
        }
        h.handle_read(request).expect("read");
        assert!(h.poll_read().is_some(), "the NACK itself passes on");
        std::iter::from_fn(|| h.poll_write()).collect()
    }

    fn rtp(p: &TaggedPacket) -> &rtc::rtp::Packet {
        match &p.message.packet {
            Packet::Rtp(p) => p,
            _ => panic!("not RTP"),
        }
    }

    #[test]
    fn a_nack_gets_the_kept_packets_back_as_sent_and_tagged() {
        let mut h = NackHistory::new(16, 4);
        h.bind_local_stream(&stream(None));
        // Packet 10 and, by the bitmap, 11 and 13.
        let out = resent(&mut h, 20, nack(10, 0b101));
        let seqs: Vec<u16> = out.iter().map(|p| rtp(p).header.sequence_number).collect();
        assert_eq!(seqs, [10, 11, 13]);
        for p in &out {
            assert!(p.message.has(&Attribute::Retransmission));
            let r = rtp(p);
            let original = sent(r.header.sequence_number);
            assert_eq!(r, rtp(&original), "header and payload as first sent");
        }
    }

    #[test]
    fn packets_older_than_the_history_are_not_resent() {
        let mut h = NackHistory::new(16, 4);
        h.bind_local_stream(&stream(None));
        // 0..40 sent: 24..40 kept; 3 (overwritten by 19, then 35) and 50 (never sent) are not.
        assert!(resent(&mut h, 40, nack(3, 0)).is_empty());
        assert!(resent(&mut h, 0, nack(50, 0)).is_empty());
        assert_eq!(resent(&mut h, 0, nack(39, 0)).len(), 1);
    }

    #[test]
    fn with_rtx_a_retransmission_carries_the_original_number_on_the_rtx_stream() {
        let mut h = NackHistory::new(16, 4);
        h.bind_local_stream(&stream(Some((8, 103))));
        let out = resent(&mut h, 5, nack(3, 0b1));
        assert_eq!(out.len(), 2);
        for (i, p) in out.iter().enumerate() {
            let r = rtp(p);
            assert_eq!((r.header.ssrc, r.header.payload_type), (8, 103));
            assert_eq!(r.header.sequence_number, i as u16, "RTX numbering of its own");
            let original = 3 + i as u16;
            assert_eq!(&r.payload[..2], &original.to_be_bytes());
            assert_eq!(&r.payload[2..], &rtp(&sent(original)).payload[..]);
        }
    }

    #[test]
    fn an_audio_stream_keeps_fewer_packets() {
        let mut h = NackHistory::new(16, 4);
        h.bind_local_stream(&StreamInfo {
            mime_type: "audio/opus".to_owned(),
            ..stream(None)
        });
        // 0..10 sent: 6..10 kept.
        assert!(resent(&mut h, 10, nack(5, 0)).is_empty());
        assert_eq!(resent(&mut h, 0, nack(6, 0b111)).len(), 4);
    }

    #[test]
    fn a_kept_packet_is_48_bytes() {
        assert!(std::mem::size_of::<Option<Kept>>() <= 48);
    }

    #[test]
    fn streams_without_nack_are_not_kept() {
        let mut h = NackHistory::new(16, 4);
        h.bind_local_stream(&StreamInfo {
            ssrc: 7,
            ..Default::default()
        });
        assert!(resent(&mut h, 5, nack(3, 0)).is_empty());
    }

    #[test]
    fn a_probed_stream_is_padded_after_each_frame_with_copies_on_its_rtx() {
        let probes = Probes::new(prometheus::IntCounter::new("p", "p").expect("counter"));
        let mut h = NackHistory::new(16, 4).with_probes(probes.clone());
        h.bind_local_stream(&stream(Some((8, 103))));
        // 800 kbps: 100 bytes a millisecond.
        assert!(probes.set(7, 800, std::time::Duration::from_secs(60)));
        let t = Instant::now();
        let mut write = |seq: u16, ms: u64| {
            let mut p = sent(seq);
            p.now = t + std::time::Duration::from_millis(ms);
            h.handle_write(p).expect("write");
            std::iter::from_fn(|| h.poll_write()).collect::<Vec<_>>()
        };
        // The first frame's end starts the clock: nothing owed yet.
        assert_eq!(write(0, 0).len(), 1);
        assert_eq!(write(1, 5).len(), 1, "no padding inside a frame");
        // 10 ms later 1,000 bytes are owed: more than the three packets kept, so all three
        // follow the frame's last, newest first, on the RTX stream.
        let out = write(2, 10);
        let seqs: Vec<(u32, u16)> = out
            .iter()
            .map(|p| (rtp(p).header.ssrc, rtp(p).header.sequence_number))
            .collect();
        assert_eq!(seqs, [(7, 2), (8, 0), (8, 1), (8, 2)]);
        let originals: Vec<&[u8]> = out[1..].iter().map(|p| &rtp(p).payload[..2]).collect();
        assert_eq!(originals, [[0, 2], [0, 1], [0, 0]]);
        assert_eq!(probes.packets.get(), 3);
        // Stopped: no more.
        assert!(probes.set(7, 0, std::time::Duration::ZERO));
        assert_eq!(write(4, 40).len(), 1);
        // Unbound: the stream can no longer be probed.
        h.unbind_local_stream(&stream(Some((8, 103))));
        assert!(!probes.set(7, 800, std::time::Duration::from_secs(1)));
    }
}

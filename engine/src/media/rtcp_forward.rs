//! An interceptor that hands a connection's feedback up to the application, one stream at a
//! time: keyframe requests (PLI, FIR), NACKs (counted per track; the NACK responder answers
//! them), receiver reports (their loss drives a viewer's layer),
//! the client's estimate (REMB) and, on a viewer's connection, the server's own send-side
//! estimate ([`SendSideBwe`]: this interceptor also numbers the packets sent with
//! transport-wide sequence numbers and reads the client's TWCC feedback), and counts NACKs.
//! Without it, `webrtc` 0.21 consumes all inbound RTCP inside its interceptor chain and
//! `TrackLocal::poll` never sees a subscriber's PLI. It sits wire-most, so it numbers
//! retransmissions too and passes inbound RTCP on to the NACK responder unchanged.
//!
//! The crate routes a delivered compound packet whole to the track of its first packet's first
//! SSRC, so a receiver report covering audio and video would reach only one of the two. Here
//! each stream gets a message of its own, holding only what concerns it. A connection-wide
//! estimate (REMB, send-side) is split between the video streams by their share of the bytes
//! the connection sent over the last second.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;

use super::bwe::{Estimate, SendSideBwe};
use super::estimate::SendSideEstimate;

/// How long the byte counts behind the streams' shares of an estimate run before the shares
/// are worked out again.
const SHARE_WINDOW: Duration = Duration::from_secs(1);

/// Every transport-wide sequence number as its header extension payload (big-endian), so
/// numbering a packet takes a static slice instead of allocating one (and the NACK history's
/// copies of the packet share it for free).
static SEQ_PAYLOADS: [[u8; 2]; 1 << 16] = {
    let mut table = [[0u8; 2]; 1 << 16];
    let mut i = 0;
    while i < table.len() {
        table[i] = (i as u16).to_be_bytes();
        i += 1;
    }
    table
};

/// One outgoing stream of the connection.
struct LocalStream {
    video: bool,
    /// Payload bytes sent since the window began.
    bytes: u64,
    /// Its share of the bytes sent in the last complete window.
    share: Option<f64>,
    /// The header extension id negotiated for transport-wide sequence numbers.
    twcc_ext: Option<u8>,
}

/// What an [`RtcpForward`] counts, connection-wide metrics shared by every connection.
#[derive(Clone)]
pub struct FeedbackCounters {
    /// NACK packets received.
    pub nacks: prometheus::IntCounter,
    /// TWCC feedback packets received.
    pub twcc_feedback: prometheus::IntCounter,
    /// Packets resent on a NACK (RTX or not), as they leave.
    pub retransmissions: prometheus::IntCounter,
}

/// Splits inbound feedback per stream for delivery to the application and counts NACKs.
pub struct RtcpForward {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    counters: FeedbackCounters,
    local: HashMap<u32, LocalStream>,
    /// The stream of each RTX SSRC (RFC 4588 retransmissions, numbered like any packet).
    rtx: HashMap<u32, u32>,
    window_start: Option<Instant>,
    /// Whether to estimate (viewers' connections).
    estimate: bool,
    /// Made when the first packet is numbered.
    bwe: Option<SendSideBwe>,
}

impl RtcpForward {
    /// A forwarder counting NACKs, TWCC feedback packets and retransmissions; with `estimate`,
    /// it also numbers the packets of streams that negotiated transport-wide congestion control
    /// and estimates the connection's bandwidth from the client's feedback.
    pub fn new(counters: FeedbackCounters, estimate: bool) -> Self {
        RtcpForward {
            read: VecDeque::new(),
            write: VecDeque::new(),
            counters,
            local: HashMap::new(),
            rtx: HashMap::new(),
            window_start: None,
            estimate,
            bwe: None,
        }
    }

    /// Stream `ssrc`'s share of what the connection sends (`None`: not known yet, or not ours).
    fn share(&mut self, ssrc: u32, now: Instant) -> Option<f64> {
        let start = *self.window_start.get_or_insert(now);
        let unknown = self.local.values().any(|s| s.share.is_none());
        if now.saturating_duration_since(start) >= SHARE_WINDOW || unknown {
            let total: u64 = self.local.values().map(|s| s.bytes).sum();
            if total > 0 {
                for s in self.local.values_mut() {
                    s.share = Some(s.bytes as f64 / total as f64);
                    s.bytes = 0;
                }
                self.window_start = Some(now);
            }
        }
        self.local.get(&ssrc).and_then(|s| s.share)
    }

    /// The feedback in `pkts` (and the send-side estimate `target`, if it has news), as one
    /// list per stream, each led by a packet whose first destination is that stream.
    fn per_stream(
        &mut self,
        pkts: &[Box<dyn rtc::rtcp::Packet>],
        target: Option<Estimate>,
        now: Instant,
    ) -> Vec<(u32, Vec<Box<dyn rtc::rtcp::Packet>>)> {
        let mut out: Vec<(u32, Vec<Box<dyn rtc::rtcp::Packet>>)> = Vec::new();
        let mut push = |ssrc: u32, p: Box<dyn rtc::rtcp::Packet>| match out.iter_mut().find(|(s, _)| *s == ssrc) {
            Some((_, list)) => list.push(p),
            None => out.push((ssrc, vec![p])),
        };
        for p in pkts {
            let a = p.as_any();
            if let Some(pli) = a.downcast_ref::<PictureLossIndication>() {
                push(pli.media_ssrc, p.cloned());
            } else if let Some(nack) = a.downcast_ref::<TransportLayerNack>() {
                // For the track's count; the NACK responder answers the packet itself.
                push(nack.media_ssrc, p.cloned());
            } else if let Some(fir) = a.downcast_ref::<FullIntraRequest>() {
                for entry in &fir.fir {
                    push(
                        entry.ssrc,
                        Box::new(FullIntraRequest {
                            sender_ssrc: fir.sender_ssrc,
                            media_ssrc: fir.media_ssrc,
                            fir: vec![entry.clone()],
                        }),
                    );
                }
            } else if let Some(rr) = a.downcast_ref::<ReceiverReport>() {
                for block in &rr.reports {
                    push(
                        block.ssrc,
                        Box::new(ReceiverReport {
                            ssrc: rr.ssrc,
                            reports: vec![block.clone()],
                            profile_extensions: Bytes::new(),
                        }),
                    );
                }
            } else if let Some(remb) = a.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                for &ssrc in &remb.ssrcs {
                    let share = self.share(ssrc, now).unwrap_or(1.0);
                    push(
                        ssrc,
                        Box::new(ReceiverEstimatedMaximumBitrate {
                            sender_ssrc: remb.sender_ssrc,
                            bitrate: (f64::from(remb.bitrate) * share) as f32,
                            ssrcs: vec![ssrc],
                        }),
                    );
                }
            }
        }
        if let Some(target) = target {
            let video: Vec<u32> = self
                .local
                .iter()
                .filter(|(_, s)| s.video)
                .map(|(&ssrc, _)| ssrc)
                .collect();
            for ssrc in video {
                if let Some(share) = self.share(ssrc, now) {
                    push(
                        ssrc,
                        Box::new(SendSideEstimate {
                            ssrc,
                            bitrate_bps: (target.target_bps * share) as u64,
                            overusing: target.overusing,
                        }),
                    );
                }
            }
        }
        out
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpForward {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let Packet::Rtcp(pkts) = &msg.message.packet else {
            self.read.push_back(msg);
            return Ok(());
        };
        let nacks = pkts.iter().filter(|p| p.as_any().is::<TransportLayerNack>()).count();
        self.counters.nacks.inc_by(nacks as u64);
        let mut target = None;
        for fb in pkts
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>())
        {
            self.counters.twcc_feedback.inc();
            if let Some(bwe) = self.bwe.as_mut() {
                if let Some(e) = bwe.on_feedback(fb, msg.now) {
                    let overusing = e.overusing || target.is_some_and(|t: Estimate| t.overusing);
                    target = Some(Estimate { overusing, ..e });
                }
            }
        }
        // The split copies, marked for the application, walk up past the NACK responder
        // and the reports with the packet itself, which ends after them.
        let split = self.per_stream(pkts, target, msg.now);
        let (now, transport) = (msg.now, msg.transport);
        self.read.push_back(msg);
        for (_, pkts) in split {
            self.read.push_back(TaggedPacket {
                now,
                transport,
                message: AttributedPacket::new(Packet::Rtcp(pkts)).with(Attribute::DeliverToApplication),
            });
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if msg.message.has(&Attribute::Retransmission) {
            self.counters.retransmissions.inc();
        }
        if let Packet::Rtp(p) = &mut msg.message.packet {
            let ssrc = self.rtx.get(&p.header.ssrc).copied().unwrap_or(p.header.ssrc);
            if let Some(s) = self.local.get_mut(&ssrc) {
                s.bytes += p.payload.len() as u64;
                if let Some(ext) = s.twcc_ext.filter(|_| self.estimate) {
                    let bwe = self.bwe.get_or_insert_with(|| SendSideBwe::new(msg.now));
                    // Header, payload and SRTP tag, as the client counts what arrives.
                    let size = p.payload.len() + 12 + 8 + 16;
                    let seq = bwe.on_send(size, msg.now);
                    let _ = p
                        .header
                        .set_extension(ext, Bytes::from_static(&SEQ_PAYLOADS[usize::from(seq)]));
                }
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for RtcpForward {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.insert(rtx, info.ssrc);
        }
        self.local.insert(
            info.ssrc,
            LocalStream {
                video: info.mime_type.to_ascii_lowercase().starts_with("video/"),
                bytes: 0,
                share: None,
                twcc_ext: info
                    .rtp_header_extensions
                    .iter()
                    .find(|e| e.uri == rtc::sdp::extmap::TRANSPORT_CC_URI)
                    .and_then(|e| u8::try_from(e.id).ok()),
            },
        );
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.remove(&rtx);
        }
        self.local.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::reception_report::ReceptionReport;

    fn stream(ssrc: u32, mime: &str) -> StreamInfo {
        StreamInfo {
            ssrc,
            mime_type: mime.to_owned(),
            ..Default::default()
        }
    }

    fn counters() -> FeedbackCounters {
        let counter = || prometheus::IntCounter::new("t", "t").expect("counter");
        FeedbackCounters {
            nacks: counter(),
            twcc_feedback: counter(),
            retransmissions: counter(),
        }
    }

    #[test]
    fn a_compound_report_reaches_each_stream_with_its_own_block() {
        let mut f = RtcpForward::new(counters(), true);
        f.bind_local_stream(&stream(1, "audio/opus"));
        f.bind_local_stream(&stream(2, "video/H264"));
        let rr = ReceiverReport {
            ssrc: 9,
            reports: vec![
                ReceptionReport {
                    ssrc: 1,
                    ..Default::default()
                },
                ReceptionReport {
                    ssrc: 2,
                    fraction_lost: 128,
                    ..Default::default()
                },
            ],
            profile_extensions: Bytes::new(),
        };
        let pli = PictureLossIndication {
            sender_ssrc: 9,
            media_ssrc: 2,
        };
        let out = f.per_stream(&[Box::new(rr), Box::new(pli)], None, Instant::now());
        assert_eq!(out.len(), 2);
        let (ssrc, video) = &out[1];
        assert_eq!(*ssrc, 2);
        assert_eq!(video.len(), 2, "its report block and the PLI");
        assert_eq!(video[0].destination_ssrc(), vec![2]);
        let block = video[0].as_any().downcast_ref::<ReceiverReport>().expect("rr");
        assert_eq!(block.reports[0].fraction_lost, 128);
        assert_eq!(out[0].0, 1);
    }

    #[test]
    fn inbound_feedback_passes_on_for_the_responder_with_marked_copies_for_the_application() {
        let mut f = RtcpForward::new(counters(), true);
        f.bind_local_stream(&stream(2, "video/H264"));
        let nack = TransportLayerNack {
            sender_ssrc: 9,
            media_ssrc: 2,
            nacks: vec![],
        };
        let pli = PictureLossIndication {
            sender_ssrc: 9,
            media_ssrc: 2,
        };
        f.handle_read(TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(nack), Box::new(pli)])),
        })
        .expect("read");
        let first = f.poll_read().expect("the packet itself");
        assert!(!first.message.has(&Attribute::DeliverToApplication));
        let Packet::Rtcp(pkts) = &first.message.packet else {
            panic!("rtcp")
        };
        assert_eq!(pkts.len(), 2, "unchanged, NACK included");
        let copy = f.poll_read().expect("the stream's copy");
        assert!(copy.message.has(&Attribute::DeliverToApplication));
        let Packet::Rtcp(pkts) = &copy.message.packet else {
            panic!("rtcp")
        };
        assert_eq!(pkts.len(), 2, "the NACK (to be counted) and the PLI");
        assert!(f.poll_read().is_none());
    }

    #[test]
    fn viewers_packets_get_transport_wide_numbers_only_when_estimating() {
        let mut info = stream(5, "video/H264");
        info.rtp_header_extensions = vec![rtc::interceptor::RTPHeaderExtension {
            uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
            id: 3,
        }];
        for (estimate, want) in [(true, vec![Some(1u16), Some(2)]), (false, vec![None, None])] {
            let mut f = RtcpForward::new(counters(), estimate);
            f.bind_local_stream(&info);
            let mut got = Vec::new();
            for _ in 0..2 {
                let mut p = rtc::rtp::Packet::default();
                p.header.ssrc = 5;
                p.payload = Bytes::from_static(&[0; 100]);
                f.handle_write(TaggedPacket {
                    now: Instant::now(),
                    transport: Default::default(),
                    message: AttributedPacket::new(Packet::Rtp(p)),
                })
                .expect("write");
                let Some(out) = f.poll_write() else { panic!("passed on") };
                let Packet::Rtp(p) = out.message.packet else {
                    panic!("rtp")
                };
                got.push(p.header.get_extension(3).map(|e| u16::from_be_bytes([e[0], e[1]])));
            }
            assert_eq!(got, want, "estimate: {estimate}");
        }
    }

    #[test]
    fn an_estimate_is_split_between_video_streams_by_bytes_sent() {
        let mut f = RtcpForward::new(counters(), true);
        f.bind_local_stream(&stream(1, "audio/opus"));
        f.bind_local_stream(&stream(2, "video/VP8"));
        f.bind_local_stream(&stream(3, "video/VP8"));
        for (ssrc, bytes) in [(1, 100), (2, 600), (3, 300)] {
            if let Some(s) = f.local.get_mut(&ssrc) {
                s.bytes = bytes;
            }
        }
        let estimate = |target_bps| Estimate {
            target_bps,
            overusing: true,
        };
        let mut out = f.per_stream(&[], Some(estimate(1_000_000.0)), Instant::now());
        out.sort_by_key(|(s, _)| *s);
        let got: Vec<(u32, u64, bool)> = out
            .iter()
            .map(|(s, p)| {
                let e = p[0].as_any().downcast_ref::<SendSideEstimate>().expect("estimate");
                (*s, e.bitrate_bps, e.overusing)
            })
            .collect();
        assert_eq!(got, vec![(2, 600_000, true), (3, 300_000, true)], "audio gets none");
        // Nothing sent yet: no share, nothing delivered.
        let mut g = RtcpForward::new(counters(), true);
        g.bind_local_stream(&stream(2, "video/VP8"));
        assert!(g.per_stream(&[], Some(estimate(1e6)), Instant::now()).is_empty());
    }
}

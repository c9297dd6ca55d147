//! An interceptor that hands keyframe requests (PLI, FIR), receiver estimates (REMB) and
//! receiver reports (their loss drives a viewer's layer) up to the application, and counts NACKs.
//! Without it, `webrtc` 0.21 consumes all inbound RTCP inside its interceptor chain and
//! `TrackLocal::poll` never sees a subscriber's PLI.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;

/// Marks inbound PLI/FIR/REMB/RR for delivery to the application and counts NACKs.
pub struct RtcpForward {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    nacks: prometheus::IntCounter,
}

impl RtcpForward {
    /// A forwarder counting NACKs into `nacks`.
    pub fn new(nacks: prometheus::IntCounter) -> Self {
        RtcpForward {
            read: VecDeque::new(),
            write: VecDeque::new(),
            nacks,
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpForward {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(pkts) = &msg.message.packet {
            let nacks = pkts.iter().filter(|p| p.as_any().is::<TransportLayerNack>()).count();
            self.nacks.inc_by(nacks as u64);
            let for_app: Vec<Box<dyn rtc::rtcp::Packet>> = pkts
                .iter()
                .filter(|p| {
                    let a = p.as_any();
                    a.is::<PictureLossIndication>()
                        || a.is::<FullIntraRequest>()
                        || a.is::<ReceiverEstimatedMaximumBitrate>()
                        || a.is::<ReceiverReport>()
                })
                .cloned()
                .collect();
            if for_app.is_empty() {
                // Sender reports and NACKs were already handled by the interceptors before this one.
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(for_app);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for RtcpForward {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

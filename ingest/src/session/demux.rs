//! Reading a playing RTSP session packet by packet. retina 0.4's `Demuxed` refuses a session in
//! which any set-up stream lacks a depacketizer (Opus has none), so the pump reads the session's
//! raw RTP instead and does the demuxing here: a stream retina can depacketize goes through its
//! own [`retina::codec::Depacketizer`] (fed through `retina::testutil::DepacketizeBuf`, the
//! crate's hidden entry for pushing packets from outside; hence the exact version pin), and an
//! Opus stream's payloads are taken as they are (RFC 7587: one RTP payload is one Opus packet).
//!
//! A depacketizer is built from the stream's SDP attributes like retina builds its own, so
//! parameters announced in `sprop-*` and AAC's `config` are known before the first frame.

use bytes::Bytes;
use retina::client::Stream;
use retina::codec::{
    AudioFrame, CodecItem, Depacketizer, FrameFormat, ParametersRef, VideoFrame, VideoParametersCodec,
};
use retina::rtp::{PacketMeta, ReceivedPacket};
use retina::testutil::DepacketizeBuf;

/// Initial size of a depacketizer's ring buffer (it grows while a frame needs more).
const RING_BYTES: usize = 64 * 1024;

/// What one packet produced.
pub enum Item {
    /// A video access unit (4-byte length-prefixed NAL units, no in-band parameter sets) with
    /// the stream's current parameter sets (SPS, PPS for H.264; VPS, SPS, PPS for H.265).
    Video {
        frame: VideoFrame,
        params: Option<Vec<Bytes>>,
    },
    /// An audio frame from retina's depacketizer.
    Audio(AudioFrame),
    /// A payload taken as is, `elapsed` camera clock ticks into the session.
    Payload {
        stream: usize,
        payload: Bytes,
        elapsed: i64,
    },
}

/// How one stream's packets become items.
enum Reader {
    Retina {
        depacketizer: Depacketizer,
        ring: DepacketizeBuf,
        /// The parameter sets as of the last video frame.
        params: Option<Vec<Bytes>>,
    },
    /// Each payload is one frame (Opus).
    Raw,
}

/// The demuxer of one playing session: a reader per set-up stream.
pub struct Demux {
    readers: Vec<Option<Reader>>,
}

/// How to read a chosen stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAs {
    /// Through retina's depacketizer for the stream's codec.
    Depacketized,
    /// Payloads as they are.
    Raw,
}

impl Demux {
    /// Readers for `chosen` (stream index, how to read it) among `streams`; `fmtp` holds each
    /// stream's `a=fmtp` value from the SDP. Fails when retina has no depacketizer for a
    /// stream that needs one.
    pub fn new(streams: &[Stream], fmtp: &[Option<String>], chosen: &[(usize, ReadAs)]) -> Result<Demux, String> {
        let mut readers: Vec<Option<Reader>> = streams.iter().map(|_| None).collect();
        for &(i, how) in chosen {
            let (Some(stream), Some(slot)) = (streams.get(i), readers.get_mut(i)) else {
                continue;
            };
            *slot = Some(match how {
                ReadAs::Raw => Reader::Raw,
                ReadAs::Depacketized => {
                    let fmtp = fmtp.get(i).and_then(|f| f.as_deref());
                    let mut depacketizer = Depacketizer::new(
                        stream.media(),
                        stream.encoding_name(),
                        stream.clock_rate_hz(),
                        stream.channels(),
                        fmtp,
                    )
                    .map_err(|e| format!("stream {i}: {e}"))?;
                    depacketizer.set_frame_format(FrameFormat::MP4);
                    Reader::Retina {
                        depacketizer,
                        ring: DepacketizeBuf::new(RING_BYTES),
                        params: None,
                    }
                }
            });
        }
        Ok(Demux { readers })
    }

    /// Feeds one packet; returns what it completed. An error is a packet retina's
    /// depacketizer refused (the session is then dropped, as `Demuxed` would).
    pub fn push(&mut self, pkt: ReceivedPacket) -> Result<Vec<Item>, String> {
        let stream = pkt.stream_id();
        let Some(Some(reader)) = self.readers.get_mut(stream) else {
            return Ok(Vec::new());
        };
        match reader {
            Reader::Raw => {
                let elapsed = pkt.timestamp().elapsed();
                let payload = pkt.into_payload_bytes();
                if payload.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(vec![Item::Payload {
                    stream,
                    payload,
                    elapsed,
                }])
            }
            Reader::Retina {
                depacketizer,
                ring,
                params,
            } => {
                ring.push(depacketizer, PacketMeta::from_received(&pkt), pkt.payload())
                    .map_err(|e| format!("stream {stream}: {e}"))?;
                pull_all(stream, depacketizer, params)
            }
        }
    }
}

/// Pulls every completed item (retina requires this between two pushes).
fn pull_all(
    stream: usize,
    depacketizer: &mut Depacketizer,
    params: &mut Option<Vec<Bytes>>,
) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    while let Some(item) = depacketizer.pull() {
        // retina's error keeps its fields private: its debug form is the message.
        match item.map_err(|e| format!("stream {stream}: {e:?}"))? {
            CodecItem::VideoFrame(frame) => {
                // Parameters reflect the frame just pulled until the next pull.
                if frame.has_new_parameters() || params.is_none() {
                    *params = parameter_sets(depacketizer.parameters());
                }
                out.push(Item::Video {
                    frame,
                    params: params.clone(),
                });
            }
            CodecItem::AudioFrame(frame) => out.push(Item::Audio(frame)),
            _ => {}
        }
    }
    Ok(out)
}

/// The parameter sets of an H.264 (SPS, PPS) or H.265 (VPS, SPS, PPS) stream.
pub fn parameter_sets(p: Option<ParametersRef<'_>>) -> Option<Vec<Bytes>> {
    let Some(ParametersRef::Video(v)) = p else {
        return None;
    };
    match v.codec_params() {
        VideoParametersCodec::H264 { sps, pps } => Some(vec![sps.clone(), pps.clone()]),
        VideoParametersCodec::H265 { vps, sps, pps } => Some(vec![vps.clone(), sps.clone(), pps.clone()]),
        _ => None,
    }
}

/// Each media section's `a=fmtp` value for its first payload type, in SDP order (which is the
/// order of retina's streams). Mirrors retina's own reading: the last matching line wins.
pub fn fmtp_by_stream(sdp: &[u8]) -> Vec<Option<String>> {
    let text = String::from_utf8_lossy(sdp);
    let mut out: Vec<Option<String>> = Vec::new();
    let mut payload_type: Option<String> = None;
    for line in text.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            // m=<media> <port> <proto> <fmt> ...
            payload_type = m.split_ascii_whitespace().nth(3).map(str::to_owned);
            out.push(None);
        } else if let Some(v) = line.strip_prefix("a=fmtp:") {
            let (Some(pt), Some(slot)) = (payload_type.as_deref(), out.last_mut()) else {
                continue;
            };
            if let Some((p, value)) = v.split_once(' ') {
                if p == pt {
                    *slot = Some(value.to_owned());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmtp_per_media_section() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\na=fmtp:96 ignored=1\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=fmtp:96 sprop-vps=QAE=;sprop-sps=QgE=\r\n\
m=audio 0 RTP/AVP 97\r\na=rtpmap:97 OPUS/48000/2\r\na=fmtp:98 other=1\r\n\
m=audio 0 RTP/AVP 0\r\n\
m=application 0 RTP/AVP 107\r\na=fmtp:107\r\n";
        let f = fmtp_by_stream(sdp);
        assert_eq!(
            f,
            vec![Some("sprop-vps=QAE=;sprop-sps=QgE=".to_owned()), None, None, None]
        );
        assert!(fmtp_by_stream(b"\xff\xfe garbage\nm=\na=fmtp:").len() == 1);
        assert!(fmtp_by_stream(b"").is_empty());
    }
}

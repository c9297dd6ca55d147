//! The codec work of a track's scaled layer or companion re-encode (engine `track/scaled.rs`):
//! a publisher's H.264, VP8 or H.265 RTP is depacketized, decoded, scaled (swscale) and encoded
//! as H.264 (libx264 constrained baseline) or VP8 (libvpx in realtime mode), then packetized
//! for WebRTC. Synchronous CPU work; the engine runs it on a thread of its own.

use bytes::Bytes;
use engine::track::scaled::{ScaleSpec, ScaleVideo};
use ff::codec::{self, decoder, encoder, Id};
use ff::format::Pixel;
use ff::software::scaling;
use ff::util::frame;
use ff::{Dictionary, Packet, Rational};
use ffmpeg_next as ff;
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::Payloader;

use crate::depack::Depacketizer;
use crate::frame::CLOCK_HZ;
use crate::transcode::init;
use crate::VodError;

/// Largest RTP payload written (as the ingest's: fits a 1280-byte path MTU after SRTP).
const MAX_PAYLOAD: usize = 1200;
/// A keyframe at least this often (3 s at 30 fps), besides those legs ask for.
const GOP: u32 = 90;
/// A re-encode at the source's size is held within this (720p: decoding 1080p H.265 and
/// encoding it again costs a third of a core; at 720p, a quarter).
const MAX_SIZE: engine::model::Resolution = engine::model::Resolution::Hd;

/// Makes a scaled layer's [`ScaleVideo`] (installed into the engine by the server), or `None`
/// for a codec it does not take.
pub fn scaler_for(spec: &ScaleSpec) -> Option<Box<dyn ScaleVideo>> {
    match Downscaler::new(spec) {
        Ok(d) => Some(Box::new(d)),
        Err(e) => {
            tracing::warn!(?spec, "no scaled layer: {e}");
            None
        }
    }
}

/// One re-encode's decoder, scaler, encoder and packetizer.
pub struct Downscaler {
    depack: Depacketizer,
    dec: decoder::Video,
    /// Converts decoded pictures (of whatever size and format) to the encoder's.
    scaler: Option<(scaling::Context, Pixel, u32, u32)>,
    /// Opened at the first picture (its size may come from it).
    enc: Option<encoder::Video>,
    out: Id,
    payloader: Box<dyn Payloader>,
    /// The size to encode (0 x 0 until the first picture when the spec leaves it open).
    width: u32,
    height: u32,
    kbps: u32,
    seq: u16,
    last_pts: Option<i64>,
    /// The next picture encoded is to be a keyframe.
    keyframe_wanted: bool,
}

// The FFmpeg contexts are owned by this struct alone and have no thread affinity; `&mut self`
// keeps their use to one thread at a time.
unsafe impl Send for Downscaler {}

impl Downscaler {
    /// A re-encode of `spec`'s source codec (H.264, VP8, H.265) into its output codec (H.264
    /// or VP8), at `spec`'s size and bitrate.
    pub fn new(spec: &ScaleSpec) -> Result<Downscaler, VodError> {
        init();
        let input = match spec.mime.to_ascii_lowercase().as_str() {
            "video/h264" => Id::H264,
            "video/vp8" => Id::VP8,
            "video/h265" => Id::HEVC,
            other => return Err(VodError::Unsupported(format!("decoding {other} to re-encode it"))),
        };
        let (out, payloader): (Id, Box<dyn Payloader>) = match spec.out_mime.to_ascii_lowercase().as_str() {
            "video/h264" => (Id::H264, Box::new(H264Payloader::default())),
            "video/vp8" => (Id::VP8, Box::new(Vp8Payloader::default())),
            other => return Err(VodError::Unsupported(format!("re-encoding to {other}"))),
        };
        // Fails now, not at the first picture, if the encoder is missing.
        let name = encoder_name(out);
        encoder::find_by_name(name).ok_or_else(|| VodError::Unsupported(format!("no {name} encoder")))?;
        let dc = decoder::find(input).ok_or_else(|| VodError::Unsupported(format!("no {input:?} decoder")))?;
        let dec = codec::context::Context::new_with_codec(dc).decoder().video()?;
        Ok(Downscaler {
            depack: Depacketizer::new(&spec.mime, CLOCK_HZ as u32, 0, "")?,
            dec,
            scaler: None,
            enc: None,
            out,
            payloader,
            width: spec.width & !1,
            height: spec.height & !1,
            kbps: spec.kbps,
            seq: rand::random(),
            last_pts: None,
            keyframe_wanted: false,
        })
    }

    /// [`ScaleVideo::push`], with its errors.
    pub fn push_packet(&mut self, pkt: &rtp::Packet, keyframe: bool) -> Result<Vec<rtp::Packet>, VodError> {
        self.keyframe_wanted |= keyframe;
        let mut out = Vec::new();
        for f in self.depack.push(pkt) {
            let mut p = Packet::copy(&f.data);
            p.set_pts(Some(f.pts));
            p.set_dts(Some(f.pts));
            if self.dec.send_packet(&p).is_err() {
                tracing::trace!("scaled layer: source frame rejected by the decoder");
                continue;
            }
            let mut picture = frame::Video::empty();
            while self.dec.receive_frame(&mut picture).is_ok() {
                self.encode(&picture, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Scales and encodes one decoded picture; appends the packets of what the encoder gives.
    fn encode(&mut self, picture: &frame::Video, out: &mut Vec<rtp::Packet>) -> Result<(), VodError> {
        let Some(pts) = picture.timestamp().or(picture.pts()) else {
            return Ok(());
        };
        if self.last_pts.is_some_and(|l| pts <= l) || picture.width() == 0 || picture.height() == 0 {
            return Ok(()); // the encoder needs increasing timestamps
        }
        self.last_pts = Some(pts);
        let (fmt, w, h) = (picture.format(), picture.width(), picture.height());
        if self.enc.is_none() {
            if self.width == 0 || self.height == 0 {
                (self.width, self.height) = engine::track::layers::fitted_size(MAX_SIZE, w, h);
            }
            if self.kbps == 0 {
                self.kbps = engine::track::scaled::default_kbps(self.width, self.height);
            }
            self.enc = Some(open_encoder(self.out, self.width, self.height, self.kbps)?);
        }
        let Some(enc) = self.enc.as_mut() else {
            return Ok(());
        };
        if self
            .scaler
            .as_ref()
            .is_none_or(|(_, sf, sw, sh)| (*sf, *sw, *sh) != (fmt, w, h))
        {
            let ctx = scaling::Context::get(
                fmt,
                w,
                h,
                Pixel::YUV420P,
                self.width,
                self.height,
                scaling::Flags::BILINEAR,
            )?;
            self.scaler = Some((ctx, fmt, w, h));
        }
        let mut scaled = frame::Video::empty();
        if let Some((ctx, ..)) = self.scaler.as_mut() {
            ctx.run(picture, &mut scaled)?;
        }
        scaled.set_pts(Some(pts));
        scaled.set_kind(if std::mem::take(&mut self.keyframe_wanted) {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        enc.send_frame(&scaled)?;
        let mut encoded = Packet::empty();
        while enc.receive_packet(&mut encoded).is_ok() {
            let (Some(data), Some(pts)) = (encoded.data(), encoded.pts()) else {
                continue;
            };
            let payloads = self
                .payloader
                .payload(MAX_PAYLOAD, &Bytes::copy_from_slice(data))
                .map_err(|e| VodError::BadMedia(format!("packetizing the scaled layer: {e}")))?;
            let last = payloads.len().saturating_sub(1);
            for (i, payload) in payloads.into_iter().enumerate() {
                let sequence_number = self.seq;
                self.seq = self.seq.wrapping_add(1);
                out.push(packet(payload, i == last, sequence_number, pts as u32));
            }
        }
        Ok(())
    }
}

/// One packet of the re-encoded stream (each leg sets its own payload type and SSRC).
fn packet(payload: Bytes, marker: bool, sequence_number: u16, timestamp: u32) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker,
            payload_type: 96,
            sequence_number,
            timestamp,
            ..Default::default()
        },
        payload,
    }
}

fn encoder_name(id: Id) -> &'static str {
    if id == Id::H264 {
        "libx264"
    } else {
        "libvpx"
    }
}

impl ScaleVideo for Downscaler {
    fn push(&mut self, pkt: &rtp::Packet, keyframe: bool) -> Vec<rtp::Packet> {
        self.push_packet(pkt, keyframe).unwrap_or_else(|e| {
            tracing::debug!("scaled layer: {e}");
            Vec::new()
        })
    }
}

/// A realtime encoder: libx264 (constrained baseline, which any H.264 decoder takes, no
/// B-frames, no lookahead) or libvpx VP8 (realtime deadline, no lag), at `kbps`.
fn open_encoder(id: Id, width: u32, height: u32, kbps: u32) -> Result<encoder::Video, VodError> {
    let name = encoder_name(id);
    let ec = encoder::find_by_name(name).ok_or_else(|| VodError::Unsupported(format!("no {name} encoder")))?;
    let mut enc = codec::context::Context::new_with_codec(ec).encoder().video()?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(Rational(1, CLOCK_HZ as i32));
    enc.set_gop(GOP);
    enc.set_max_b_frames(0);
    let bps = kbps as usize * 1000;
    enc.set_bit_rate(bps);
    enc.set_max_bit_rate(bps);
    unsafe { (*enc.as_mut_ptr()).rc_buffer_size = bps.min(i32::MAX as usize) as i32 };
    let mut opts = Dictionary::new();
    if id == Id::H264 {
        opts.set("preset", "veryfast");
        opts.set("tune", "zerolatency");
        opts.set("profile", "baseline");
        opts.set("forced-idr", "1");
    } else {
        opts.set("deadline", "realtime");
        opts.set("cpu-used", "8");
        opts.set("lag-in-frames", "0");
        opts.set("error-resilient", "1");
    }
    opts.set("threads", "1");
    Ok(enc.open_as_with(ec, opts)?)
}

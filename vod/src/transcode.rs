//! Codec work for HLS: audio that is not AAC (Opus, G.711, anything an upload carries) is
//! decoded, resampled to 48 kHz and encoded AAC-LC with FFmpeg's native encoder; video that is
//! not H.264 (VP8 from WebRTC, anything an upload carries) is decoded and encoded with libx264.
//! H.264 itself is never re-encoded. The other way, for WebRTC: a camera's AAC is encoded Opus
//! (libopus) for call viewers. Also the poster: a JPEG from one H.264 keyframe.
//! Everything here is synchronous CPU work meant for a blocking thread.

use std::sync::Once;

use bytes::Bytes;
use ff::codec::{self, decoder, encoder, Id};
use ff::ffi;
use ff::format::{sample::Type as SampleType, Pixel, Sample};
use ff::software::scaling;
use ff::util::frame;
use ff::{ChannelLayout, Dictionary, Packet, Rational};
use ffmpeg_next as ff;

use crate::frame::{Codec, CLOCK_HZ};
use crate::segment::mux::AudioTrack;
use crate::VodError;

static INIT: Once = Once::new();

/// Initialises FFmpeg once per process and keeps its log quiet (errors only).
pub(crate) fn init() {
    INIT.call_once(|| {
        let _ = ff::init();
        unsafe { ffi::av_log_set_level(ffi::AV_LOG_FATAL) };
    });
}

const TB90K: Rational = Rational(1, CLOCK_HZ as i32);
/// AAC output sample rate.
const AAC_RATE: u32 = 48_000;
/// AAC-LC frame length in samples.
const AAC_FRAME: usize = 1024;

/// One encoded audio frame (AAC or Opus), pts on the 90 kHz clock.
#[derive(Debug)]
pub struct AudioPacket {
    pub pts: i64,
    pub data: Bytes,
}

/// What an [`AudioTranscoder`] encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioTarget {
    /// AAC-LC, 48 kHz (HLS).
    Aac,
    /// Opus, 48 kHz, 20 ms frames (WebRTC).
    Opus,
}

impl AudioTarget {
    /// Samples per encoded frame.
    fn frame_len(self) -> usize {
        match self {
            AudioTarget::Aac => AAC_FRAME,
            AudioTarget::Opus => OPUS_FRAME,
        }
    }
}

/// Opus frame length in samples at 48 kHz (20 ms, what WebRTC peers send).
const OPUS_FRAME: usize = 960;

/// One encoded H.264 access unit (Annex-B), 90 kHz timestamps.
#[derive(Debug)]
pub(crate) struct H264Frame {
    pub pts: i64,
    pub dts: i64,
    pub key: bool,
    pub data: Bytes,
}

/// The sampling rate and channel count an AudioSpecificConfig (ISO 14496-3) names; `None` if
/// it is too short or names neither.
pub fn aac_config_rate_channels(config: &[u8]) -> Option<(u32, u16)> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let mut bits = config
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| u32::from((b >> i) & 1)));
    let mut read = |n: u32| -> Option<u32> { (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | bits.next()?)) };
    if read(5)? == 31 {
        read(6)?;
    }
    let rate = match read(4)? {
        15 => read(24)?,
        i => *RATES.get(i as usize)?,
    };
    let channels = read(4)? as u16;
    (rate > 0 && channels > 0).then_some((rate, channels))
}

/// An AudioSpecificConfig for AAC-LC at `rate` Hz with `channels` channels.
pub(crate) fn aac_config(rate: u32, channels: u16) -> Bytes {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let idx = RATES.iter().position(|&r| r == rate).unwrap_or(3) as u8;
    let ch = channels.clamp(1, 7) as u8;
    Bytes::from(vec![(2 << 3) | (idx >> 1), ((idx & 1) << 7) | (ch << 3)])
}

/// A decoder for live audio of `codec` (Opus, PCMU, PCMA or AAC), and its channel count (1 or
/// 2).
pub(crate) fn live_decoder(codec: &Codec) -> Result<(decoder::Audio, u16), VodError> {
    init();
    let (id, rate, channels, extradata) = match codec {
        Codec::Opus { channels } => (Id::OPUS, 48000, (*channels).clamp(1, 2) as u16, None),
        Codec::Pcmu => (Id::PCM_MULAW, 8000, 1, None),
        Codec::Pcma => (Id::PCM_ALAW, 8000, 1, None),
        Codec::Aac { config } => {
            let (rate, channels) = aac_config_rate_channels(config)
                .ok_or_else(|| VodError::Unsupported("an AAC config that cannot be read".into()))?;
            (Id::AAC, rate, channels.clamp(1, 2), Some(config))
        }
        other => return Err(VodError::Unsupported(format!("live audio decoding of {other:?}"))),
    };
    let dc = decoder::find(id).ok_or_else(|| VodError::Unsupported(format!("no {id:?} decoder")))?;
    let mut ctx = codec::context::Context::new_with_codec(dc);
    unsafe {
        let p = ctx.as_mut_ptr();
        (*p).sample_rate = rate as i32;
        ffi::av_channel_layout_default(&mut (*p).ch_layout, channels as i32);
        if let Some(config) = extradata {
            // FFmpeg frees it with the context; the padding is what its readers may touch.
            let len = config.len();
            let buf = ffi::av_mallocz(len + ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize) as *mut u8;
            if buf.is_null() {
                return Err(VodError::Ffmpeg("out of memory for the decoder's config".into()));
            }
            std::ptr::copy_nonoverlapping(config.as_ptr(), buf, len);
            (*p).extradata = buf;
            (*p).extradata_size = len as i32;
        }
    }
    Ok((ctx.decoder().audio()?, channels))
}

/// Decodes any audio FFmpeg decodes and re-encodes it as AAC-LC (or Opus), 48 kHz.
pub struct AudioTranscoder {
    dec: decoder::Audio,
    enc: encoder::Audio,
    target: AudioTarget,
    swr: *mut ffi::SwrContext,
    swr_in: Option<(Sample, u64, u16, u32)>,
    channels: u16,
    fifo: Vec<Vec<f32>>,
    /// Samples handed to the encoder so far (its pts clock, 1/48000).
    enc_samples: i64,
    /// 90 kHz time of encoder sample 0.
    base: Option<i64>,
    /// 90 kHz time the next input packet is expected at.
    expected: Option<i64>,
    track: AudioTrack,
    /// Measure each packet's level from what it decodes to (see [`Self::measuring`]), and
    /// the last packet's.
    measure: bool,
    level: Option<u8>,
}

// The resampler pointer is owned exclusively by this struct.
unsafe impl Send for AudioTranscoder {}

impl AudioTranscoder {
    /// A transcoder to AAC for live audio of `codec` (Opus, PCMU or PCMA).
    pub(crate) fn for_codec(codec: &Codec) -> Result<AudioTranscoder, VodError> {
        Self::live(codec, AudioTarget::Aac)
    }

    /// A transcoder to Opus for a camera's AAC (`config`: its AudioSpecificConfig), so
    /// WebRTC viewers can hear it.
    pub fn aac_to_opus(config: &[u8]) -> Result<AudioTranscoder, VodError> {
        Self::live(
            &Codec::Aac {
                config: Bytes::copy_from_slice(config),
            },
            AudioTarget::Opus,
        )
    }

    /// A transcoder for live audio of `codec` (Opus, PCMU, PCMA or AAC) to `target`.
    fn live(codec: &Codec, target: AudioTarget) -> Result<AudioTranscoder, VodError> {
        let (dec, channels) = live_decoder(codec)?;
        Self::with_decoder(dec, channels, target)
    }

    /// A transcoder for an upload's audio stream.
    pub(crate) fn from_parameters(par: codec::Parameters) -> Result<AudioTranscoder, VodError> {
        init();
        let ctx = codec::context::Context::from_parameters(par)?;
        let dec = ctx.decoder().audio()?;
        let channels = dec.channels().clamp(1, 2);
        Self::with_decoder(dec, channels, AudioTarget::Aac)
    }

    fn with_decoder(dec: decoder::Audio, channels: u16, target: AudioTarget) -> Result<AudioTranscoder, VodError> {
        let (name, format, bit_rate) = match target {
            AudioTarget::Aac => (
                "aac",
                Sample::F32(SampleType::Planar),
                if channels == 1 { 64_000 } else { 128_000 },
            ),
            AudioTarget::Opus => (
                "libopus",
                Sample::F32(SampleType::Packed),
                if channels == 1 { 32_000 } else { 64_000 },
            ),
        };
        let ec = encoder::find_by_name(name).ok_or_else(|| VodError::Unsupported(format!("no {name} encoder")))?;
        let mut enc = codec::context::Context::new_with_codec(ec).encoder().audio()?;
        enc.set_rate(AAC_RATE as i32);
        enc.set_format(format);
        enc.set_channel_layout(ChannelLayout::default(channels as i32));
        enc.set_bit_rate(bit_rate);
        enc.set_time_base(Rational(1, AAC_RATE as i32));
        let enc = enc.open_as(ec)?;
        Ok(AudioTranscoder {
            dec,
            enc,
            target,
            swr: std::ptr::null_mut(),
            swr_in: None,
            channels,
            fifo: vec![Vec::with_capacity(4096); channels as usize],
            enc_samples: 0,
            base: None,
            expected: None,
            track: AudioTrack {
                config: aac_config(AAC_RATE, channels),
                rate: AAC_RATE,
                channels,
            },
            measure: false,
            level: None,
        })
    }

    /// Also measures the level of each packet pushed, from the samples it decodes to (see
    /// [`Self::level`]), so a caller that needs both does not decode the audio twice.
    pub fn measuring(mut self) -> Self {
        self.measure = true;
        self
    }

    /// The level (RFC 6464 -dBov) of the last packet pushed, when [`Self::measuring`] and it
    /// decoded to anything.
    pub fn level(&self) -> Option<u8> {
        self.level
    }

    /// The AAC track this transcoder produces.
    pub(crate) fn track(&self) -> &AudioTrack {
        &self.track
    }

    /// Decodes one packet (pts on the 90 kHz clock) and returns the frames now complete.
    pub fn push(&mut self, pts: i64, data: &[u8]) -> Result<Vec<AudioPacket>, VodError> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let pkt = Packet::copy(data);
        if self.dec.send_packet(&pkt).is_err() {
            tracing::trace!("audio decode: packet rejected");
            return Ok(Vec::new());
        }
        let mut decoded = 0i64;
        let mut in_rate = 48000;
        let (mut sum, mut count) = (0f64, 0usize);
        let mut f = frame::Audio::empty();
        while self.dec.receive_frame(&mut f).is_ok() {
            if self.measure {
                let (s, c) = crate::level_meter::squares(&f);
                sum += s;
                count += c;
            }
            in_rate = f.rate().max(1);
            // Re-anchor on the first packet and whenever the input jumps (loss, discontinuity).
            let drift = self.expected.map(|e| (pts - e).abs()).unwrap_or(i64::MAX);
            if decoded == 0 && drift > CLOCK_HZ / 10 {
                for ch in &mut self.fifo {
                    ch.clear();
                }
                self.base = Some(pts - self.enc_samples * CLOCK_HZ / AAC_RATE as i64);
            }
            decoded += f.samples() as i64;
            self.resample(&f)?;
        }
        if decoded > 0 {
            self.expected = Some(pts + decoded * CLOCK_HZ / in_rate as i64);
        }
        self.level = (count > 0).then(|| crate::level_meter::level_of(sum / count as f64));
        self.encode_fifo(false)
    }

    /// Encodes what is buffered (end of stream).
    pub fn flush(&mut self) -> Result<Vec<AudioPacket>, VodError> {
        let mut out = self.encode_fifo(true)?;
        if self.enc.send_eof().is_ok() {
            self.drain(&mut out);
        }
        Ok(out)
    }

    fn resample(&mut self, f: &frame::Audio) -> Result<(), VodError> {
        let layout = f.channel_layout();
        let ch = f.channels().max(1);
        let key = (f.format(), layout.bits(), ch, f.rate());
        unsafe {
            if self.swr_in != Some(key) || self.swr.is_null() {
                if !self.swr.is_null() {
                    ffi::swr_free(&mut self.swr);
                }
                let mut in_layout: ffi::AVChannelLayout = std::mem::zeroed();
                let src = (*f.as_ptr()).ch_layout;
                if src.nb_channels > 0 && ffi::av_channel_layout_check(&src) != 0 {
                    ffi::av_channel_layout_copy(&mut in_layout, &src);
                } else {
                    ffi::av_channel_layout_default(&mut in_layout, ch as i32);
                }
                let mut out_layout: ffi::AVChannelLayout = std::mem::zeroed();
                ffi::av_channel_layout_default(&mut out_layout, self.channels as i32);
                let r = ffi::swr_alloc_set_opts2(
                    &mut self.swr,
                    &mut out_layout,
                    ffi::AVSampleFormat::AV_SAMPLE_FMT_FLTP,
                    AAC_RATE as i32,
                    &mut in_layout,
                    f.format().into(),
                    f.rate() as i32,
                    0,
                    std::ptr::null_mut(),
                );
                ffi::av_channel_layout_uninit(&mut in_layout);
                ffi::av_channel_layout_uninit(&mut out_layout);
                if r < 0 || self.swr.is_null() || ffi::swr_init(self.swr) < 0 {
                    return Err(VodError::Ffmpeg("cannot set up the audio resampler".into()));
                }
                self.swr_in = Some(key);
            }
            let n_in = f.samples() as i32;
            let cap = ffi::swr_get_out_samples(self.swr, n_in).max(0) as usize + 16;
            let mut bufs: Vec<Vec<f32>> = vec![vec![0f32; cap]; self.channels as usize];
            let mut ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_mut_ptr() as *mut u8).collect();
            let n = ffi::swr_convert(
                self.swr,
                ptrs.as_mut_ptr(),
                cap as i32,
                (*f.as_ptr()).extended_data as *mut *const u8,
                n_in,
            );
            if n < 0 {
                return Err(VodError::Ffmpeg("audio resampling failed".into()));
            }
            for (fifo, b) in self.fifo.iter_mut().zip(bufs.iter()) {
                fifo.extend_from_slice(&b[..n as usize]);
            }
        }
        Ok(())
    }

    fn encode_fifo(&mut self, all: bool) -> Result<Vec<AudioPacket>, VodError> {
        let mut out = Vec::new();
        let frame_len = self.target.frame_len();
        loop {
            let have = self.fifo.first().map(Vec::len).unwrap_or(0);
            if have == 0 || (have < frame_len && !all) {
                break;
            }
            let n = have.min(frame_len);
            let layout = ChannelLayout::default(self.channels as i32);
            let mut f = match self.target {
                AudioTarget::Aac => {
                    let mut f = frame::Audio::new(Sample::F32(SampleType::Planar), n, layout);
                    for (i, ch) in self.fifo.iter().enumerate() {
                        f.plane_mut::<f32>(i)[..n].copy_from_slice(&ch[..n]);
                    }
                    f
                }
                AudioTarget::Opus => {
                    // One plane, channels interleaved (libopus takes packed samples only).
                    let mut f = frame::Audio::new(Sample::F32(SampleType::Packed), n, layout);
                    let width = self.fifo.len();
                    let plane = f.plane_mut::<f32>(0);
                    for (c, ch) in self.fifo.iter().enumerate() {
                        for (s, v) in ch[..n].iter().enumerate() {
                            if let Some(slot) = plane.get_mut(s * width + c) {
                                *slot = *v;
                            }
                        }
                    }
                    f
                }
            };
            f.set_rate(AAC_RATE);
            for ch in self.fifo.iter_mut() {
                ch.drain(..n);
            }
            f.set_pts(Some(self.enc_samples));
            self.enc_samples += n as i64;
            self.enc.send_frame(&f)?;
            self.drain(&mut out);
        }
        Ok(out)
    }

    fn drain(&mut self, out: &mut Vec<AudioPacket>) {
        let mut p = Packet::empty();
        while self.enc.receive_packet(&mut p).is_ok() {
            let (Some(data), Some(pts)) = (p.data(), p.pts()) else {
                continue;
            };
            let base = self.base.unwrap_or(0);
            // Shift out the encoder priming so audio never starts before its input.
            let pad = unsafe { (*self.enc.as_ptr()).initial_padding } as i64;
            out.push(AudioPacket {
                pts: base + (pts + pad) * CLOCK_HZ / AAC_RATE as i64,
                data: Bytes::copy_from_slice(data),
            });
        }
    }
}

impl Drop for AudioTranscoder {
    fn drop(&mut self) {
        if !self.swr.is_null() {
            unsafe { ffi::swr_free(&mut self.swr) };
        }
    }
}

/// Decodes video FFmpeg decodes (VP8, anything an upload carries) and encodes H.264 with libx264.
pub(crate) struct VideoTranscoder {
    dec: decoder::Video,
    enc: Option<(encoder::Video, u32, u32)>,
    scaler: Option<(scaling::Context, Pixel, u32, u32)>,
    last_pts: Option<i64>,
}

// The scaler's FFmpeg context is owned exclusively by this struct and has no thread affinity:
// moving the transcoder to another thread (a program's segmenter is used from whichever tap task
// holds its lock) is sound as long as one thread uses it at a time, which `&mut self` ensures.
unsafe impl Send for VideoTranscoder {}

impl VideoTranscoder {
    /// A transcoder for live VP8.
    pub fn vp8() -> Result<VideoTranscoder, VodError> {
        init();
        let dc = decoder::find(Id::VP8).ok_or_else(|| VodError::Unsupported("no VP8 decoder".into()))?;
        let dec = codec::context::Context::new_with_codec(dc).decoder().video()?;
        Ok(VideoTranscoder {
            dec,
            enc: None,
            scaler: None,
            last_pts: None,
        })
    }

    /// A transcoder for an upload's video stream.
    pub fn from_parameters(par: codec::Parameters) -> Result<VideoTranscoder, VodError> {
        init();
        let mut ctx = codec::context::Context::from_parameters(par)?;
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: 2,
            safe: true,
        });
        let dec = ctx.decoder().video()?;
        Ok(VideoTranscoder {
            dec,
            enc: None,
            scaler: None,
            last_pts: None,
        })
    }

    /// Decodes one frame (pts on the 90 kHz clock) and returns the H.264 frames now encoded.
    pub fn push(&mut self, pts: i64, data: &[u8]) -> Result<Vec<H264Frame>, VodError> {
        let mut out = Vec::new();
        if data.is_empty() {
            return Ok(out);
        }
        let mut pkt = Packet::copy(data);
        pkt.set_pts(Some(pts));
        pkt.set_dts(Some(pts));
        if self.dec.send_packet(&pkt).is_err() {
            tracing::trace!("video decode: packet rejected");
            return Ok(out);
        }
        self.receive(&mut out)?;
        Ok(out)
    }

    /// Drains decoder and encoder (end of stream).
    pub fn flush(&mut self) -> Result<Vec<H264Frame>, VodError> {
        let mut out = Vec::new();
        if self.dec.send_eof().is_ok() {
            self.receive(&mut out)?;
        }
        if let Some((enc, _, _)) = self.enc.as_mut() {
            if enc.send_eof().is_ok() {
                Self::drain(enc, &mut out);
            }
        }
        Ok(out)
    }

    fn receive(&mut self, out: &mut Vec<H264Frame>) -> Result<(), VodError> {
        let mut f = frame::Video::empty();
        while self.dec.receive_frame(&mut f).is_ok() {
            let Some(pts) = f.timestamp().or(f.pts()) else { continue };
            if self.last_pts.is_some_and(|l| pts <= l) {
                continue; // the encoder needs increasing timestamps
            }
            self.last_pts = Some(pts);
            let (w, h) = (f.width() & !1, f.height() & !1);
            if w == 0 || h == 0 {
                continue;
            }
            if self.enc.as_ref().is_none_or(|(_, ew, eh)| (*ew, *eh) != (w, h)) {
                if let Some((mut old, _, _)) = self.enc.take() {
                    if old.send_eof().is_ok() {
                        Self::drain(&mut old, out);
                    }
                }
                self.enc = Some((open_x264(w, h)?, w, h));
            }
            let key = f.is_key();
            let mut src = if f.format() != Pixel::YUV420P || f.width() != w || f.height() != h {
                let fmt = f.format();
                if self
                    .scaler
                    .as_ref()
                    .is_none_or(|(_, sf, sw, sh)| (*sf, *sw, *sh) != (fmt, f.width(), f.height()))
                {
                    let s = scaling::Context::get(
                        fmt,
                        f.width(),
                        f.height(),
                        Pixel::YUV420P,
                        w,
                        h,
                        scaling::Flags::BILINEAR,
                    )?;
                    self.scaler = Some((s, fmt, f.width(), f.height()));
                }
                let mut o = frame::Video::empty();
                if let Some((s, _, _, _)) = self.scaler.as_mut() {
                    s.run(&f, &mut o)?;
                }
                o
            } else {
                f.clone()
            };
            src.set_pts(Some(pts));
            src.set_kind(if key {
                ff::picture::Type::I
            } else {
                ff::picture::Type::None
            });
            if let Some((enc, _, _)) = self.enc.as_mut() {
                enc.send_frame(&src)?;
                Self::drain(enc, out);
            }
        }
        Ok(())
    }

    fn drain(enc: &mut encoder::Video, out: &mut Vec<H264Frame>) {
        let mut p = Packet::empty();
        while enc.receive_packet(&mut p).is_ok() {
            let Some(data) = p.data() else { continue };
            let Some(pts) = p.pts() else { continue };
            out.push(H264Frame {
                pts,
                dts: p.dts().unwrap_or(pts),
                key: p.is_key(),
                data: Bytes::copy_from_slice(data),
            });
        }
    }
}

fn open_x264(w: u32, h: u32) -> Result<encoder::Video, VodError> {
    let ec = encoder::find_by_name("libx264").ok_or_else(|| VodError::Unsupported("no libx264 encoder".into()))?;
    let mut enc = codec::context::Context::new_with_codec(ec).encoder().video()?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(Pixel::YUV420P);
    enc.set_time_base(TB90K);
    enc.set_gop(60);
    enc.set_max_b_frames(0);
    let mut opts = Dictionary::new();
    opts.set("preset", "veryfast");
    opts.set("tune", "zerolatency");
    opts.set("crf", "23");
    opts.set("threads", "2");
    opts.set("forced-idr", "1");
    Ok(enc.open_as_with(ec, opts)?)
}

/// Whether an Annex-B keyframe is H.265: its first NAL unit is a VPS, SPS or PPS (types 32..=34
/// in H.265's two-byte header, with layer id 0). An H.264 keyframe starts with an SPS (0x67) or an
/// IDR slice, never with those byte patterns (H.264 types 0/2/4 are unused or data partitions).
fn is_h265_keyframe(keyframe: &[u8]) -> bool {
    let start = if keyframe.starts_with(&[0, 0, 0, 1]) {
        4
    } else if keyframe.starts_with(&[0, 0, 1]) {
        3
    } else {
        return false;
    };
    matches!(keyframe.get(start..start + 2), Some(&[0x40 | 0x42 | 0x44, 0x01]))
}

/// Encodes a JPEG poster (max 640 px wide) from one H.264 or H.265 keyframe (Annex-B).
pub fn poster_jpeg(keyframe: &[u8]) -> Result<Bytes, VodError> {
    init();
    let bad = || VodError::BadMedia("the keyframe could not be decoded into a picture".into());
    let (id, name) = if is_h265_keyframe(keyframe) {
        (Id::HEVC, "H.265")
    } else {
        (Id::H264, "H.264")
    };
    let dc = decoder::find(id).ok_or_else(|| VodError::Unsupported(format!("no {name} decoder")))?;
    let mut dec = codec::context::Context::new_with_codec(dc).decoder().video()?;
    dec.send_packet(&Packet::copy(keyframe)).map_err(|_| bad())?;
    let _ = dec.send_eof();
    let mut f = frame::Video::empty();
    dec.receive_frame(&mut f).map_err(|_| bad())?;
    if f.width() == 0 || f.height() == 0 {
        return Err(bad());
    }
    let w = f.width().min(640) & !1;
    let h = ((f.height() as u64 * w as u64 / f.width() as u64) as u32 & !1).max(2);
    let mut s = scaling::Context::get(
        f.format(),
        f.width(),
        f.height(),
        Pixel::YUVJ420P,
        w,
        h,
        scaling::Flags::BICUBIC,
    )?;
    let mut o = frame::Video::empty();
    s.run(&f, &mut o)?;
    let ec = encoder::find(Id::MJPEG).ok_or_else(|| VodError::Unsupported("no JPEG encoder".into()))?;
    let mut enc = codec::context::Context::new_with_codec(ec).encoder().video()?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(Pixel::YUVJ420P);
    enc.set_time_base(Rational(1, 25));
    let q = 4 * ffi::FF_QP2LAMBDA;
    unsafe {
        let p = enc.as_mut_ptr();
        (*p).flags |= ffi::AV_CODEC_FLAG_QSCALE as i32;
        (*p).global_quality = q;
        (*o.as_mut_ptr()).quality = q;
    }
    let mut enc = enc.open_as(ec)?;
    o.set_pts(Some(0));
    enc.send_frame(&o)?;
    let _ = enc.send_eof();
    let mut p = Packet::empty();
    enc.receive_packet(&mut p)?;
    let data = p.data().ok_or_else(bad)?;
    Ok(Bytes::copy_from_slice(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audio_specific_config_names_its_rate_and_channels() {
        assert_eq!(aac_config_rate_channels(&aac_config(48_000, 2)), Some((48_000, 2)));
        assert_eq!(aac_config_rate_channels(&aac_config(16_000, 1)), Some((16_000, 1)));
        // AAC-LC, explicit 44.1 kHz (index 15), mono.
        let explicit = [0x17, 0x80, 0x56, 0x22, 0x08];
        assert_eq!(aac_config_rate_channels(&explicit), Some((44_100, 1)));
        assert_eq!(aac_config_rate_channels(&[0x12]), None);
        assert_eq!(aac_config_rate_channels(&[]), None);
    }

    /// μ-law samples of a 440 Hz tone at about half scale, 8 kHz, `ms` long.
    fn pcmu_tone(ms: usize) -> Vec<u8> {
        (0..ms * 8)
            .map(|i| {
                let v = (0.5 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin() * 32767.0) as i16;
                linear_to_ulaw(v)
            })
            .collect()
    }

    /// G.711 μ-law encoding of one 16-bit sample.
    fn linear_to_ulaw(sample: i16) -> u8 {
        const BIAS: i32 = 0x84;
        let mut s = i32::from(sample);
        let sign = if s < 0 { 0x80 } else { 0 };
        if s < 0 {
            s = -s;
        }
        s = (s + BIAS).min(32_635 + BIAS);
        let exponent = (7 - (s >> 7).leading_zeros().saturating_sub(24).min(7)) as i32;
        let mantissa = (s >> (exponent + 3)) & 0x0f;
        !(sign | (exponent << 4) as u8 | mantissa as u8)
    }

    #[test]
    fn a_cameras_aac_becomes_20_ms_opus_that_decodes_to_the_same_tone() {
        // A tone as a camera would send it: AAC (made here from G.711 by the HLS path).
        let mut to_aac = AudioTranscoder::for_codec(&Codec::Pcmu).expect("G.711 to AAC");
        let config = to_aac.track().config.clone();
        let mut aac = Vec::new();
        for (i, chunk) in pcmu_tone(2_000).chunks(160).enumerate() {
            aac.extend(to_aac.push(i as i64 * 1_800, chunk).expect("encode AAC"));
        }
        assert!(aac.len() >= 80, "{} AAC frames for 2 s", aac.len());

        let mut to_opus = AudioTranscoder::aac_to_opus(&config).expect("AAC to Opus");
        let mut opus = Vec::new();
        for f in &aac {
            opus.extend(to_opus.push(f.pts, &f.data).expect("encode Opus"));
        }
        assert!(opus.len() >= 85, "{} Opus packets for about 2 s", opus.len());
        for pair in opus.windows(2) {
            assert_eq!(pair[1].pts - pair[0].pts, 1_800, "20 ms apart on the 90 kHz clock");
        }

        // Decoded again, the second half is the tone, not silence.
        let dc = decoder::find(Id::OPUS).expect("an Opus decoder");
        let mut ctx = codec::context::Context::new_with_codec(dc);
        unsafe {
            let p = ctx.as_mut_ptr();
            (*p).sample_rate = 48_000;
            ffi::av_channel_layout_default(&mut (*p).ch_layout, 1);
        }
        let mut dec = ctx.decoder().audio().expect("open the decoder");
        let (mut energy, mut samples) = (0f64, 0usize);
        let mut f = frame::Audio::empty();
        for p in &opus[opus.len() / 2..] {
            dec.send_packet(&Packet::copy(&p.data)).expect("decode Opus");
            while dec.receive_frame(&mut f).is_ok() {
                let n = f.samples();
                let plane: Vec<f64> = match f.format() {
                    Sample::F32(_) => f.plane::<f32>(0)[..n].iter().map(|&v| f64::from(v)).collect(),
                    Sample::I16(_) => f.plane::<i16>(0)[..n].iter().map(|&v| f64::from(v) / 32768.0).collect(),
                    other => panic!("unexpected sample format {other:?}"),
                };
                energy += plane.iter().map(|v| v * v).sum::<f64>();
                samples += n;
            }
        }
        let rms = (energy / samples.max(1) as f64).sqrt();
        assert!(samples > 40_000 && rms > 0.1, "{samples} samples decoded, RMS {rms}");
    }
}

//! The loudness of audio that carries no level of its own: each packet (or frame) is decoded
//! with FFmpeg and its RMS given as an RFC 6464 level (-dBov, 0 loudest to 127 silence), so
//! that publishers whose clients send no `ssrc-audio-level` extension (WHIP encoders such as
//! OBS and ffmpeg, RTSP cameras) can be active speakers. Synchronous and cheap enough for the
//! media thread: one audio decode per packet (about 50 a second per track).

use ff::format::Sample;
use ff::util::frame;
use ff::{codec::decoder, Packet};
use ffmpeg_next as ff;

use crate::frame::Codec;
use crate::transcode::live_decoder;
use crate::VodError;

/// The quietest level RFC 6464 can say (and what digital silence is).
const SILENCE: u8 = 127;

/// Decodes one audio track and measures each packet's level.
pub struct LevelMeter {
    dec: decoder::Audio,
    frame: frame::Audio,
}

impl LevelMeter {
    /// A meter for live audio of `codec` (Opus, PCMU, PCMA or AAC).
    pub fn new(codec: &Codec) -> Result<LevelMeter, VodError> {
        let (dec, _) = live_decoder(codec)?;
        Ok(LevelMeter {
            dec,
            frame: frame::Audio::empty(),
        })
    }

    /// A meter for an RTP audio track of `mime` ("audio/opus", "audio/PCMU", "audio/PCMA")
    /// with `channels`; `None` for other codecs or when FFmpeg has no decoder for it.
    pub fn for_rtp(mime: &str, channels: u16) -> Option<LevelMeter> {
        let codec = match mime.to_ascii_lowercase().as_str() {
            "audio/opus" => Codec::Opus {
                channels: if channels == 1 { 1 } else { 2 },
            },
            "audio/pcmu" => Codec::Pcmu,
            "audio/pcma" => Codec::Pcma,
            _ => return None,
        };
        LevelMeter::new(&codec).ok()
    }

    /// Decodes one packet's payload and returns its level (-dBov of its samples' RMS, 0 to
    /// 127); `None` when it decodes to nothing (a corrupt packet, a decoder still priming).
    pub fn measure(&mut self, payload: &[u8]) -> Option<u8> {
        if payload.is_empty() || self.dec.send_packet(&Packet::copy(payload)).is_err() {
            return None;
        }
        let (mut sum, mut n) = (0f64, 0usize);
        while self.dec.receive_frame(&mut self.frame).is_ok() {
            let (s, c) = squares(&self.frame);
            sum += s;
            n += c;
        }
        (n > 0).then(|| level_of(sum / n as f64))
    }
}

impl engine::track::audio_level::MeasureLevel for LevelMeter {
    fn measure(&mut self, payload: &[u8]) -> Option<u8> {
        LevelMeter::measure(self, payload)
    }
}

/// The engine's [`MeterFactory`](engine::track::audio_level::MeterFactory): a meter for an RTP
/// audio track, for the server to install.
pub fn rtp_meter(mime: &str, channels: u16) -> Option<Box<dyn engine::track::audio_level::MeasureLevel>> {
    LevelMeter::for_rtp(mime, channels).map(|m| Box::new(m) as Box<dyn engine::track::audio_level::MeasureLevel>)
}

/// The RFC 6464 level (-dBov) of a mean square on a full scale of 1.
pub fn level_of(mean_square: f64) -> u8 {
    if mean_square <= 0.0 {
        return SILENCE;
    }
    let dbov = 10.0 * mean_square.log10();
    (-dbov).round().clamp(0.0, f64::from(SILENCE)) as u8
}

/// The sum of squares (full scale 1) of a decoded frame's samples, over every channel, and
/// how many samples that was. Formats other than 16-bit and float count nothing.
pub(crate) fn squares(f: &frame::Audio) -> (f64, usize) {
    let samples = f.samples();
    let planes = if f.is_planar() { f.planes() } else { 1 };
    let per_plane = if f.is_planar() {
        samples
    } else {
        samples * usize::from(f.channels())
    };
    let (mut sum, mut n) = (0f64, 0usize);
    for p in 0..planes {
        let data = f.data(p);
        match f.format() {
            Sample::F32(_) => {
                for c in data.chunks_exact(4).take(per_plane) {
                    let v = f64::from(f32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                    sum += v * v;
                    n += 1;
                }
            }
            Sample::I16(_) => {
                for c in data.chunks_exact(2).take(per_plane) {
                    let v = f64::from(i16::from_ne_bytes([c[0], c[1]])) / 32768.0;
                    sum += v * v;
                    n += 1;
                }
            }
            Sample::F64(_) => {
                for c in data.chunks_exact(8).take(per_plane) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    let v = f64::from_ne_bytes(b);
                    sum += v * v;
                    n += 1;
                }
            }
            _ => {}
        }
    }
    (sum, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_rfc_6464() {
        assert_eq!(level_of(0.0), 127);
        assert_eq!(level_of(1.0), 0, "full scale");
        // A full-scale sine has a mean square of 1/2: -3 dBov.
        assert_eq!(level_of(0.5), 3);
        assert_eq!(level_of(1e-4), 40);
        assert_eq!(level_of(1e-20), 127, "below the scale");
    }

    #[test]
    fn g711_tones_and_silence_are_measured() {
        // mu-law: 0xff is zero; a square wave of +-8031 (0x80 / 0x00) is near full scale.
        let mut m = LevelMeter::new(&Codec::Pcmu).unwrap();
        assert_eq!(m.measure(&[0xff; 160]), Some(127));
        let loud: Vec<u8> = (0..160).map(|i| if i % 2 == 0 { 0x80 } else { 0x00 }).collect();
        let level = m.measure(&loud).unwrap();
        assert!(level <= 2, "{level}");
        // Quieter codes: 0xc0 and 0x40 are +-1884 (about -25 dBov).
        let quiet: Vec<u8> = (0..160).map(|i| if i % 2 == 0 { 0xc0 } else { 0x40 }).collect();
        let level = m.measure(&quiet).unwrap();
        assert!((23..=27).contains(&level), "{level}");
        assert_eq!(m.measure(&[]), None);
    }
}

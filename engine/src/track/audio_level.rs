//! Who is speaking: the audio levels a publisher's client puts on its packets (RFC 6464's
//! `ssrc-audio-level` header extension, as browsers send it) are counted per track by the
//! reader task ([`AudioLevels`], atomics only), and read every [`OBSERVE_EVERY`] by the room,
//! which smooths them ([`SpeechDetector`]) into the call's active speakers. Packets that carry
//! no level (WHIP encoders, cameras) are measured by a [`MeasureLevel`] the server installs
//! ([`install_meters`]: the engine decodes no audio itself). No I/O.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The header extension's URI (RFC 6464).
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// How often a room reads its tracks' levels.
pub const OBSERVE_EVERY: Duration = Duration::from_millis(300);
/// A packet at or above this loudness (-dBov: 0 is loudest, 127 silence) is voice.
const ACTIVE_LEVEL: u8 = 35;
/// The share of an interval's packets (percent) that must be voice for it to count as speech
/// (so a click or a cough is not a speaker).
const MIN_VOICE_PERCENT: u32 = 40;
/// Packets the server decodes to measure, per track and [`OBSERVE_EVERY`], at most: 100 a
/// second, five times what a 20 ms packetization sends.
const MAX_MEASURED: u32 = 30;
/// A smoothed level (linear amplitude, 0 to 1) at or above this is speaking.
const SPEAKING_LEVEL: f64 = 0.005;
/// Each interval without speech keeps this much of the smoothed level: about two intervals
/// of hangover after the last word.
const DECAY: f64 = 0.5;

/// The linear amplitude (0 to 1) of a level in -dBov.
fn amplitude(level: u8) -> f64 {
    10f64.powf(-f64::from(level.min(127)) / 20.0)
}

/// The level (-dBov, 0 to 127) in an audio level extension's payload; `None` if it is empty.
pub fn parse_level(payload: &[u8]) -> Option<u8> {
    payload.first().map(|b| b & 0x7f)
}

/// Measures the level of audio packets (-dBov, 0 to 127) by decoding them, for publishers
/// whose packets carry none.
pub trait MeasureLevel: Send {
    /// The level of one packet's payload; `None` if it says nothing (undecodable).
    fn measure(&mut self, payload: &[u8]) -> Option<u8>;
}

/// Makes a meter for an RTP audio codec (its mime type and channel count), if it can.
pub type MeterFactory = fn(&str, u16) -> Option<Box<dyn MeasureLevel>>;

static METERS: OnceLock<MeterFactory> = OnceLock::new();

/// Installs how this process measures audio that carries no level (the server does so at
/// start; without it, such publishers are never active speakers). The first call wins.
pub fn install_meters(factory: MeterFactory) {
    let _ = METERS.set(factory);
}

/// A meter for audio of `mime` with `channels`, if one is installed and takes that codec.
pub fn meter_for(mime: &str, channels: u16) -> Option<Box<dyn MeasureLevel>> {
    METERS.get().and_then(|f| f(mime, channels))
}

/// One audio track's level counters, written by its reader task and taken by its room.
#[derive(Debug, Default)]
pub struct AudioLevels {
    /// The extension's id on the publisher's connection (0: it sends none).
    ext_id: AtomicU8,
    /// Levels are measured by the server (the packets carry none).
    measured: AtomicBool,
    /// Packets decoded to measure them this interval.
    decodes: AtomicU32,
    heard: AtomicU32,
    voice: AtomicU32,
    /// The sum of the voice packets' amplitudes, in millionths.
    voice_amplitude: AtomicU64,
}

/// What an interval's packets said.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Interval {
    /// Packets that carried a level.
    pub heard: u32,
    /// Of those, packets that were voice.
    pub voice: u32,
    /// The voice packets' mean amplitude (0 to 1).
    pub amplitude: f64,
}

impl AudioLevels {
    /// Sets the extension's id on the publisher's connection (0: none).
    pub fn set_extension(&self, id: u8) {
        self.ext_id.store(id, Ordering::Relaxed);
    }

    /// The extension's id, if the publisher sends it.
    pub fn extension(&self) -> Option<u8> {
        match self.ext_id.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// Marks the levels as measured by the server (the publisher's packets carry none).
    pub fn set_measured(&self) {
        self.measured.store(true, Ordering::Relaxed);
    }

    /// Whether this track has levels: from the publisher's packets or measured.
    pub fn reported(&self) -> bool {
        self.extension().is_some() || self.measured.load(Ordering::Relaxed)
    }

    /// Counts one packet the server is about to decode to measure it; false (leave it) once
    /// [`MAX_MEASURED`] were this interval, so a publisher flooding audio packets, or sending
    /// garbage, does not make it decode them all.
    pub fn may_measure(&self) -> bool {
        self.decodes.fetch_add(1, Ordering::Relaxed) < MAX_MEASURED
    }

    /// Counts one packet's level (-dBov).
    pub fn observe(&self, level: u8) {
        self.heard.fetch_add(1, Ordering::Relaxed);
        if level <= ACTIVE_LEVEL {
            self.voice.fetch_add(1, Ordering::Relaxed);
            self.voice_amplitude
                .fetch_add((amplitude(level) * 1e6) as u64, Ordering::Relaxed);
        }
    }

    /// What was counted since the last call, and starts a new interval.
    pub fn take(&self) -> Interval {
        self.decodes.store(0, Ordering::Relaxed);
        let heard = self.heard.swap(0, Ordering::Relaxed);
        let voice = self.voice.swap(0, Ordering::Relaxed);
        let sum = self.voice_amplitude.swap(0, Ordering::Relaxed);
        Interval {
            heard,
            voice,
            amplitude: if voice == 0 {
                0.0
            } else {
                sum as f64 / 1e6 / f64::from(voice)
            },
        }
    }
}

/// One track's smoothed level across intervals.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpeechDetector {
    level: f64,
}

impl SpeechDetector {
    /// Takes in one interval; returns whether the track is speaking now.
    pub fn update(&mut self, i: Interval) -> bool {
        let speech = i.heard > 0 && i.voice * 100 >= i.heard * MIN_VOICE_PERCENT;
        let now = if speech { i.amplitude } else { 0.0 };
        self.level = now.max(self.level * DECAY);
        self.speaking()
    }

    /// Whether the smoothed level is speech.
    pub fn speaking(&self) -> bool {
        self.level >= SPEAKING_LEVEL
    }

    /// The smoothed level, 0 to 1 (linear amplitude).
    pub fn level(&self) -> f64 {
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(levels: &[u8]) -> Interval {
        let l = AudioLevels::default();
        for &v in levels {
            l.observe(v);
        }
        l.take()
    }

    #[test]
    fn the_level_is_the_low_seven_bits() {
        assert_eq!(parse_level(&[0x80 | 30]), Some(30));
        assert_eq!(parse_level(&[127]), Some(127));
        assert_eq!(parse_level(&[]), None);
    }

    #[test]
    fn an_interval_counts_voice_packets_and_their_mean_amplitude() {
        let i = interval(&[20, 20, 127, 127]);
        assert_eq!((i.heard, i.voice), (4, 2));
        assert!((i.amplitude - 0.1).abs() < 1e-3, "{i:?}");
        assert_eq!(interval(&[]), Interval::default());
    }

    #[test]
    fn steady_voice_speaks_silence_does_not_and_a_click_does_not() {
        let mut d = SpeechDetector::default();
        assert!(!d.update(interval(&[127; 15])));
        // One loud packet in fifteen: under the voice share.
        let mut click = [127u8; 15];
        click[3] = 10;
        assert!(!d.update(interval(&click)));
        assert!(d.update(interval(&[30; 15])));
    }

    #[test]
    fn speech_hangs_over_a_short_pause_then_stops() {
        let mut d = SpeechDetector::default();
        assert!(d.update(interval(&[20; 15])));
        assert!(d.update(interval(&[127; 15])), "one quiet interval: still speaking");
        let mut intervals = 1;
        while d.update(interval(&[127; 15])) {
            intervals += 1;
            assert!(intervals < 5, "stops within a few intervals");
        }
        assert!(d.level() < SPEAKING_LEVEL);
    }

    #[test]
    fn the_server_measures_at_most_so_many_packets_an_interval() {
        let l = AudioLevels::default();
        let measured = (0..100).filter(|_| l.may_measure()).count();
        assert_eq!(measured, MAX_MEASURED as usize);
        l.take();
        assert!(l.may_measure(), "a new interval measures again");
    }

    #[test]
    fn a_louder_speaker_has_the_higher_level() {
        let (mut a, mut b) = (SpeechDetector::default(), SpeechDetector::default());
        a.update(interval(&[10; 15]));
        b.update(interval(&[30; 15]));
        assert!(a.level() > b.level());
    }
}

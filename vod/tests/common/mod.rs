//! Helpers shared by the vod integration tests: the H.264 fixture split into access units and
//! packetized into RTP, and Opus audio made with the ffmpeg CLI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::{Bytes, BytesMut};
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;

/// The 360p30 Annex-B fixture (120 frames, GOP 30).
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/media/360p30-h264.h264")
}

/// One access unit: NAL units without start codes.
pub struct Au {
    pub nalus: Vec<Bytes>,
    pub keyframe: bool,
}

impl Au {
    pub fn annexb(&self) -> Bytes {
        let mut b = BytesMut::new();
        for n in &self.nalus {
            b.extend_from_slice(&[0, 0, 0, 1]);
            b.extend_from_slice(n);
        }
        b.freeze()
    }
}

/// The 720p30 Annex-B fixture of the simulcast tests.
pub fn fixture_720p() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/media/720p30-h264.h264")
}

/// Splits the fixture into access units (same rules as tests/src/h264.rs).
pub fn access_units() -> Vec<Au> {
    access_units_of(&fixture())
}

/// Splits an Annex-B file into access units.
pub fn access_units_of(path: &Path) -> Vec<Au> {
    let nalus = nal_units(&Bytes::from(std::fs::read(path).expect("fixture")));
    let mut out = Vec::new();
    let (mut cur, mut has_vcl, mut key) = (Vec::new(), false, false);
    for nal in nalus {
        let t = nal[0] & 0x1f;
        let vcl = (1..=5).contains(&t);
        let new = if vcl {
            has_vcl && nal.get(1).is_some_and(|b| b & 0x80 != 0)
        } else {
            has_vcl && matches!(t, 6..=9 | 14..=18)
        };
        if new {
            out.push(Au {
                nalus: std::mem::take(&mut cur),
                keyframe: key,
            });
            has_vcl = false;
            key = false;
        }
        has_vcl |= vcl;
        key |= t == 5;
        cur.push(nal);
    }
    if !cur.is_empty() {
        out.push(Au {
            nalus: cur,
            keyframe: key,
        });
    }
    out
}

/// Packetizes access units (30 fps) into RTP with rtc's H.264 payloader (STAP-A, FU-A).
pub fn packetize(aus: &[Au], first_seq: u16, first_ts: u32) -> Vec<Vec<rtp::Packet>> {
    let mut pay = H264Payloader::default();
    let mut seq = first_seq;
    aus.iter()
        .enumerate()
        .map(|(i, au)| {
            let payloads = pay.payload(1188, &au.annexb()).expect("payload");
            let n = payloads.len();
            payloads
                .into_iter()
                .enumerate()
                .map(|(k, payload)| {
                    let p = rtp_packet(payload, seq, first_ts.wrapping_add(i as u32 * 3000), k + 1 == n);
                    seq = seq.wrapping_add(1);
                    p
                })
                .collect()
        })
        .collect()
}

/// One RTP packet of a test stream (payload type 96, SSRC 1).
pub fn rtp_packet(payload: Bytes, sequence_number: u16, timestamp: u32, marker: bool) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker,
            payload_type: 96,
            sequence_number,
            timestamp,
            ssrc: 1,
            ..Default::default()
        },
        payload,
    }
}

/// Runs ffmpeg with the given arguments (quiet), panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ffprobe with the given arguments; stdout as a string.
pub fn ffprobe(args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `secs` of a 440 Hz sine as Opus packets (20 ms each): (pts on 90 kHz, packet).
pub fn opus_packets(dir: &Path, secs: u32) -> Vec<(i64, Bytes)> {
    let path = dir.join("sine.ogg");
    let p = path.to_str().expect("utf-8 path");
    let dur = format!("sine=frequency=440:sample_rate=48000:duration={secs}");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &dur,
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        "-frame_duration",
        "20",
        p,
    ]);
    ffmpeg_next::init().expect("ffmpeg init");
    let mut input = ffmpeg_next::format::input(&path).expect("open ogg");
    let mut out = Vec::new();
    let mut n = 0i64;
    for (_, pkt) in input.packets() {
        if let Some(d) = pkt.data() {
            out.push((n * 1800, Bytes::copy_from_slice(d)));
            n += 1;
        }
    }
    out
}

/// `frames` frames of 320x240 at 30 fps as an Annex-B HEVC elementary stream (libx265, a
/// keyframe every 30 frames, no B-frames, parameter sets before each).
pub fn hevc_stream(dir: &std::path::Path, frames: usize) -> Bytes {
    let path = dir.join("in.hevc");
    let p = path.to_str().expect("utf-8 path");
    let n = frames.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-frames:v",
        &n,
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-x265-params",
        "keyint=30:min-keyint=30:bframes=0:repeat-headers=1:log-level=error",
        "-f",
        "hevc",
        p,
    ]);
    Bytes::from(std::fs::read(&path).expect("the HEVC stream"))
}

/// NAL units of an Annex-B stream (without start codes).
pub fn nal_units(data: &Bytes) -> Vec<Bytes> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map(|&n| n - 3).unwrap_or(data.len());
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            out.push(data.slice(s..end));
        }
    }
    out
}

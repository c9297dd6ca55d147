//! The segmenter end to end: the H.264 fixture through RTP and the depacketizer, plus Opus
//! audio, cut into MPEG-TS segments that ffprobe reads back.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use fanfare_vod::depack::Depacketizer;
use fanfare_vod::frame::{Codec, Frame};
use fanfare_vod::segment::{Segment, SegmentEvent, Segmenter, SegmenterConfig};

/// Writes segments and a playlist into `dir`; checks parts concatenate to each segment.
fn write_hls(dir: &Path, events: &[SegmentEvent]) -> Vec<Segment> {
    let mut segs = Vec::new();
    let mut parts: Vec<u8> = Vec::new();
    let mut next_part = 0u32;
    for e in events {
        match e {
            SegmentEvent::Part {
                segment,
                index,
                duration,
                independent,
                data,
            } => {
                assert_eq!(*segment, segs.len() as u64);
                assert_eq!(*index, next_part);
                assert!(*duration > 0.0 && *duration < 1.0, "part duration {duration}");
                if *index == 0 {
                    assert!(*independent, "first part starts with a keyframe");
                }
                next_part += 1;
                parts.extend_from_slice(data);
            }
            SegmentEvent::Segment(s) => {
                assert_eq!(s.seq, segs.len() as u64);
                assert_eq!(&parts[..], &s.data()[..], "parts concatenate to the segment");
                assert!(next_part >= 2, "a 1 s segment has several 200 ms parts");
                parts.clear();
                next_part = 0;
                segs.push(s.clone());
            }
        }
    }
    let mut m3u8 = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n");
    for s in &segs {
        std::fs::write(dir.join(format!("seg{}.ts", s.seq)), s.data()).unwrap();
        if s.discontinuity {
            m3u8.push_str("#EXT-X-DISCONTINUITY\n");
        }
        writeln!(m3u8, "#EXTINF:{:.3},\nseg{}.ts", s.duration, s.seq).unwrap();
    }
    m3u8.push_str("#EXT-X-ENDLIST\n");
    std::fs::write(dir.join("index.m3u8"), m3u8).unwrap();
    segs
}

/// Checks every segment with ffprobe: h264 + aac, first video frame a keyframe.
fn probe_segments(dir: &Path, segs: &[Segment], want_audio: bool) {
    for s in segs {
        let p = dir.join(format!("seg{}.ts", s.seq));
        let p = p.to_str().unwrap();
        let codecs = common::ffprobe(&["-show_entries", "stream=codec_name", "-of", "csv=p=0", p]);
        assert!(codecs.lines().any(|l| l.trim() == "h264"), "seg {}: {codecs}", s.seq);
        if want_audio {
            assert!(codecs.lines().any(|l| l.trim() == "aac"), "seg {}: {codecs}", s.seq);
            let frames = common::ffprobe(&[
                "-select_streams",
                "a",
                "-count_packets",
                "-show_entries",
                "stream=nb_read_packets",
                "-of",
                "csv=p=0",
                p,
            ]);
            let n: u32 = frames.lines().next().unwrap_or("").trim().parse().unwrap_or(0);
            assert!(n >= 30, "seg {}: {n} AAC frames", s.seq);
        }
        let key = common::ffprobe(&[
            "-select_streams",
            "v",
            "-show_frames",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame",
            "-of",
            "csv=p=0",
            p,
        ]);
        assert_eq!(
            key.lines().next().and_then(|l| l.split(',').next()).map(str::trim),
            Some("1"),
            "seg {} starts with a keyframe",
            s.seq
        );
    }
}

#[test]
fn rtp_h264_and_opus_become_playable_segments() {
    let dir = tempfile::tempdir().unwrap();
    let aus = common::access_units();
    let pkts = common::packetize(&aus, 100, 5000);
    let mut d = Depacketizer::new("video/H264", 90000, 0, "").unwrap();
    let video: Vec<Frame> = pkts.iter().flatten().flat_map(|p| d.push(p)).collect();
    assert_eq!(video.len(), 120);
    let v0 = video[0].pts;
    let audio = common::opus_packets(dir.path(), 4);
    assert!(audio.len() >= 195, "{} opus packets", audio.len());

    // Interleave by pts on a shared origin (video rebased to 0, audio from 0).
    let mut frames: Vec<Frame> = video.into_iter().map(|f| Frame { pts: f.pts - v0, ..f }).collect();
    frames.extend(audio.into_iter().map(|(pts, data)| Frame {
        codec: Codec::Opus { channels: 2 },
        pts,
        keyframe: true,
        data,
    }));
    frames.sort_by_key(|f| (f.pts, !f.codec.is_video()));

    let mut seg = Segmenter::new(SegmenterConfig::default());
    let mut events = Vec::new();
    for f in frames {
        events.extend(seg.push(f).unwrap());
    }
    events.extend(seg.finish().unwrap());
    let segs = write_hls(dir.path(), &events);
    assert_eq!(segs.len(), 4, "GOP of 1 s, target 1 s");
    assert!(segs.iter().all(|s| !s.discontinuity));
    let total: f64 = segs.iter().map(|s| s.duration).sum();
    assert!((total - 4.0).abs() < 0.2, "EXTINF total {total}");
    probe_segments(dir.path(), &segs, true);

    let playlist = dir.path().join("index.m3u8");
    let dur = common::ffprobe(&[
        "-show_entries",
        "format=duration",
        "-of",
        "csv=p=0",
        playlist.to_str().unwrap(),
    ]);
    let dur: f64 = dur.trim().parse().unwrap();
    assert!((dur - 4.0).abs() < 0.2, "ffprobe duration {dur}");

    // Every frame decodes, and FFmpeg finds nothing wrong in the stream on the way.
    let frames = common::ffprobe(&[
        "-select_streams",
        "v",
        "-count_frames",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
        playlist.to_str().unwrap(),
    ]);
    assert_eq!(
        frames.lines().next().map(str::trim),
        Some("120"),
        "decoded video frames"
    );
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-v",
            "error",
            "-i",
            playlist.to_str().unwrap(),
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "ffmpeg's complaints");
}

#[test]
fn a_camera_reconnect_is_a_discontinuity() {
    let dir = tempfile::tempdir().unwrap();
    let aus = common::access_units();
    let mut seg = Segmenter::new(SegmenterConfig::default());
    let mut events = Vec::new();
    for round in 0..2i64 {
        // The second run starts 60 s earlier: timestamps go backwards.
        let base = 100 * 90_000 - round * 60 * 90_000;
        for (i, au) in aus.iter().enumerate() {
            let f = Frame {
                codec: Codec::H264,
                pts: base + i as i64 * 3000,
                keyframe: au.keyframe,
                data: au.annexb(),
            };
            events.extend(seg.push(f).unwrap());
        }
    }
    events.extend(seg.finish().unwrap());
    let segs = write_hls(dir.path(), &events);
    assert_eq!(segs.len(), 8);
    let disc: Vec<bool> = segs.iter().map(|s| s.discontinuity).collect();
    assert_eq!(disc, [false, false, false, false, true, false, false, false]);
    probe_segments(dir.path(), &segs, false);
}

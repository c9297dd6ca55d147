//! H.265 through the segmenter: a real HEVC stream (libx265 through the ffmpeg CLI, a keyframe
//! every 30 frames, parameter sets before each) with Opus audio becomes MPEG-TS segments that
//! ffprobe reads as hevc + aac and decodes whole, each from its own keyframe; the HEVC bytes are
//! passed through, never re-encoded.

mod common;

use bytes::{Bytes, BytesMut};
use fanfare_vod::frame::{Codec, Frame};
use fanfare_vod::segment::{Segment, SegmentEvent, Segmenter, SegmenterConfig};

const FRAMES: usize = 90;

/// Access units (Annex B) and whether each is an IRAP picture (H.265 section 7.4.2.4.4: a
/// VCL NAL unit with first_slice_segment_in_pic_flag, or a VPS/SPS/PPS/AUD/prefix SEI after
/// the picture's slices, starts the next one).
fn access_units(nals: &[Bytes]) -> Vec<(Bytes, bool)> {
    let mut out = Vec::new();
    let (mut cur, mut has_vcl, mut irap) = (BytesMut::new(), false, false);
    for nal in nals {
        let ty = (nal[0] >> 1) & 0x3f;
        let vcl = ty <= 31;
        let starts = if vcl {
            nal[2] & 0x80 != 0
        } else {
            matches!(ty, 32..=35 | 39 | 41..=44 | 48..=55)
        };
        if has_vcl && starts {
            out.push((std::mem::take(&mut cur).freeze(), irap));
            has_vcl = false;
            irap = false;
        }
        has_vcl |= vcl;
        irap |= (16..=21).contains(&ty);
        cur.extend_from_slice(&[0, 0, 0, 1]);
        cur.extend_from_slice(nal);
    }
    if has_vcl {
        out.push((cur.freeze(), irap));
    }
    out
}

fn segments(events: &[SegmentEvent]) -> Vec<Segment> {
    events
        .iter()
        .filter_map(|e| match e {
            SegmentEvent::Segment(s) => Some(s.clone()),
            SegmentEvent::Part { .. } => None,
        })
        .collect()
}

#[test]
fn hevc_and_opus_become_playable_hevc_segments() {
    let dir = tempfile::tempdir().unwrap();
    let aus = access_units(&common::nal_units(&common::hevc_stream(dir.path(), FRAMES)));
    assert_eq!(aus.len(), FRAMES);
    assert_eq!(aus.iter().filter(|(_, k)| *k).count(), FRAMES / 30);
    let mut frames: Vec<Frame> = aus
        .iter()
        .enumerate()
        .map(|(i, (data, key))| Frame {
            codec: Codec::H265,
            pts: i as i64 * 3000,
            keyframe: *key,
            data: data.clone(),
        })
        .collect();
    frames.extend(
        common::opus_packets(dir.path(), 3)
            .into_iter()
            .map(|(pts, data)| Frame {
                codec: Codec::Opus { channels: 2 },
                pts,
                keyframe: true,
                data,
            }),
    );
    frames.sort_by_key(|f| (f.pts, !f.codec.is_video()));

    // A recording's poster comes from an H.265 keyframe too.
    let key = frames
        .iter()
        .find(|f| f.keyframe && f.codec.is_video())
        .expect("a keyframe");
    let jpeg = fanfare_vod::transcode::poster_jpeg(&key.data).expect("poster from an H.265 keyframe");
    assert_eq!(&jpeg[..2], &[0xff, 0xd8]);

    let mut seg = Segmenter::new(SegmenterConfig::default());
    let mut events = Vec::new();
    for f in frames {
        events.extend(seg.push(f).expect("the segmenter takes H.265"));
    }
    events.extend(seg.finish().expect("finish"));
    let segs = segments(&events);
    assert_eq!(segs.len(), 3, "GOP of 1 s, target 1 s");

    let mut decoded = 0;
    for s in &segs {
        let path = dir.path().join(format!("seg{}.ts", s.seq));
        std::fs::write(&path, s.data()).unwrap();
        let p = path.to_str().unwrap();
        let codecs = common::ffprobe(&["-show_entries", "stream=codec_name", "-of", "csv=p=0", p]);
        assert!(codecs.lines().any(|l| l.trim() == "hevc"), "seg {}: {codecs}", s.seq);
        assert!(codecs.lines().any(|l| l.trim() == "aac"), "seg {}: {codecs}", s.seq);
        // Each segment decodes alone, from a keyframe.
        let keys = common::ffprobe(&[
            "-select_streams",
            "v",
            "-show_entries",
            "frame=key_frame",
            "-of",
            "csv=p=0",
            p,
        ]);
        // `key_frame` is the first field (side data may follow).
        let keys: Vec<&str> = keys
            .lines()
            .filter_map(|l| l.split(',').next())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            keys.first().copied(),
            Some("1"),
            "seg {} starts with a keyframe: {keys:?}",
            s.seq
        );
        decoded += keys.len();
    }
    assert_eq!(decoded, FRAMES, "every picture decodes");
}

#[test]
fn a_change_of_video_codec_starts_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let hevc = access_units(&common::nal_units(&common::hevc_stream(dir.path(), FRAMES)));
    let h264 = common::access_units();
    let mut seg = Segmenter::new(SegmenterConfig::default());
    let mut events = Vec::new();
    for (i, au) in h264.iter().take(45).enumerate() {
        let f = Frame {
            codec: Codec::H264,
            pts: i as i64 * 3000,
            keyframe: au.keyframe,
            data: au.annexb(),
        };
        events.extend(seg.push(f).unwrap());
    }
    for (i, (data, key)) in hevc.iter().enumerate() {
        let f = Frame {
            codec: Codec::H265,
            pts: (45 + i) as i64 * 3000,
            keyframe: *key,
            data: data.clone(),
        };
        events.extend(seg.push(f).unwrap());
    }
    events.extend(seg.finish().unwrap());
    let segs = segments(&events);
    let codec_of = |s: &Segment| {
        let path = dir.path().join(format!("c{}.ts", s.seq));
        std::fs::write(&path, s.data()).unwrap();
        let out = common::ffprobe(&[
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            path.to_str().unwrap(),
        ]);
        out.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned()
    };
    let codecs: Vec<String> = segs.iter().map(codec_of).collect();
    assert_eq!(codecs.first().map(String::as_str), Some("h264"), "{codecs:?}");
    assert_eq!(codecs.last().map(String::as_str), Some("hevc"), "{codecs:?}");
    let first_hevc = codecs.iter().position(|c| c == "hevc").unwrap_or(0);
    assert!(codecs[first_hevc..].iter().all(|c| c == "hevc"), "{codecs:?}");
    assert!(segs[first_hevc].discontinuity, "the codec change is a discontinuity");
}

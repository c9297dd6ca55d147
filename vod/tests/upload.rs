//! Uploads: an H.264/AAC MP4 (remux), a VP8/Opus WebM (transcode) and a file that is not media.

mod common;

use std::path::Path;

use fanfare_vod::segment::{SegmentEvent, SegmenterConfig};
use fanfare_vod::transcode::poster_jpeg;
use fanfare_vod::upload::convert_file;
use fanfare_vod::VodError;

/// Converts `path`, writes the segments next to it, checks them with ffprobe; returns the info
/// and the segment count.
fn convert_and_check(path: &Path) -> (fanfare_vod::upload::UploadInfo, usize) {
    let dir = path.parent().unwrap();
    let mut segs = Vec::new();
    let mut parts = Vec::new();
    let info = convert_file(path, SegmenterConfig::default(), &mut |e| {
        match e {
            SegmentEvent::Part { data, .. } => parts.extend_from_slice(&data),
            SegmentEvent::Segment(s) => {
                assert_eq!(&parts[..], &s.data()[..]);
                parts.clear();
                segs.push(s);
            }
        }
        Ok(())
    })
    .unwrap();
    for s in &segs {
        let p = dir.join(format!("out{}.ts", s.seq));
        std::fs::write(&p, s.data()).unwrap();
        let p = p.to_str().unwrap();
        let codecs = common::ffprobe(&["-show_entries", "stream=codec_name", "-of", "csv=p=0", p]);
        assert!(
            codecs.contains("h264") && codecs.contains("aac"),
            "seg {}: {codecs}",
            s.seq
        );
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
            key.lines().next().and_then(|l| l.split(',').next()),
            Some("1"),
            "seg {}",
            s.seq
        );
    }
    (info, segs.len())
}

#[test]
fn mp4_h264_aac_is_remuxed() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("in.mp4");
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x360:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-g",
        "30",
        "-c:a",
        "aac",
        mp4.to_str().unwrap(),
    ]);
    let (info, n) = convert_and_check(&mp4);
    assert_eq!(info.video.as_deref(), Some("h264"));
    assert_eq!(info.audio.as_deref(), Some("aac"));
    assert!((info.duration_s - 4.0).abs() < 0.2, "{}", info.duration_s);
    assert_eq!(n, 4);
    let poster = info.poster.expect("poster");
    assert_eq!(&poster[..2], &[0xff, 0xd8]);
}

#[test]
fn webm_vp8_opus_is_transcoded() {
    let dir = tempfile::tempdir().unwrap();
    let webm = dir.path().join("in.webm");
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine",
        "-t",
        "3",
        "-c:v",
        "libvpx",
        "-g",
        "30",
        "-deadline",
        "realtime",
        "-c:a",
        "libopus",
        webm.to_str().unwrap(),
    ]);
    let (info, n) = convert_and_check(&webm);
    assert_eq!(info.video.as_deref(), Some("vp8"));
    assert_eq!(info.audio.as_deref(), Some("opus"));
    assert!((info.duration_s - 3.0).abs() < 0.25, "{}", info.duration_s);
    assert!(n >= 2);
    assert!(info.poster.is_some_and(|p| p.starts_with(&[0xff, 0xd8])));
}

#[test]
fn a_text_file_is_not_media() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("notes.mp4");
    std::fs::write(&fake, "these are my meeting notes, not a video\n".repeat(50)).unwrap();
    let err = convert_file(&fake, SegmenterConfig::default(), &mut |_| Ok(())).unwrap_err();
    match err {
        VodError::BadMedia(reason) => assert!(reason.contains("not a video"), "{reason}"),
        other => panic!("expected BadMedia, got {other:?}"),
    }
}

#[test]
fn poster_from_fixture_keyframe() {
    let aus = common::access_units();
    let key = aus.iter().find(|a| a.keyframe).unwrap();
    let jpeg = poster_jpeg(&key.annexb()).unwrap();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
    assert!(poster_jpeg(b"\x00\x00\x00\x01garbage").is_err());
}

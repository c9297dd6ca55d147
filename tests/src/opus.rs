//! Opus test audio: a tone encoded by the `ffmpeg` command line (libopus, 20 ms frames), as the
//! packets a WHIP encoder such as OBS or ffmpeg would send (with no audio level on them).

use std::process::Command;
use std::sync::OnceLock;

use bytes::Bytes;

/// Two seconds of a 440 Hz tone at half scale (`sine` makes 1/8, raised 4 times: about
/// -9 dBov), as 100 Opus packets of 20 ms.
/// Encoded once per test process.
pub fn tone_packets() -> Vec<Bytes> {
    static TONE: OnceLock<Vec<Bytes>> = OnceLock::new();
    TONE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tone.ogg");
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg("sine=frequency=440:duration=2:sample_rate=48000")
            .args([
                "-af",
                "volume=4",
                "-c:a",
                "libopus",
                "-b:a",
                "32k",
                "-frame_duration",
                "20",
            ])
            .args(["-f", "ogg"])
            .arg(&path)
            .status()
            .expect("run ffmpeg");
        assert!(status.success(), "ffmpeg could not encode the Opus tone");
        let packets = ogg_packets(&std::fs::read(&path).expect("read the Opus tone"));
        assert!(packets.len() >= 90, "{} packets", packets.len());
        packets
    })
    .clone()
}

/// The audio packets of an Ogg Opus stream: each page's segments joined into packets (a
/// segment under 255 bytes ends one), the identification and comment headers left out.
fn ogg_packets(data: &[u8]) -> Vec<Bytes> {
    let (mut packets, mut current, mut at) = (Vec::new(), Vec::new(), 0);
    while data.get(at..at + 4) == Some(b"OggS".as_slice()) {
        let Some(&count) = data.get(at + 26) else { break };
        let table_end = at + 27 + usize::from(count);
        let Some(table) = data.get(at + 27..table_end) else {
            break;
        };
        let mut body = table_end;
        for &len in table {
            let Some(segment) = data.get(body..body + usize::from(len)) else {
                break;
            };
            current.extend_from_slice(segment);
            body += usize::from(len);
            if len < 255 {
                packets.push(Bytes::from(std::mem::take(&mut current)));
            }
        }
        at = body;
    }
    packets.into_iter().skip(2).collect()
}

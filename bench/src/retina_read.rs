//! `retina-read URL`: the floor under any ingest built on retina. It reads one RTSP camera the
//! way Fanfare's ingest does (retina over TCP, MP4 frame format, initial sequence number
//! ignored) on a single-threaded tokio runtime, depacketizes every stream into frames, and
//! drops them: no repacketizing, no fan-out, no HLS. `rtsp-ingest --retina-floor` measures it
//! beside Fanfare and ffmpeg. Prints the frames and bytes read when the camera ends the session.

use anyhow::{Context, Result};
use futures_util::StreamExt;
use retina::client::{InitialSequenceNumberPolicy, PlayOptions, Session, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .context("usage: retina-read rtsp://HOST:PORT/PATH")?;
    let url = url::Url::parse(&url).context("camera URL")?;
    let mut session = Session::describe(url, SessionOptions::default()).await?;
    for i in 0..session.streams().len() {
        let options = SetupOptions::default()
            .transport(Transport::default())
            .frame_format(FrameFormat::MP4);
        session.setup(i, options).await?;
    }
    let options = PlayOptions::default().initial_seq(InitialSequenceNumberPolicy::Ignore);
    let mut frames = session.play(options).await?.demuxed()?;
    let (mut count, mut bytes) = (0u64, 0u64);
    while let Some(item) = frames.next().await {
        match item? {
            CodecItem::VideoFrame(f) => {
                count += 1;
                bytes += f.data().len() as u64;
            }
            CodecItem::AudioFrame(f) => {
                count += 1;
                bytes += f.data().len() as u64;
            }
            _ => {}
        }
    }
    println!("{count} frames, {bytes} bytes");
    Ok(())
}

//! `retina-read URL`: the floor under any ingest built on retina. It reads one RTSP camera the
//! way Fanfare's ingest does (retina over TCP, MP4 frame format, initial sequence number
//! ignored) on a single-threaded tokio runtime, depacketizes every stream into frames, and
//! drops them: no repacketizing, no fan-out, no HLS. `rtsp-ingest --retina-floor` measures it
//! beside Fanfare and ffmpeg. With `--packets` after the URL it stops at retina's RTP packets
//! and depacketizes nothing, which splits retina's cost between its session and its
//! depacketizers. Prints what it read when the camera ends the session.

use anyhow::{Context, Result};
use futures_util::StreamExt;
use retina::client::{
    InitialSequenceNumberPolicy, PacketItem, PlayOptions, Session, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .context("usage: retina-read rtsp://HOST:PORT/PATH")?;
    let url = url::Url::parse(&url).context("camera URL")?;
    let packets_only = std::env::args().nth(2).as_deref() == Some("--packets");
    let mut session = Session::describe(url, SessionOptions::default()).await?;
    for i in 0..session.streams().len() {
        let options = SetupOptions::default()
            .transport(Transport::default())
            .frame_format(FrameFormat::MP4);
        session.setup(i, options).await?;
    }
    let options = PlayOptions::default().initial_seq(InitialSequenceNumberPolicy::Ignore);
    let playing = session.play(options).await?;
    let (mut count, mut bytes) = (0u64, 0u64);
    if packets_only {
        let mut packets = Box::pin(playing);
        while let Some(item) = packets.next().await {
            if let PacketItem::Rtp(p) = item? {
                count += 1;
                bytes += p.payload().len() as u64;
            }
        }
        println!("{count} RTP packets, {bytes} bytes");
        return Ok(());
    }
    let mut frames = playing.demuxed()?;
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

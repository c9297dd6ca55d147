//! `send-path`: what one forwarded RTP packet costs the WebRTC stack itself, per viewer, with
//! no sockets, no runtime and no fan-out code of ours: N server-side peer connections are
//! established in memory with N client peers of the same stack, then one thread sends the same
//! packet stream to every server peer and drains the encrypted datagrams each produces. Run for
//! `rtc` 0.21 (the sans-IO core under the `webrtc` crate the engine uses) and `str0m` 0.24, to
//! decide whether swapping the media stack would reach issue 3's per-packet targets.

mod measure;
mod rtc_stack;
mod str0m_stack;

fn main() -> anyhow::Result<()> {
    measure::main()
}

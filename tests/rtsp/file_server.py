#!/usr/bin/python3
"""An RTSP camera that serves a pre-encoded H.264 file without re-encoding, looping forever:
GStreamer's RTSP server (through GI), one shared media for all clients, paced in real time.

The file is a raw Annex-B H.264 elementary stream (`.h264`, no B-frames, as cameras send).
`multifilesrc loop=true` re-reads it at its end and `h264parse` keeps interpolating decode
timestamps across the loop from `--fps`. The parser leaves the presentation timestamp unset
(it does not interpolate PTS), and `rtph264pay` takes its RTP timestamp from the PTS; a probe
therefore copies DTS into PTS (valid without B-frames). The sinks sync on those timestamps, so
the file plays at its frame rate.

Run with Debian's /usr/bin/python3 (it has `gi`). Prints `READY <port>` once listening; exits
when stdin closes or on SIGTERM/SIGINT.

    /usr/bin/python3 tests/rtsp/file_server.py --file in.h264 [--port 8554 --path /cam --fps 30]
"""

import argparse
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer  # noqa: E402

import serving  # noqa: E402  (tests/rtsp/serving.py, beside this script)


def pts_from_dts(_pad, info):
    buf = info.get_buffer()
    if buf is not None and buf.pts == Gst.CLOCK_TIME_NONE:
        buf.pts = buf.dts
    return Gst.PadProbeReturn.OK


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--file", required=True, help="raw H.264 (Annex B) without B-frames")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--path", default="/cam")
    p.add_argument("--fps", type=int, default=30)
    args = p.parse_args()
    if not os.path.isfile(args.file):
        print(f"no such file: {args.file}", file=sys.stderr, flush=True)
        sys.exit(1)

    Gst.init(None)
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    launch = (
        f'multifilesrc location="{location}" loop=true '
        f"caps=video/x-h264,stream-format=byte-stream,framerate={args.fps}/1 "
        "! h264parse name=parse ! rtph264pay name=pay0 pt=96 config-interval=-1"
    )

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {launch} )")
    factory.set_shared(True)

    def configure(_factory, media):
        parse = media.get_element().get_by_name("parse")
        parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, pts_from_dts)

    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(args.path, factory)
    serving.run(server, args.port)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""A real RTSP camera for Fanfare's ingest tests: GStreamer's RTSP server (through GI) serving
a live test pattern as H.264 (x264enc) or H.265 (x265enc, in gstreamer1.0-plugins-bad), both
zerolatency with a keyframe every 30 frames, optionally with AAC audio (voaacenc or avenc_aac,
when installed) or Opus audio (opusenc), Basic or Digest authentication, and RTSP over TLS
(`rtsps://`, with `--tls-cert`/`--tls-key`: PEM files; GIO's TLS backend is glib-networking).

Run with Debian's /usr/bin/python3 (it has `gi`). Prints `READY <port> audio=<codec|none>
video=<codec> tls=<on|off> videos=<1|2>` once listening; exits when stdin closes or on SIGTERM/SIGINT.

    /usr/bin/python3 tests/rtsp/server.py --port 8554 --path /cam [--user u --password p
        [--auth digest|basic]] [--audio [aac|opus|none]] [--video h264|h265]
        [--width 320 --height 240 --fps 30 --kbps 0] [--tls-cert cert.pem --tls-key key.pem]
        [--own-content-base] [--second-video] [--bframes N [--b-pyramid]]

With --second-video the session also carries a second H.264 stream after the audio: 160x120
noise at 600 kbit/s, several times the default ball pattern's rate, so the two streams are told
apart by their bitrates.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import Gio, Gst, GstRtsp, GstRtspServer  # noqa: E402

import serving  # noqa: E402  (tests/rtsp/serving.py, beside this script)


def aac_encoder():
    for name in ("voaacenc", "avenc_aac", "fdkaacenc"):
        if Gst.ElementFactory.find(name) is not None:
            return name
    return None


def video_pipeline(args):
    """The video branch (payloader pay0): H.264 or H.265 with parameter sets before each IDR."""
    source = (
        f"videotestsrc is-live=true pattern={args.pattern} ! video/x-raw,width={args.width},"
        f"height={args.height},framerate={args.fps}/1"
    )
    bitrate = f" bitrate={args.kbps}" if args.kbps > 0 else ""
    if args.video == "h265":
        return (
            f"{source} ! x265enc tune=zerolatency key-int-max=30 speed-preset=ultrafast{bitrate} "
            "! video/x-h265,profile=main ! rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    if args.bframes > 0:
        # B-frames: decode order differs from display order (zerolatency would turn them off).
        # Without B-pyramid no frame refers to a B-frame, as from most cameras; with it
        # (--b-pyramid), some B-frames are references.
        return (
            f"{source} ! x264enc bframes={args.bframes} b-adapt=false b-pyramid={str(args.b_pyramid).lower()} "
            "rc-lookahead=0 sync-lookahead=0 "
            f"key-int-max=30 speed-preset=ultrafast{bitrate} "
            "! video/x-h264,profile=main ! rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    return (
        f"{source} ! x264enc tune=zerolatency key-int-max=30 speed-preset=ultrafast{bitrate} "
        "! rtph264pay name=pay0 pt=96 config-interval=-1"
    )


def audio_pipeline(codec):
    """The audio branch (payloader pay1) and the codec it carries, or (None, "none")."""
    if codec == "none":
        return None, "none"
    if codec == "opus":
        encoder, payloader, caps = "opusenc", "rtpopuspay", "rate=48000,channels=2"
    else:
        encoder, payloader, caps = aac_encoder(), "rtpmp4gpay", "rate=48000,channels=1"
        if encoder is None:
            print("no AAC encoder: serving video only", file=sys.stderr, flush=True)
            return None, "none"
    return (
        f"audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! "
        f"audio/x-raw,{caps} ! {encoder} ! {payloader} name=pay1 pt=97"
    ), codec


def announce_own_url(server, own):
    """Makes DESCRIBE answers carry `Content-Base: <own>` (the camera's own URL, as cameras
    configured with their address send) instead of GStreamer's echo of the request URL, so
    clients build SETUP/PLAY URLs from it."""

    def send_message(_client, _ctx, message):
        # PyGObject warns once that it cannot marshal the context argument; only the message
        # is used.
        found, _value = message.get_header(GstRtsp.RTSPHeaderField.CONTENT_BASE, 0)
        if found == GstRtsp.RTSPResult.OK:
            message.remove_header(GstRtsp.RTSPHeaderField.CONTENT_BASE, -1)
            message.add_header(GstRtsp.RTSPHeaderField.CONTENT_BASE, own)

    server.connect("client-connected", lambda _server, client: client.connect("send-message", send_message))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--path", default="/cam")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--auth", choices=["digest", "basic"], default="digest")
    p.add_argument(
        "--audio",
        nargs="?",
        const="aac",
        default="none",
        choices=["aac", "opus", "none"],
        help="add an audio track (bare --audio: AAC, if an encoder exists)",
    )
    p.add_argument("--video", choices=["h264", "h265"], default="h264")
    p.add_argument("--bframes", type=int, default=0, help="H.264 B-frames between references (0: none)")
    p.add_argument("--b-pyramid", action="store_true", help="with --bframes 2 or more: B-frames that others refer to")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--kbps", type=int, default=0, help="video encoder bitrate in kbit/s (0: its default)")
    p.add_argument("--pattern", default="ball", help="videotestsrc pattern (snow: incompressible)")
    p.add_argument("--tls-cert", help="PEM certificate: serve RTSP over TLS (rtsps://) only")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--second-video", action="store_true", help="add a second H.264 stream (160x120 noise, 600 kbit/s)")
    p.add_argument(
        "--own-content-base",
        action="store_true",
        help="answer DESCRIBE with Content-Base rtsp[s]://127.0.0.1:PORT/PATH/ (the camera's own URL)",
    )
    args = p.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")

    Gst.init(None)
    launch = video_pipeline(args)
    audio, audio_codec = audio_pipeline(args.audio)
    if audio:
        launch += " " + audio
    if args.second_video:
        # Payloaders are found by consecutive names: pay1 without audio, else pay2.
        pay = "pay2" if audio else "pay1"
        launch += (
            f" videotestsrc is-live=true pattern=snow ! video/x-raw,width=160,height=120,"
            f"framerate={args.fps}/1 ! x264enc tune=zerolatency key-int-max=30 speed-preset=ultrafast "
            f"bitrate=600 ! rtph264pay name={pay} pt=98 config-interval=-1"
        )

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {launch} )")
    factory.set_shared(True)

    if args.user is not None or args.tls_cert is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "camuser")
        if args.user is None:
            # TLS without users: with an auth object installed, anonymous clients are only let
            # in with a default token whose role may access the factory.
            auth.set_default_token(token)
        elif args.auth == "digest":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(args.user, args.password or "", token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            basic = GstRtspServer.RTSPAuth.make_basic(args.user, args.password or "")
            auth.add_basic(basic, token)
        if args.tls_cert is not None:
            auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(args.tls_cert, args.tls_key))
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role("camuser")
        permissions.add_permission_for_role("camuser", "media.factory.access", True)
        permissions.add_permission_for_role("camuser", "media.factory.construct", True)
        factory.set_permissions(permissions)

    if args.own_content_base:
        scheme = "rtsps" if args.tls_cert else "rtsp"
        announce_own_url(server, f"{scheme}://127.0.0.1:{args.port}{args.path.rstrip('/')}/")
    server.get_mount_points().add_factory(args.path, factory)
    tls = "on" if args.tls_cert else "off"
    videos = 2 if args.second_video else 1
    serving.run(server, args.port, f" audio={audio_codec} video={args.video} tls={tls} videos={videos}")


if __name__ == "__main__":
    main()

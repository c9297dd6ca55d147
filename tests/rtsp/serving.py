"""What the test cameras share: attach a GStreamer RTSP server, print READY, and run until
SIGTERM/SIGINT or until stdin closes (so a test that dies takes its camera with it)."""

import os
import signal
import sys
import threading

from gi.repository import GLib


def run(server, port, ready_extra=""):
    """Attaches `server` (an RTSPServer bound to `port`) and runs its main loop."""
    if server.attach(None) == 0:
        print(f"cannot listen on port {port}", file=sys.stderr, flush=True)
        sys.exit(1)

    loop = GLib.MainLoop()

    def stop(*_):
        GLib.idle_add(loop.quit)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def watch_stdin():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        stop()

    threading.Thread(target=watch_stdin, daemon=True).start()
    # Wake the main loop regularly so Python signal handlers run.
    GLib.timeout_add(200, lambda: True)
    print(f"READY {server.get_bound_port()}{ready_extra}", flush=True)
    loop.run()

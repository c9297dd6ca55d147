//! A real RTSP camera for tests: GStreamer's RTSP server (`tests/rtsp/server.py`, Debian's
//! python3-gi) serving a test pattern, as a process the test owns and ends by PID.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::workspace;

/// A GStreamer RTSP camera process, killed (by PID) on drop.
pub struct Camera {
    child: Child,
    pub port: u16,
    /// The audio codec it serves: `aac` (when an AAC encoder is installed), `opus` or `none`.
    pub audio: String,
}

impl Camera {
    /// Starts a camera on `port` serving `/cam` (extra args: `--audio [aac|opus]`, `--video
    /// h265`, `--user u --password p`).
    pub fn start(port: u16, extra: &[&str]) -> Camera {
        let mut child = Command::new("/usr/bin/python3")
            .arg(workspace().join("tests/rtsp/server.py"))
            .args(["--port", &port.to_string(), "--path", "/cam"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the RTSP camera (python3-gi and gir1.2-gst-rtsp-server-1.0 installed?)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = tx.send(line);
                }
            }
        });
        let audio = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                eprintln!("camera: {line}");
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix("audio="))
                    .unwrap_or("none")
                    .to_owned()
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the RTSP camera did not get ready on port {port}");
            }
        };
        Camera { child, port, audio }
    }

    /// Its URL, `rtsp://127.0.0.1:{port}/cam`.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// The camera process's PID (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

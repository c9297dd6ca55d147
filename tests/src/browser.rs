//! Running the Node scripts of `tests/browser/` (playwright-core driving Debian's Chromium):
//! each prints one JSON report line on stdout; the browser's console goes to stderr.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::workspace;

/// How a script ended.
pub struct NodeRun {
    /// Exit status 0.
    pub success: bool,
    /// The exit status, as text.
    pub status: String,
    /// The last JSON line of stdout (`Value::Null` if none).
    pub report: Value,
    pub stderr: String,
}

/// Panics with the fix when Chromium or the npm packages are missing.
pub fn require_tools() {
    assert!(
        workspace().join("tests/browser/node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `scripts/setup.sh test` (it runs `npm ci` there)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run `scripts/setup.sh test`"
    );
}

/// Where browser tests put screenshots: `<target>/test-output/browser` (created).
pub fn output_dir() -> std::path::PathBuf {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"))
        .join("test-output/browser");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// Runs `tests/browser/<script>` with `args` for at most `limit`; `None` if it ran over (it is
/// killed).
pub async fn run(script: &str, args: Vec<OsString>, limit: Duration) -> Option<NodeRun> {
    let dir = workspace().join("tests/browser");
    let child = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node (is Node.js installed? run `scripts/setup.sh test`)");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .ok()?
        .expect("wait for node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    Some(NodeRun {
        success: out.status.success(),
        status: out.status.to_string(),
        report: stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `args` as the `OsString`s [`run`] takes.
pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(items: I) -> Vec<OsString> {
    items.into_iter().map(Into::into).collect()
}

/// Writes `secs` of a steady 300 Hz tone, about -13 dBFS, as a 48 kHz mono 16-bit WAV file:
/// what Chromium's fake microphone plays (`--use-file-for-fake-audio-capture`), loud enough
/// for its audio level to read as speech.
pub fn write_tone_wav(path: &std::path::Path, secs: u32) {
    const RATE: u32 = 48_000;
    let samples = RATE * secs;
    let mut wav = Vec::with_capacity(44 + samples as usize * 2);
    let data_len = samples * 2;
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = f64::from(i) / f64::from(RATE);
        let v = (0.3 * (2.0 * std::f64::consts::PI * 300.0 * t).sin() * f64::from(i16::MAX)) as i16;
        wav.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, wav).expect("write the tone");
}

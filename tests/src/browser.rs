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

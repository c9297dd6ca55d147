// Plays an HLS playlist in headless Chromium (Debian's /usr/bin/chromium, playwright-core)
// through assets/tools/hls.html (hls.js, bundled): passes when the video's currentTime advances
// by at least 2 s, it has a picture (videoWidth > 0) and hls.js reports no fatal error.
//
// Usage: node hls_play.mjs --base http://127.0.0.1:PORT --src <playlist URL> [--out FILE.png]
// Prints one JSON line ({"ok", "currentTime", "videoWidth", "fatal", ...}); exits 0 on success.

import { chromium } from "playwright-core";

const HARD_TIMEOUT_MS = 45_000;
const flags = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) flags[argv[i].replace(/^--/, "")] = argv[i + 1];

const result = { ok: false, currentTime: 0, startTime: null, videoWidth: 0, fatal: null, error: null };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const timer = setTimeout(() => {
  result.error = "timed out";
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(1);
}, HARD_TIMEOUT_MS);

let browser;
try {
  browser = await chromium.launch({
    executablePath: flags.chromium || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required", "--no-first-run",
           "--disable-background-networking"],
  });
  const page = await browser.newPage();
  page.on("console", (m) => process.stderr.write(`[page] ${m.text()}\n`));
  await page.goto(`${flags.base}/tools/hls.html?src=${encodeURIComponent(flags.src)}`);
  const deadline = Date.now() + 35_000;
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => {
      const v = document.getElementById("v");
      return { t: v.currentTime, w: v.videoWidth, fatal: window.hlsState.fatal };
    });
    result.currentTime = s.t;
    result.videoWidth = s.w;
    result.fatal = s.fatal;
    if (s.fatal) break;
    if (result.startTime === null && s.t > 0) result.startTime = s.t;
    if (result.startTime !== null && s.t - result.startTime >= 2 && s.w > 0) {
      result.ok = true;
      break;
    }
    await sleep(250);
  }
  if (flags.out) await page.screenshot({ path: flags.out });
} catch (e) {
  result.error = String(e);
} finally {
  if (browser) await browser.close().catch(() => {});
  clearTimeout(timer);
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exitCode = result.ok ? 0 : 1;

// What the browser scripts share: flag parsing, timers, the one-line JSON report, Chromium's
// flags for WebRTC on loopback, closing the browser without hanging on a page that no longer
// answers, and the frame of a script that drives one page (`runPage`).

import fs from "node:fs";
import { chromium } from "playwright-core";

/** `--key value` / `--key=value` flags into an object. */
export function parseFlags(argv) {
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    let [k, v] = argv[i].replace(/^--/, "").split(/=(.*)/s, 2);
    if (v === undefined) v = argv[++i];
    flags[k] = v;
  }
  return flags;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Writes `value` as JSON to `file` whole (to a temporary file, then renamed): a reader never
 *  sees half of it. */
export function writeJsonWhole(file, value) {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(value));
  fs.renameSync(tmp, file);
}
/** A timer that does not keep the process alive once everything else is done. */
export const grace = (ms) => new Promise((r) => setTimeout(r, ms).unref());

/** Ends the script after `ms` if it is still running: records the timeout in `result`, runs
 *  `report` (screenshots, what the pages show; awaited), prints the result with `finish`,
 *  gives `cleanup` 3 s and exits 1. Returns the timer, for `clearTimeout` on success. */
export function giveUpAfter(ms, result, finish, cleanup, report = async () => {}) {
  return setTimeout(async () => {
    result.error = `gave up after ${ms / 1000} s`;
    await report();
    finish(1);
    await Promise.race([cleanup(), grace(3_000)]);
    process.exit(1); // playwright kills the browser it launched on exit
  }, ms);
}

/** A stderr logger prefixed with `name` and seconds since start, and `finish(code)`, which
 *  prints `result` as the one JSON line on stdout (once) and sets the exit code. */
export function reporter(name, result) {
  const started = Date.now();
  const secs = () => ((Date.now() - started) / 1000).toFixed(1);
  let printed = false;
  return {
    log: (m) => process.stderr.write(`[${name} ${secs()}s] ${m}\n`),
    finish(code) {
      if (printed) return;
      printed = true;
      result.elapsedMs = Date.now() - started;
      process.stdout.write(JSON.stringify(result) + "\n");
      process.exitCode = code;
    },
  };
}

/** Lets each page's app close its connection (2 s at most), then closes the browser (5 s). */
export async function closeBrowser(browser, pages) {
  await Promise.race([
    Promise.all(pages.map((p) => p.evaluate(() => window.fanfareApp?.ff?.close()).catch(() => {}))),
    grace(2_000),
  ]);
  await Promise.race([browser.close().catch(() => {}), grace(5_000)]);
}

/** Chromium flags for headless WebRTC over loopback inside the test's network namespace. */
export const WEBRTC_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--autoplay-policy=no-user-gesture-required",
  "--allow-loopback-in-peer-connection",
  "--disable-background-networking",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];

/** Chromium flags for a fake camera and microphone, granted without asking. */
export const FAKE_MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"];

/** Lets each `tools/loopback.html` page of a persistent `context` end its sessions (2 s at
 *  most), closes the context (5 s) and removes its profile directory. Either may be null. */
export async function closeLoopbackContext(context, userDataDir) {
  if (context) {
    await Promise.race([
      Promise.all(context.pages().map((p) => p.evaluate(() => window.fanfareStop && window.fanfareStop()).catch(() => {}))),
      grace(2_000),
    ]);
    await Promise.race([context.close().catch(() => {}), grace(5_000)]);
  }
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
}

/** Runs a script that drives one page, in the frame every such script needs: checks the
 *  `required` flags of `args`, launches Chromium (`extraArgs` after the WebRTC flags), opens a
 *  page (`pageOptions`) at the server's origin (`--base` + `/healthz`, so it can import
 *  `/fanfare.js`) with its console logged, and awaits `main(page, log)`. An error ends up in
 *  `result.error`; the browser is closed either way, `result` printed, and the exit code is 0
 *  when `main` set `result.ok`. After `timeoutMs` it gives up (`giveUpAfter`). */
export async function runPage({ name, result, args, required, timeoutMs, extraArgs = [], pageOptions = {} }, main) {
  const { log, finish } = reporter(name, result);
  let browser = null;
  let page = null;
  const cleanup = async () => {
    const b = browser;
    browser = null;
    if (b) await closeBrowser(b, page ? [page] : []);
  };
  const hardTimer = giveUpAfter(timeoutMs, result, finish, cleanup);
  try {
    for (const k of required) {
      if (!args[k]) throw new Error(`need --${k} (see the top of ${name}.mjs)`);
    }
    browser = await chromium.launch({
      executablePath: args.chromium || "/usr/bin/chromium",
      headless: true,
      args: [...WEBRTC_ARGS, ...extraArgs],
    });
    page = await browser.newPage(pageOptions);
    page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log(`page error: ${e.message}`));
    await page.goto(`${args.base.replace(/\/+$/, "")}/healthz`);
    await main(page, log);
  } catch (e) {
    result.error = e && e.message ? e.message : String(e);
  }
  clearTimeout(hardTimer);
  await cleanup();
  finish(result.ok ? 0 : 1);
}

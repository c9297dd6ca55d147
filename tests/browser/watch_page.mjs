// Opens assets/tools/loopback.html in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) as a viewer only (publish=no): the page plays --peer with WHEP. Every 250 ms
// it writes the page's stats (framesDecoded, videoWidth, videoHeight, ...) as one JSON object
// to --stats-file, so the test driving it can change the network and watch what the browser
// shows. Stops when --stop-file exists (or after 150 s).
//
// Usage:
//   node watch_page.mjs --base http://127.0.0.1:PORT --group G --user U --token T --peer P \
//        --stats-file PATH --stop-file PATH
//
// Prints one JSON line on stdout ({"ok":..., "samples":N, "widths":[...], "last":{...}}),
// "widths" being the distinct picture widths seen in order; the browser's console goes to
// stderr. Exits 0 when the page decoded video and reported no error, 1 otherwise.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { WEBRTC_ARGS, closeLoopbackContext, giveUpAfter, parseFlags, reporter, sleep, writeJsonWhole } from "./common.mjs";

const HARD_TIMEOUT_MS = 150_000;
const SAMPLE_MS = 250;

const args = parseFlags(process.argv.slice(2));
const result = { ok: false, samples: 0, widths: [], last: null, error: null };
const { log, finish } = reporter("watch_page", result);
let context = null;
let userDataDir = null;

async function cleanup() {
  const c = context;
  context = null;
  await closeLoopbackContext(c, userDataDir);
}

const hardTimer = giveUpAfter(HARD_TIMEOUT_MS, result, finish, cleanup);

async function main() {
  for (const k of ["base", "group", "user", "token", "peer", "stats-file", "stop-file"]) {
    if (!args[k]) throw new Error(`need --${k} (see the top of watch_page.mjs)`);
  }
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "fanfare-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: args.chromium || "/usr/bin/chromium",
    headless: true,
    args: WEBRTC_ARGS,
  });
  const page = await context.newPage();
  page.on("console", (m) => log(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log(`page error: ${e.message}`));
  const q = new URLSearchParams({ token: args.token, group: args.group, peer: args.peer, publish: "no" });
  await page.goto(`${args.base.replace(/\/+$/, "")}/tools/loopback.html?${q}`);

  while (!fs.existsSync(args["stop-file"])) {
    const s = await page.evaluate(async () => ({ ...(await window.fanfareStats()), error: window.fanfareError || null }));
    s.at = Date.now();
    if (s.error) throw new Error(s.error);
    if (s.videoWidth > 0 && result.widths[result.widths.length - 1] !== s.videoWidth) {
      result.widths.push(s.videoWidth);
      log(`picture ${s.videoWidth}x${s.videoHeight} after ${s.framesDecoded} frames`);
    }
    writeJsonWhole(args["stats-file"], s);
    result.samples += 1;
    result.last = s;
    await sleep(SAMPLE_MS);
  }
  result.ok = !!result.last && result.last.framesDecoded > 0;
}

try {
  await main();
} catch (e) {
  result.error = e && e.message ? e.message : String(e);
}
clearTimeout(hardTimer);
await cleanup();
finish(result.ok ? 0 : 1);

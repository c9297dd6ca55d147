// Opens assets/tools/loopback.html twice in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core): user A watches user B and B watches A. Passes when each page has
// decoded more than 30 frames, keeps decoding for 2 s, and shows a picture (videoWidth > 0).
//
// Usage:
//   node two_pages.mjs --base http://127.0.0.1:PORT --group room1 --out DIR \
//        --user alice --token TOKEN_A --user bob --token TOKEN_B [--tcp-only yes]
// With --tcp-only, the pages exchange only TCP candidates with the server (loopback.html's
// transport=tcp), so both connections must go over the server's ICE-TCP port; the run passes
// only if every selected candidate pair is TCP.
// Every flag may also come from the environment: FANFARE_BASE, FANFARE_GROUP, BROWSER_OUT,
// BROWSER_USER_A, BROWSER_TOKEN_A, BROWSER_USER_B, BROWSER_TOKEN_B, CHROMIUM (executable).
//
// Prints one JSON line on stdout ({"ok":..., "pages":[...]}); the browser's console goes to
// stderr. Exits 0 on success, 1 otherwise; gives up after 60 s.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { FAKE_MEDIA_ARGS, WEBRTC_ARGS, closeLoopbackContext, giveUpAfter, reporter, sleep } from "./common.mjs";

const HARD_TIMEOUT_MS = 60_000;
const MIN_FRAMES = 30;
const GROWTH_WINDOW_MS = 2_000;

function parseArgs(argv) {
  const flags = { user: [], token: [] };
  for (let i = 0; i < argv.length; i++) {
    let [key, value] = argv[i].replace(/^--/, "").split(/=(.*)/s, 2);
    if (value === undefined) value = argv[++i];
    if (Array.isArray(flags[key])) flags[key].push(value);
    else flags[key] = value;
  }
  const env = process.env;
  return {
    base: (flags.base || env.FANFARE_BASE || "").replace(/\/+$/, ""),
    group: flags.group || env.FANFARE_GROUP || "room1",
    out: flags.out || env.BROWSER_OUT || path.join(os.tmpdir(), "fanfare-browser"),
    chromium: flags.chromium || env.CHROMIUM || "/usr/bin/chromium",
    tcpOnly: (flags["tcp-only"] || env.BROWSER_TCP_ONLY || "") === "yes",
    users: [
      { user: flags.user[0] || env.BROWSER_USER_A, token: flags.token[0] || env.BROWSER_TOKEN_A },
      { user: flags.user[1] || env.BROWSER_USER_B, token: flags.token[1] || env.BROWSER_TOKEN_B },
    ],
  };
}

const started = Date.now();
const result = { ok: false, pages: [], error: null, elapsedMs: 0 };
const { log, finish } = reporter("two_pages", result);

const args = parseArgs(process.argv.slice(2));
let context = null;
let userDataDir = null;
const pages = [];

async function cleanup() {
  const c = context;
  context = null;
  await closeLoopbackContext(c, userDataDir);
}

const hardTimer = giveUpAfter(HARD_TIMEOUT_MS, result, finish, cleanup);

async function main() {
  if (!args.base || args.users.some((u) => !u.user || !u.token)) {
    throw new Error("need --base and two --user/--token pairs (see the top of two_pages.mjs)");
  }
  fs.mkdirSync(args.out, { recursive: true });
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "fanfare-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: args.chromium,
    headless: true,
    args: [...WEBRTC_ARGS, ...FAKE_MEDIA_ARGS],
  });
  log(`chromium ${context.browser()?.version() ?? "(persistent context)"} started`);

  const [a, b] = args.users;
  const pairs = [
    { user: a.user, token: a.token, peer: b.user },
    { user: b.user, token: b.token, peer: a.user },
  ];
  for (const p of pairs) {
    const page = await context.newPage();
    page.on("console", (m) => log(`${p.user} console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log(`${p.user} page error: ${e.message}`));
    const q = new URLSearchParams({ token: p.token, group: args.group, peer: p.peer });
    if (args.tcpOnly) q.set("transport", "tcp");
    await page.goto(`${args.base}/tools/loopback.html?${q}`);
    pages.push({ ...p, page });
  }

  const stats = (p) =>
    p.page.evaluate(async () => ({ ...(await window.fanfareStats()), error: window.fanfareError || null }));

  // Wait until every page has decoded enough frames and shows a picture.
  const deadline = started + HARD_TIMEOUT_MS - 10_000;
  let last = [];
  for (;;) {
    last = await Promise.all(pages.map(stats));
    const failed = last.find((s) => s.error);
    if (failed) throw new Error(failed.error);
    if (last.every((s) => s.framesDecoded > MIN_FRAMES && s.videoWidth > 0)) break;
    if (Date.now() > deadline) {
      throw new Error("the pages did not decode enough video in time: " + JSON.stringify(last));
    }
    await sleep(250);
  }
  log(`both pages decode: ${JSON.stringify(last)}`);

  // Decoding must go on.
  await sleep(GROWTH_WINDOW_MS);
  const after = await Promise.all(pages.map(stats));
  for (let i = 0; i < pages.length; i++) {
    const p = pages[i];
    const screenshot = path.join(args.out, `${p.user}-watches-${p.peer}.png`);
    await p.page.screenshot({ path: screenshot }).catch((e) => log(`screenshot failed: ${e.message}`));
    result.pages.push({
      user: p.user,
      peer: p.peer,
      framesDecodedBefore: last[i].framesDecoded,
      ...after[i],
      grew: after[i].framesDecoded > last[i].framesDecoded,
      screenshot,
    });
  }
  const overTcp = (p) => p.publishProtocol === "tcp" && p.playProtocol === "tcp";
  result.ok = result.pages.every(
    (p) => p.grew && p.framesDecoded > MIN_FRAMES && p.videoWidth > 0 && !p.error && (!args.tcpOnly || overTcp(p)),
  );
  if (!result.ok) {
    result.error = args.tcpOnly && !result.pages.every(overTcp)
      ? "a connection did not go over TCP"
      : "decoding did not continue on every page";
  }
}

try {
  await main();
} catch (e) {
  result.error = e && e.message ? e.message : String(e);
  // Keep a picture of what each page showed.
  for (const p of pages) {
    const screenshot = path.join(args.out, `${p.user}-watches-${p.peer}-failed.png`);
    await p.page.screenshot({ path: screenshot, timeout: 5_000 }).catch(() => {});
  }
}
clearTimeout(hardTimer);
await cleanup();
finish(result.ok ? 0 : 1);

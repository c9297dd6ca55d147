// A five-person call in the web app (assets/index.html + assets/app/*.js), in headless Chromium
// (Debian's /usr/bin/chromium, playwright-core): five pages (one browser, one context each) sign
// in by name (development tokens), join the same group call and publish a small fake camera (a
// 160x120 Y4M made with ffmpeg, so two cores keep up) and the fake microphone. Then:
//   1. every page shows a tile for each of the other four, and each of those four videos plays
//      (videoWidth > 0, and both the element's totalVideoFrames and the subscription's
//      framesDecoded grow over 2 s);
//   2. the server's GET /v1/groups/{gid}/call lists the five, each with a video track;
//   3. nobody's publishing ended and nobody's page renegotiated in a loop meanwhile;
//   4. the last person leaves the call (Leave) and the other four pages drop that tile within 8 s,
//      while the four still play each other;
//   5. then one more just closes the tab, and the remaining three drop that tile within 8 s.
// A screenshot of the first page goes to --out/five-party.png.
//
// Usage: node five_party.mjs --base http://127.0.0.1:PORT --group five --out DIR
//                            [--users ann,ben,cleo,dan,eve] [--video FILE.y4m]
// Prints one JSON line ({"ok", "steps": {...}, "error"}); exits 0 on success. Gives up after 90 s.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { chromium } from "playwright-core";
import { FAKE_MEDIA_ARGS, WEBRTC_ARGS, closeBrowser, giveUpAfter, grace, parseFlags, reporter, sleep } from "./common.mjs";

const HARD_TIMEOUT_MS = 90_000;
const GROWTH_WINDOW_MS = 2_000;
const LEAVE_WITHIN_MS = 8_000;

const flags = parseFlags(process.argv.slice(2));
const base = (flags.base || process.env.FANFARE_BASE || "").replace(/\/+$/, "");
const group = flags.group || "five";
const out = flags.out || path.join(os.tmpdir(), "fanfare-five");
const users = (flags.users || "ann,ben,cleo,dan,eve").split(",").filter(Boolean);
const chromiumPath = flags.chromium || process.env.CHROMIUM || "/usr/bin/chromium";

const result = { ok: false, steps: {}, error: null, elapsedMs: 0 };
const { log, finish } = reporter("five_party", result);

let browser = null;
const pages = {};

async function cleanup() {
  if (!browser) return;
  const b = browser;
  browser = null;
  await closeBrowser(b, Object.values(pages));
}

async function shootAll(tag) {
  for (const [who, p] of Object.entries(pages)) {
    await p.screenshot({ path: path.join(out, `five-${who}-${tag}.png`), timeout: 5_000 }).catch(() => {});
  }
}

/** What each page sees, for a failure report. */
async function describeAll() {
  const seen = {};
  for (const [who, p] of Object.entries(pages)) {
    seen[who] = await Promise.race([
      p.evaluate(() => [...document.querySelectorAll(".tile")].map((t) => {
        const v = t.querySelector("video");
        const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
        return `${t.dataset.key} ${v ? v.videoWidth : "-"}x${v ? v.videoHeight : "-"} frames=${q ? q.totalVideoFrames : "-"}`;
      })).catch((e) => e.message),
      grace(3_000).then(() => "no answer"),
    ]);
  }
  return seen;
}

const hardTimer = giveUpAfter(HARD_TIMEOUT_MS, result, finish, cleanup, async () => {
  result.steps.seenAtTimeout = await Promise.race([describeAll(), grace(5_000).then(() => null)]);
  await Promise.race([shootAll("timeout"), grace(8_000)]);
});

/** Polls `fn` (in Node) until it returns a truthy value or `ms` pass. */
async function until(what, fn, ms = 20_000, every = 250) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s (last: ${JSON.stringify(last)})`);
    await sleep(every);
  }
}

/** The fake camera: a small test pattern, so five encoders and twenty decoders fit two cores. */
function makeVideo() {
  if (flags.video) return flags.video;
  const file = path.join(out, "five-party-camera.y4m");
  const r = spawnSync("ffmpeg", [
    "-hide_banner", "-loglevel", "error", "-y",
    "-f", "lavfi", "-i", "testsrc=size=160x120:rate=15", "-t", "4", "-pix_fmt", "yuv420p", file,
  ], { stdio: ["ignore", "ignore", "pipe"], timeout: 30_000 });
  if (r.status !== 0) throw new Error(`ffmpeg could not make the fake camera: ${r.stderr || r.error}`);
  return file;
}

async function open(who) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") log(`${who} console.${m.type()}: ${m.text()}`); });
  page.on("pageerror", (e) => log(`${who} page error: ${e.message}`));
  pages[who] = page;
  await page.goto(`${base}/`);
  await page.fill("#signin-user", who);
  await page.fill("#signin-name", who[0].toUpperCase() + who.slice(1));
  await page.click("#signin-go");
  await page.waitForSelector("#who", { timeout: 15_000 });
  await page.evaluate((g) => { location.hash = `#/g/${g}/call`; }, group);
  await page.waitForSelector("#join-call", { timeout: 15_000 });
  // Count what would show a republish or renegotiation loop.
  await page.evaluate(() => {
    const ff = window.fanfareApp.ff;
    const c = (window.__five = { publishEnded: [], streams: {}, errors: [] });
    ff.on("publish_ended", (e) => c.publishEnded.push(`${e.kind}: ${e.reason}`));
    ff.on("stream", (e) => { c.streams[e.participant] = (c.streams[e.participant] || 0) + 1; });
    ff.on("error", (e) => c.errors.push(String(e && e.message)));
  });
  return page;
}

/** On `page`: each other person's camera tile and what its video shows. */
function tilesOn(page, others) {
  return page.evaluate(async (others) => {
    const ff = window.fanfareApp.ff;
    const out = {};
    for (const u of others) {
      const v = document.querySelector(`.tile[data-user="${u}"][data-source="camera"] video`);
      const s = await ff.stats(u);
      const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
      out[u] = {
        tile: !!v,
        videoWidth: v ? v.videoWidth : 0,
        totalVideoFrames: q ? q.totalVideoFrames : 0,
        framesDecoded: s.framesDecoded,
        paused: v ? v.paused : null,
      };
    }
    return out;
  }, others);
}

async function main() {
  if (!base) throw new Error("need --base");
  if (users.length < 2) throw new Error("need at least two users");
  fs.mkdirSync(out, { recursive: true });
  const video = makeVideo();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      ...WEBRTC_ARGS,
      ...FAKE_MEDIA_ARGS,
      `--use-file-for-fake-video-capture=${video}`,
      // Five pages in one browser: none of them is "in the background".
      "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
    ],
  });

  // Everyone signs in and joins, one after the other (as people do).
  for (const who of users) {
    const page = await open(who);
    await page.click("#join-call");
    await page.waitForSelector("#leave-call", { timeout: 10_000 });
    log(`${who} joined`);
  }
  const joinedAt = Date.now();

  // 1. Each page: a tile per other person, each video playing.
  const seen = {};
  for (const who of users) {
    const others = users.filter((u) => u !== who);
    const first = await until(`${who} plays the other ${others.length}`, async () => {
      const t = await tilesOn(pages[who], others);
      return others.every((u) => t[u].tile && t[u].videoWidth > 0 && t[u].totalVideoFrames > 5 && t[u].framesDecoded > 5) ? t : null;
    }, 40_000, 500);
    seen[who] = first;
  }
  result.steps.allPlayingAfterMs = Date.now() - joinedAt;
  log(`every page plays the others (${result.steps.allPlayingAfterMs} ms after the last join)`);
  await sleep(GROWTH_WINDOW_MS);
  const playing = {};
  const frozen = [];
  for (const who of users) {
    const others = users.filter((u) => u !== who);
    const second = await tilesOn(pages[who], others);
    playing[who] = {};
    for (const u of others) {
      const a = seen[who][u];
      const b = second[u];
      playing[who][u] = {
        tile: b.tile, videoWidth: b.videoWidth,
        totalVideoFramesBefore: a.totalVideoFrames, totalVideoFrames: b.totalVideoFrames,
        framesDecodedBefore: a.framesDecoded, framesDecoded: b.framesDecoded,
      };
      if (!(b.tile && b.videoWidth > 0 && b.totalVideoFrames > a.totalVideoFrames && b.framesDecoded > a.framesDecoded)) {
        frozen.push(`${who} watching ${u}: ${JSON.stringify(playing[who][u])}`);
      }
    }
  }
  result.steps.playing = playing;
  if (frozen.length) throw new Error(`videos not playing: ${frozen.join("; ")}`);

  // 2. The server's view of the call.
  const view = await until("GET /call lists everyone with a video track", async () => {
    const v = await pages[users[0]].evaluate((g) => window.fanfareApp.ff.api("GET", `/v1/groups/${g}/call`), group);
    const withVideo = (v.participants || []).filter((p) => p.tracks.some((t) => t.kind === "video"));
    return withVideo.length === users.length ? v : null;
  }, 10_000);
  result.steps.serverCall = view.participants.map((p) => ({
    user: p.user,
    tracks: p.tracks.map((t) => `${t.kind}/${t.source}`),
    videoSubscribers: p.tracks.filter((t) => t.kind === "video").map((t) => t.subscribers)[0] ?? 0,
  }));

  // 3. No publish ended, no renegotiation loop: one `stream` per subscription, give or take a
  // renegotiation when the publisher's second track arrived.
  const counters = {};
  for (const who of users) counters[who] = await pages[who].evaluate(() => window.__five);
  result.steps.counters = counters;
  const loops = [];
  for (const [who, c] of Object.entries(counters)) {
    if (c.publishEnded.length) loops.push(`${who}: publishing ended (${c.publishEnded.join(", ")})`);
    for (const [u, n] of Object.entries(c.streams)) if (n > 4) loops.push(`${who} renegotiated ${u} ${n} times`);
  }
  if (loops.length) throw new Error(`unstable call: ${loops.join("; ")}`);

  await sleep(300);
  await pages[users[0]].screenshot({ path: path.join(out, "five-party.png") });
  result.steps.screenshot = path.join(out, "five-party.png");

  // 4. The last one leaves; the other pages drop that tile.
  const leaver = users[users.length - 1];
  const leftAt = Date.now();
  await pages[leaver].click("#leave-call");
  const gone = {};
  await Promise.all(users.filter((u) => u !== leaver).map(async (who) => {
    await pages[who].waitForSelector(`.tile[data-user="${leaver}"]`, { state: "detached", timeout: LEAVE_WITHIN_MS })
      .catch(() => { throw new Error(`${who} still shows ${leaver}'s tile ${LEAVE_WITHIN_MS / 1000} s after they left`); });
    gone[who] = Date.now() - leftAt;
  }));
  result.steps.leaver = leaver;
  result.steps.tileGoneAfterMs = gone;
  log(`${leaver} left; tiles gone after ${JSON.stringify(gone)} ms`);
  // The others still play each other.
  const stay = users.filter((u) => u !== leaver);
  const still = await tilesOn(pages[stay[0]], stay.slice(1));
  await sleep(1_000);
  const still2 = await tilesOn(pages[stay[0]], stay.slice(1));
  for (const u of stay.slice(1)) {
    if (!(still2[u].totalVideoFrames > still[u].totalVideoFrames)) {
      throw new Error(`after ${leaver} left, ${stay[0]} no longer plays ${u}: ${JSON.stringify([still[u], still2[u]])}`);
    }
  }
  result.steps.othersStillPlay = true;

  // 5. Another one just closes the tab (no Leave click): the server ends their sessions and the
  // remaining three pages drop that tile too.
  const closer = stay[stay.length - 1];
  const closedAt = Date.now();
  const closing = pages[closer];
  delete pages[closer];
  await closing.context().close();
  const goneToo = {};
  await Promise.all(stay.filter((u) => u !== closer).map(async (who) => {
    await pages[who].waitForSelector(`.tile[data-user="${closer}"]`, { state: "detached", timeout: LEAVE_WITHIN_MS })
      .catch(() => { throw new Error(`${who} still shows ${closer}'s tile ${LEAVE_WITHIN_MS / 1000} s after their tab closed`); });
    goneToo[who] = Date.now() - closedAt;
  }));
  result.steps.closer = closer;
  result.steps.closedTileGoneAfterMs = goneToo;
  log(`${closer} closed the tab; tiles gone after ${JSON.stringify(goneToo)} ms`);
  result.ok = true;
}

try {
  await main();
} catch (e) {
  result.error = e && e.message ? e.message : String(e);
  result.steps.seenAtFailure = await Promise.race([describeAll(), grace(5_000).then(() => null)]);
  await Promise.race([shootAll("failed"), grace(10_000)]);
}
clearTimeout(hardTimer);
await cleanup();
finish(result.ok ? 0 : 1);

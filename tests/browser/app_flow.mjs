// Drives the web app (assets/index.html + assets/app/*.js) in headless Chromium (Debian's
// /usr/bin/chromium, playwright-core) as three people in one group:
//   1. alice (owner) and bob sign in by name (dev tokens), join the call, and each sees the
//      other's video playing (videoWidth > 0, framesDecoded growing); with --wav (what every
//      fake microphone plays: a steady tone), bob's page outlines alice's tile as the active
//      speaker (the server's active_speakers, loudest first, ties by name);
//   2. carol (a member without can_publish) watches and raises her hand; alice sees it in the
//      people strip and lets her present from there, the hand comes down, carol's camera
//      button appears, she starts it, bob sees her video; alice stops her presenting, carol's
//      button disappears and her tile leaves bob's page;
//   3. chat: alice's message appears for bob and bob's for alice;
//   4. recordings (only when GET /v1/groups/{gid}/recordings exists): a call recording is made
//      while the call runs, listed in alice's recordings view, and plays (currentTime advances).
// Screenshots go to --out (call-view.png, webinar-view.png, recordings-view.png).
//
// Usage: node app_flow.mjs --base http://127.0.0.1:PORT --group class --out DIR [--wav PATH]
// Prints one JSON line ({"ok", "steps": {...}, "recordings": "verified"|"unavailable"|...});
// exits 0 on success. Gives up after 100 s.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { FAKE_MEDIA_ARGS, WEBRTC_ARGS, closeBrowser, giveUpAfter, parseFlags, reporter, sleep } from "./common.mjs";

const HARD_TIMEOUT_MS = 100_000;

const flags = parseFlags(process.argv.slice(2));
const base = (flags.base || process.env.FANFARE_BASE || "").replace(/\/+$/, "");
const group = flags.group || "class";
const out = flags.out || path.join(os.tmpdir(), "fanfare-app");
const chromiumPath = flags.chromium || process.env.CHROMIUM || "/usr/bin/chromium";

const result = { ok: false, steps: {}, recordings: "not tried", error: null, elapsedMs: 0 };
const { log, finish } = reporter("app_flow", result);

let browser = null;
const pages = {};

async function cleanup() {
  if (!browser) return;
  const b = browser;
  browser = null;
  await closeBrowser(b, Object.values(pages));
}

const hardTimer = giveUpAfter(HARD_TIMEOUT_MS, result, finish, cleanup, () => shootAll("timeout"));

async function shootAll(tag) {
  for (const [who, p] of Object.entries(pages)) {
    await p.screenshot({ path: path.join(out, `${who}-${tag}.png`), timeout: 5_000 }).catch(() => {});
  }
}

/** Polls `fn` (in Node) until it returns a truthy value or `ms` pass. */
async function until(what, fn, ms = 20_000) {
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
    await sleep(250);
  }
}

async function open(who) {
  // One browser context per person: each has its own storage (and so its own token).
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") log(`${who} console.${m.type()}: ${m.text()}`); });
  page.on("pageerror", (e) => log(`${who} page error: ${e.message}`));
  await page.goto(`${base}/`);
  pages[who] = page;
  // Sign in by name: the server hands out a development token.
  await page.fill("#signin-user", who);
  await page.fill("#signin-name", who[0].toUpperCase() + who.slice(1));
  await page.click("#signin-go");
  await page.waitForSelector("#who", { timeout: 10_000 });
  await page.evaluate((g) => { location.hash = `#/g/${g}/call`; }, group);
  await page.waitForSelector("#join-call", { timeout: 10_000 });
  pages[who] = page;
  return page;
}

/** Remote video of `user` as seen on `page`: size and decoded frames. */
function remoteVideo(page, user, source = "camera") {
  return page.evaluate(async ([user, source]) => {
    const v = document.querySelector(`video[data-user="${user}"][data-source="${source}"]`);
    const s = await window.fanfareApp.ff.stats(user);
    return { present: !!v, videoWidth: v ? v.videoWidth : 0, framesDecoded: s.framesDecoded };
  }, [user, source]);
}

/** Waits until `page` plays `user`'s video and keeps decoding. */
async function seesVideo(page, viewer, user) {
  const first = await until(`${viewer} sees ${user}'s video`, async () => {
    const v = await remoteVideo(page, user);
    return v.videoWidth > 0 && v.framesDecoded > 10 ? v : null;
  }, 25_000);
  await sleep(1500);
  const second = await remoteVideo(page, user);
  if (!(second.framesDecoded > first.framesDecoded)) {
    throw new Error(`${viewer} stopped decoding ${user} (${first.framesDecoded} then ${second.framesDecoded})`);
  }
  log(`${viewer} sees ${user}: ${JSON.stringify(second)}`);
  return { videoWidth: second.videoWidth, framesDecodedBefore: first.framesDecoded, framesDecoded: second.framesDecoded };
}

async function api(page, method, p, body) {
  return page.evaluate(async ([method, p, body]) => {
    try {
      return { ok: true, body: await window.fanfareApp.ff.api(method, p, body) };
    } catch (e) {
      return { ok: false, status: e.status, code: e.code, message: e.message };
    }
  }, [method, p, body]);
}

async function main() {
  if (!base) throw new Error("need --base");
  fs.mkdirSync(out, { recursive: true });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      ...WEBRTC_ARGS,
      ...FAKE_MEDIA_ARGS,
      ...(flags.wav ? [`--use-file-for-fake-audio-capture=${flags.wav}`] : []),
    ],
  });

  // 1. Two people in a call see each other.
  const alice = await open("alice");
  const bob = await open("bob");
  await alice.click("#join-call");
  await bob.click("#join-call");
  result.steps.aliceSeesBob = await seesVideo(alice, "alice", "bob");
  result.steps.bobSeesAlice = await seesVideo(bob, "bob", "alice");
  if (flags.wav) {
    await bob.waitForSelector(`.tile[data-user="alice"].speaking`, { timeout: 15_000 });
    result.steps.bobSeesAliceSpeaking = true;
  }
  // The web app publishes the camera as simulcast layers: the call view lists them. Chromium
  // adds the full layer once its bandwidth estimate allows it, which can take over 10 s on a
  // busy machine (seen once in CI-like runs): wait up to 20 s.
  const aliceToken = await alice.evaluate(() => localStorage.getItem("fanfare.token"));
  let cameraLayers = [];
  for (let i = 0; i < 40 && cameraLayers.length < 2; i++) {
    const call = await (await fetch(`${base}/v1/groups/${group}/call`, {
      headers: { Authorization: `Bearer ${aliceToken}` },
    })).json();
    const me = (call.participants || []).find((p) => p.user === "alice");
    const camera = (me?.tracks || []).find((t) => t.kind === "video" && t.source !== "screen");
    cameraLayers = camera?.layer_info || [];
    if (cameraLayers.length < 2) await new Promise((r) => setTimeout(r, 500));
  }
  result.steps.aliceCameraLayers = cameraLayers;

  // A call recording runs while the rest happens (if the server records).
  let recording = null;
  const probe = await api(alice, "GET", `/v1/groups/${group}/recordings`);
  if (!probe.ok && (probe.status === 404 && probe.code === "not_found" || probe.status === 501)) {
    result.recordings = "unavailable: GET /v1/groups/{gid}/recordings is not on this server";
  } else {
    const r = await api(alice, "POST", `/v1/groups/${group}/recordings`, {});
    if (r.ok) recording = r.body;
    else result.recordings = `could not start a recording: ${r.status} ${r.message}`;
    log(`recording: ${JSON.stringify(r)}`);
  }

  // 2. Classroom: carol watches, is allowed to present, then is stopped.
  const carol = await open("carol");
  await carol.click("#join-call");
  await carol.waitForSelector("#watch-note", { timeout: 10_000 });
  if (await carol.$("#toggle-camera")) throw new Error("carol has a camera button before being allowed to present");
  result.steps.carolWatchesAlice = await seesVideo(carol, "carol", "alice");
  await carol.screenshot({ path: path.join(out, "webinar-view.png") });
  await carol.click("#raise-hand");
  const hand = `#people li.person[data-user="carol"] .hand`;
  await alice.waitForSelector(hand, { timeout: 10_000 });
  result.steps.aliceSeesCarolsHand = true;
  const allow = `#people button[data-action="allow-present"][data-user="carol"]`;
  await alice.waitForSelector(allow, { timeout: 10_000 });
  await alice.click(allow);
  await carol.waitForSelector("#toggle-camera", { timeout: 10_000 });
  result.steps.carolButtonAppeared = true;
  await alice.waitForSelector(hand, { state: "detached", timeout: 10_000 });
  result.steps.carolsHandDown = true;
  await carol.click("#toggle-camera");
  result.steps.bobSeesCarol = await seesVideo(bob, "bob", "carol");
  const stop = `#people button[data-action="stop-present"][data-user="carol"]`;
  await alice.waitForSelector(stop, { timeout: 10_000 });
  await alice.click(stop);
  await carol.waitForSelector("#toggle-camera", { state: "detached", timeout: 10_000 });
  result.steps.carolButtonGone = true;
  await bob.waitForSelector(`.tile[data-user="carol"]`, { state: "detached", timeout: 10_000 });
  result.steps.carolTileGoneForBob = true;
  log("classroom grant and revoke done");

  // 3. Chat both ways.
  const say = async (page, text) => {
    await page.fill("#chat-input", text);
    await page.press("#chat-input", "Enter");
  };
  const hears = (page, text) => page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages .msg .text")].some((e) => e.textContent === t), text, { timeout: 10_000 });
  await say(alice, "Hello from alice");
  await hears(bob, "Hello from alice");
  await say(bob, "Hi alice, bob here");
  await hears(alice, "Hi alice, bob here");
  await hears(carol, "Hi alice, bob here");
  result.steps.chat = true;
  await sleep(500);
  await alice.screenshot({ path: path.join(out, "call-view.png") });

  // 4. Recordings.
  if (recording) {
    await sleep(1000);
    const s = await api(alice, "POST", `/v1/recordings/${recording.id}/stop`);
    log(`stop recording: ${JSON.stringify(s)}`);
    await alice.evaluate((g) => { location.hash = `#/g/${g}/recordings`; }, group);
    const play = `li.rec[data-id="${recording.id}"] button[data-action="play"]:not([disabled])`;
    await until("the recording is listed and ready", async () => {
      if (await alice.$(play)) return true;
      // The view polls while something is processing; make sure a fresh list is fetched.
      await alice.evaluate((g) => { location.hash = `#/g/${g}/call`; setTimeout(() => { location.hash = `#/g/${g}/recordings`; }, 50); }, group);
      await sleep(1500);
      return !!(await alice.$(play));
    }, 30_000);
    await alice.click(play);
    const t0 = await until("the recording starts playing", async () => {
      const t = await alice.evaluate(() => document.querySelector("#recording-player").currentTime);
      return t > 0.2 ? t : null;
    }, 20_000).catch(async (e) => {
      // Say what the page says (an hls.js error, a status) along with the timeout.
      const page = await alice.evaluate(() => document.querySelector("#recordings")?.innerText || document.body.innerText);
      throw new Error(`${e.message}; the page says: ${page.slice(0, 600)}`);
    });
    await sleep(1500);
    const t1 = await alice.evaluate(() => document.querySelector("#recording-player").currentTime);
    if (!(t1 > t0)) throw new Error(`the recording does not advance (${t0} then ${t1})`);
    result.steps.recordingPlays = { currentTimeBefore: t0, currentTime: t1 };
    result.recordings = "verified";
    await alice.screenshot({ path: path.join(out, "recordings-view.png") });
  } else {
    await alice.evaluate((g) => { location.hash = `#/g/${g}/recordings`; }, group);
    await alice.waitForSelector("#recordings-list li", { timeout: 10_000 });
    await sleep(300);
    await alice.screenshot({ path: path.join(out, "recordings-view.png") });
  }
  result.ok = true;
}

try {
  await main();
} catch (e) {
  result.error = e && e.message ? e.message : String(e);
  await shootAll("failed");
}
clearTimeout(hardTimer);
await cleanup();
finish(result.ok ? 0 : 1);

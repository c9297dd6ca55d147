// Adaptive stream in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// one page joins --group as --user with fanfare.js, plays --peer (a simulcast publisher) in a
// <video> and calls `ff.adaptTo(peer, video)`. It then shows the video at each size of
// --sizes in turn (`WxH` CSS pixels, device pixel ratio 1; `hidden`: display none) and, for
// each, waits until the decoded picture's width (inbound-rtp `frameWidth`) is settled at the
// one the test expects (--widths, in the same order; 0: paused, no frame decoded for a
// second), up to 20 s a step.
//
// Usage:
//   node adaptive.mjs --base http://127.0.0.1:PORT --group G --user U --token T --peer P \
//        --sizes 320x180,1280x720,hidden,320x180 --widths 320,1280,0,320
//
// Prints one JSON line on stdout ({"ok":..., "steps":[{"size","want","got","afterMs"}...]}); the
// browser's console goes to stderr. Exits 0 when every step reached its width.

import { parseFlags, runPage, sleep } from "./common.mjs";

const HARD_TIMEOUT_MS = 120_000;
const STEP_MS = 20_000;

const args = parseFlags(process.argv.slice(2));
const result = { ok: false, steps: [], error: null };
await runPage(
  {
    name: "adaptive",
    result,
    args,
    required: ["base", "group", "user", "token", "peer", "sizes", "widths"],
    timeoutMs: HARD_TIMEOUT_MS,
    pageOptions: { viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 },
  },
  async (page, log) => {
    const sizes = args.sizes.split(",");
    const widths = args.widths.split(",").map(Number);
    if (sizes.length !== widths.length) throw new Error("--sizes and --widths differ in length");
    await page.evaluate(
      async ({ token, group, peer }) => {
        document.body.innerHTML = "";
        const video = document.createElement("video");
        video.id = "v";
        video.muted = true;
        video.autoplay = true;
        video.playsInline = true;
        video.style.objectFit = "contain";
        document.body.appendChild(video);
        const { Fanfare } = await import("/fanfare.js");
        const ff = await Fanfare.connect({ token });
        window.fanfareApp = { ff };
        await ff.join(group);
        video.srcObject = await ff.subscribe(peer);
        ff.adaptTo(peer, video);
      },
      { token: args.token, group: args.group, peer: args.peer },
    );
    // The decoded picture's width and how many frames were decoded so far.
    const decoding = () =>
      page.evaluate(async (peer) => {
        const pc = window.fanfareApp.ff._subs.get(peer)?.pc;
        let width = 0;
        let decoded = 0;
        if (pc) {
          (await pc.getStats()).forEach((r) => {
            if (r.type === "inbound-rtp" && r.kind === "video") {
              width = r.frameWidth || width;
              decoded += r.framesDecoded || 0;
            }
          });
        }
        return { width, decoded };
      }, args.peer);

    for (let i = 0; i < sizes.length; i++) {
      const size = sizes[i];
      await page.evaluate((size) => {
        const v = document.getElementById("v");
        if (size === "hidden") {
          v.style.display = "none";
          return;
        }
        const [w, h] = size.split("x");
        v.style.display = "block";
        v.style.width = `${w}px`;
        v.style.height = `${h}px`;
      }, size);
      const started = Date.now();
      let got = 0;
      let decoded = -1;
      // Settled: the wanted width in two samples half a second apart; paused (0): no frame
      // decoded between three samples, a second in all.
      let hits = 0;
      const need = widths[i] === 0 ? 3 : 2;
      while (Date.now() - started < STEP_MS) {
        const now = await decoding();
        got = widths[i] === 0 ? (now.decoded === decoded ? 0 : now.width) : now.width;
        decoded = now.decoded;
        hits = got === widths[i] ? hits + 1 : 0;
        if (hits >= need) break;
        await sleep(500);
      }
      const step = { size, want: widths[i], got, afterMs: Date.now() - started };
      log(`step ${JSON.stringify(step)}`);
      result.steps.push(step);
      if (hits < need) {
        const want = widths[i] === 0 ? "paused" : `${widths[i]} wide`;
        throw new Error(`showing it at ${size}, the picture stayed ${got} wide and decoding, not ${want}`);
      }
    }
    result.ok = true;
  },
);

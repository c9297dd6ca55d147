// Dynacast in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core): one
// page publishes its fake camera with fanfare.js (`ff.publish({camera: true})`: simulcast, one
// socket session) into --group as --user. Every 250 ms it writes to --stats-file what the page
// sends per simulcast layer (outbound-rtp `bytesSent` and frame size by RID) and every
// `layers_wanted` the server sent it, so the test driving it can add and remove viewers and
// watch the page pause and resume its layers. Stops when --stop-file exists (or after 120 s).
//
// Usage:
//   node dynacast.mjs --base http://127.0.0.1:PORT --group G --user U --token T \
//        --stats-file PATH --stop-file PATH
//
// Prints one JSON line on stdout ({"ok":..., "samples":N, "wanted":[[rids]...], "last":{...}});
// the browser's console goes to stderr. Exits 0 when the page published and reported no error.

import fs from "node:fs";
import { FAKE_MEDIA_ARGS, parseFlags, runPage, sleep, writeJsonWhole } from "./common.mjs";

const HARD_TIMEOUT_MS = 120_000;
const SAMPLE_MS = 250;

const args = parseFlags(process.argv.slice(2));
const result = { ok: false, samples: 0, wanted: [], last: null, error: null };
await runPage(
  {
    name: "dynacast",
    result,
    args,
    required: ["base", "group", "user", "token", "stats-file", "stop-file"],
    timeoutMs: HARD_TIMEOUT_MS,
    extraArgs: FAKE_MEDIA_ARGS,
  },
  async (page, log) => {
    await page.evaluate(
      async ({ token, group }) => {
        const { Fanfare } = await import("/fanfare.js");
        const ff = await Fanfare.connect({ token });
        window.fanfareApp = { ff };
        window.wanted = [];
        ff.on("layers_wanted", (m) => window.wanted.push(m.rids));
        await ff.join(group);
        await ff.publish({ camera: true });
      },
      { token: args.token, group: args.group },
    );
    log("publishing");

    while (!fs.existsSync(args["stop-file"])) {
      const s = await page.evaluate(async () => {
        const pc = window.fanfareApp.ff._pubs.get("camera")?.pc;
        const layers = {};
        if (pc) {
          (await pc.getStats()).forEach((r) => {
            if (r.type === "outbound-rtp" && r.kind === "video" && r.rid) {
              layers[r.rid] = { bytesSent: r.bytesSent || 0, width: r.frameWidth || 0, height: r.frameHeight || 0 };
            }
          });
        }
        return { layers, wanted: window.wanted };
      });
      s.at = Date.now();
      if (JSON.stringify(s.wanted) !== JSON.stringify(result.wanted)) {
        log(`layers wanted: ${JSON.stringify(s.wanted)}`);
      }
      result.wanted = s.wanted;
      writeJsonWhole(args["stats-file"], s);
      result.samples += 1;
      result.last = s;
      await sleep(SAMPLE_MS);
    }
    result.ok = !!result.last && Object.keys(result.last.layers).length >= 2;
  },
);

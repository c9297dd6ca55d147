// Active speakers in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// one page joins --group as --user with fanfare.js and publishes its microphone, which Chromium
// fakes from --wav (looped; a steady tone reads as speech). The page collects the server's
// `active_speakers` events. Passes when an event names --user as speaking and, after the page
// unpublishes its microphone, a later one no longer does.
//
// Usage:
//   node speaking.mjs --base http://127.0.0.1:PORT --group G --user U --token T --wav PATH
//
// Prints one JSON line on stdout ({"ok":..., "events":[{speakers, atMs}...]}); the browser's
// console goes to stderr. Exits 0 on success.

import { FAKE_MEDIA_ARGS, parseFlags, runPage, sleep } from "./common.mjs";

const HARD_TIMEOUT_MS = 90_000;
const STEP_MS = 20_000;

const args = parseFlags(process.argv.slice(2));
const result = { ok: false, events: [], error: null };
await runPage(
  {
    name: "speaking",
    result,
    args,
    required: ["base", "group", "user", "token", "wav"],
    timeoutMs: HARD_TIMEOUT_MS,
    extraArgs: [...FAKE_MEDIA_ARGS, `--use-file-for-fake-audio-capture=${args.wav}`],
  },
  async (page, log) => {
    await page.evaluate(
      async ({ token, group }) => {
        const { Fanfare } = await import("/fanfare.js");
        const ff = await Fanfare.connect({ token });
        const started = Date.now();
        window.speakerEvents = [];
        ff.on("active_speakers", (ev) =>
          window.speakerEvents.push({ speakers: ev.speakers, atMs: Date.now() - started }),
        );
        window.fanfareApp = { ff };
        await ff.join(group);
        await ff.publish({ mic: true });
      },
      { token: args.token, group: args.group },
    );
    const events = () => page.evaluate(() => window.speakerEvents);
    const names = (ev) => ev.speakers.map((s) => s.user);
    // Until an event names the user, then until a later one does not.
    const waitFor = async (pred, what) => {
      const started = Date.now();
      while (Date.now() - started < STEP_MS) {
        result.events = await events();
        const last = result.events[result.events.length - 1];
        if (last && pred(last)) return;
        await sleep(250);
      }
      throw new Error(`no active_speakers event ${what} within ${STEP_MS} ms`);
    };
    await waitFor((ev) => names(ev).includes(args.user), `naming ${args.user}`);
    log("speaking; unpublishing the microphone");
    await page.evaluate(() => window.fanfareApp.ff.unpublish("mic"));
    await waitFor((ev) => !names(ev).includes(args.user), `without ${args.user} once the microphone stopped`);
    result.ok = true;
  },
);

// fanfare.js — the Fanfare browser client library (ES module, no dependencies).
// Owns: the REST helper (`ff.api`), the realtime socket `/v1/rtc` with request/reply matching
// and automatic reconnection, the joined group's live state (who is in the room, who publishes
// which tracks), publishing camera / microphone / screen (one socket `publish` session each, so
// each can stop on its own; simulcast layers nobody receives are paused as the server's
// `layers_wanted` says), and subscribing to participants (one socket `subscribe` session
// per participant, renegotiated when their tracks change).
//
//   import { Fanfare } from "/fanfare.js";
//   const ff = await Fanfare.connect({ token });
//   ff.on("message", (m) => console.log(m.from, m.text));
//   await ff.join("room1");
//   await ff.publish({ camera: true, mic: true });
//   ff.on("stream", ({ participant, stream }) => (video.srcObject = stream));
//   const stream = await ff.subscribe("bob");

const SOURCES = { camera: "camera", mic: "microphone", screen: "screen" };
const REQUEST_TIMEOUT_MS = 15_000;
const PING_EVERY_MS = 20_000;

/** An error from the server or the library, with a sentence fit to show a person. */
/** Bitrate ceilings of the lower simulcast layers, kbit/s (the full layer gets the member's cap). */
const LAYER_KBPS = { q: 150, h: 500 };

/**
 * The simulcast layers a camera track is sent as (RIDs q/h/f = quarter, half, full size, as the
 * server's layer choice expects), or null for a picture too small to split: 720p and up gets
 * three, 360p and up two.
 */
function simulcastLayers(track) {
  const height = track.getSettings?.().height || 0;
  const full = { rid: "f", scaleResolutionDownBy: 1 };
  const half = { rid: "h", scaleResolutionDownBy: 2, maxBitrate: LAYER_KBPS.h * 1000 };
  const quarter = { rid: "q", scaleResolutionDownBy: 4, maxBitrate: LAYER_KBPS.q * 1000 };
  if (height >= 720) return [quarter, half, full];
  if (height >= 360) return [half, full];
  return null;
}

/** Width and height of each `max_resolution`. */
const RESOLUTIONS = { vga: [640, 480], hd: [1280, 720], fhd: [1920, 1080], "4k": [3840, 2160] };

export class FanfareError extends Error {
  constructor(message, { status = 0, code = "error" } = {}) {
    super(message);
    this.name = "FanfareError";
    this.status = status;
    this.code = code;
  }
}

/** Reads a JWT's claims without verifying it (the server verifies). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch (_) {
    return null;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until the peer connection has gathered its candidates (the server does no trickle). */
async function gatheredOffer(pc) {
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((resolve) => {
      const done = () => pc.iceGatheringState === "complete" && resolve();
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }
  return pc.localDescription.sdp;
}

/** Marks every media section of an offer as coming from stream "screen" (the server reads the
 * source of a video track from its msid: a label containing "screen" is a screen share). */
function labelScreen(sdp) {
  return sdp
    .replace(/^a=msid:\S+ (\S+)$/gm, "a=msid:screen $1")
    .replace(/^(a=ssrc:\d+ msid:)\S+ (\S+)$/gm, "$1screen $2");
}

/** Maps each `mid` of an SDP to the msid track id in that section. */
function trackIdsByMid(sdp) {
  const out = new Map();
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const mid = /^a=mid:(\S+)/m.exec(section);
    const msid = /^a=msid:\S+ (\S+)/m.exec(section) || /^a=ssrc:\d+ msid:\S+ (\S+)/m.exec(section);
    if (mid && msid) out.set(mid[1], msid[1]);
  }
  return out;
}

export class Fanfare {
  /**
   * Opens the realtime socket and resolves once the server said hello.
   * @param {{url?: string, token: string, reconnect?: boolean, iceServers?: RTCIceServer[]}} opts
   */
  static async connect(opts) {
    const ff = new Fanfare(opts);
    await ff._open();
    try {
      const cfg = await ff.api("GET", "/v1/rtc/config");
      if (!opts.iceServers && cfg && Array.isArray(cfg.ice_servers)) ff.iceServers = cfg.ice_servers;
    } catch (_) { /* defaults */ }
    return ff;
  }

  constructor({ url, token, reconnect = true, iceServers }) {
    if (!token) throw new FanfareError("A token is needed to connect.", { code: "token_missing" });
    this.url = (url || location.origin).replace(/\/+$/, "");
    this.token = token;
    this.claims = tokenClaims(token) || {};
    this.user = this.claims.sub || null;
    this.name = this.claims.name || this.user;
    this.iceServers = iceServers || [];
    this.reconnect = reconnect;
    this.group = null;
    this.permissions = null;
    /** Your media caps in the joined group: {max_resolution, max_bitrate_kbps}. */
    this.media = null;
    /** user -> {user, name, present, tracks: Map(id -> track view)} */
    this.participants = new Map();
    this.state = "connecting";
    this._handlers = new Map();
    this._pending = new Map();
    this._seq = 0;
    this._ws = null;
    this._closed = false;
    /** kind ("camera"|"mic"|"screen") -> {stream, pc, session} */
    this._pubs = new Map();
    /** participant -> {stream, pc, session, trackIds, generation} */
    this._subs = new Map();
    this._sources = new WeakMap();
    this._trackIds = new WeakMap();
    this._resubTimers = new Map();
    this._earlyOffers = new Map();
    this._seenMessages = new Set();
  }

  // ---- events ---------------------------------------------------------------------------

  /** Adds a listener; returns a function that removes it. Events: participant_joined,
   * participant_left, track_published, track_unpublished, track_muted, permissions_changed,
   * media_changed, layers_wanted, active_speakers, hand_raised, connection_quality, message, left,
   * session_ended, publish_ended, stream, connection, room_restarted, error. */
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this._handlers.get(type).delete(fn);
  }

  _emit(type, detail) {
    for (const fn of this._handlers.get(type) || []) {
      try { fn(detail); } catch (e) { console.error(`fanfare ${type} handler`, e); }
    }
  }

  // ---- REST -----------------------------------------------------------------------------

  /** Calls the HTTP API; resolves with the parsed body, rejects with a FanfareError. */
  async api(method, path, body, { headers = {} } = {}) {
    let res;
    try {
      res = await fetch(this.url + path, {
        method,
        headers: {
          Authorization: "Bearer " + this.token,
          ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      throw new FanfareError("The server cannot be reached.", { code: "unreachable" });
    }
    return Fanfare._read(res);
  }

  static async _read(res) {
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (!res.ok) {
      const err = data && data.error;
      throw new FanfareError((err && err.message) || `The server answered ${res.status}.`, {
        status: res.status,
        code: (err && err.code) || "http_" + res.status,
      });
    }
    return data;
  }

  // ---- socket ---------------------------------------------------------------------------

  _open() {
    return new Promise((resolve, reject) => {
      const wsUrl = this.url.replace(/^http/, "ws") + "/v1/rtc?token=" + encodeURIComponent(this.token);
      const ws = new WebSocket(wsUrl);
      this._ws = ws;
      let hello = false;
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (_) { return; }
        if (msg.type === "hello" && !hello) {
          hello = true;
          this.connection = msg.connection;
          this._setState("open");
          resolve();
          return;
        }
        this._dispatch(msg);
      };
      ws.onclose = async () => {
        if (this._ws !== ws) return;
        clearInterval(this._pinger);
        this._failPending(new FanfareError("The connection to the server was lost.", { code: "connection_lost" }));
        this._dropSessions();
        if (!hello) {
          reject(await this._whyRefused());
          return;
        }
        if (!this._closed && this.reconnect) this._reconnect();
        else this._setState("closed");
      };
      clearInterval(this._pinger);
      this._pinger = setInterval(() => this._raw({ type: "ping" }), PING_EVERY_MS);
    });
  }

  /** After a refused socket: a sentence saying why (bad token, or server down). */
  async _whyRefused() {
    try {
      await this.api("GET", "/v1/rtc/config");
      return new FanfareError("The realtime connection was refused.", { code: "refused" });
    } catch (e) {
      return e;
    }
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit("connection", { state, ...extra });
  }

  async _reconnect() {
    for (let attempt = 1; !this._closed; attempt++) {
      const wait = Math.min(10_000, 500 * 2 ** Math.min(attempt, 5));
      this._setState("reconnecting", { attempt, retryInMs: wait });
      await sleep(wait);
      if (this._closed) return;
      try {
        await this._open();
      } catch (e) {
        if (e.status === 401) {
          this._setState("closed", { error: e });
          return;
        }
        continue;
      }
      await this._restore();
      this._setState("open", { reconnected: true });
      return;
    }
  }

  /** After a reconnect: join the group again, publish again what was published, resubscribe. */
  async _restore() {
    if (!this.group) return;
    const group = this.group;
    try {
      await this.join(group);
    } catch (e) {
      this._emit("error", e);
      return;
    }
    for (const [kind, pub] of [...this._pubs]) {
      const live = pub.stream.getTracks().some((t) => t.readyState === "live");
      this._pubs.delete(kind);
      if (live) this._publishStream(kind, pub.stream).catch((e) => this._emit("error", e));
    }
    for (const participant of [...this._subs.keys()]) this._scheduleResubscribe(participant, 0);
  }

  /** Ends a media session on the server, quietly (it may have ended there already). */
  _endSession(session) {
    if (session) this.request({ type: "end_session", session }).catch(() => {});
  }

  _raw(msg) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  /** Sends a request and resolves with the reply carrying the same `req`. */
  request(msg) {
    const req = "r" + ++this._seq;
    return new Promise((resolve, reject) => {
      if (!this._raw({ ...msg, req })) {
        reject(new FanfareError("Not connected to the server; reconnecting.", { code: "not_connected" }));
        return;
      }
      const timer = setTimeout(() => {
        this._pending.delete(req);
        reject(new FanfareError("The server did not answer in time.", { code: "timeout" }));
      }, REQUEST_TIMEOUT_MS);
      this._pending.set(req, { resolve, reject, timer });
    });
  }

  _failPending(err) {
    for (const [, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._pending.clear();
  }

  _dispatch(msg) {
    if (msg.req && this._pending.has(msg.req)) {
      const p = this._pending.get(msg.req);
      this._pending.delete(msg.req);
      clearTimeout(p.timer);
      if (msg.type === "error") p.reject(new FanfareError(msg.message, { code: msg.code }));
      else p.resolve(msg);
      if (msg.type !== "session_ended") return;
    }
    const inGroup = msg.group === undefined || msg.group === this.group;
    switch (msg.type) {
      case "participant_joined":
        if (!inGroup) return;
        this._participant(msg.user, msg.name).present = true;
        break;
      case "participant_left": {
        if (!inGroup) return;
        const p = this.participants.get(msg.user);
        if (p) {
          p.present = false;
          p.handRaised = false;
        }
        break;
      }
      case "hand_raised":
        if (!inGroup) return;
        if (msg.user === this.user) this.handRaised = msg.raised;
        else this._participant(msg.user).handRaised = msg.raised;
        break;
      case "track_published":
        if (!inGroup) return;
        this._participant(msg.participant).tracks.set(msg.track.id, msg.track);
        // A socket playback gets the new track through the server's `offer`; only label it.
        if (this._subs.has(msg.participant)) this._labelTracks(this._subs.get(msg.participant));
        break;
      case "track_unpublished": {
        if (!inGroup) return;
        const p = this.participants.get(msg.participant);
        if (p) p.tracks.delete(msg.track);
        // The server's `offer` removes the track from a socket playback; with none left, stop.
        if (this._subs.has(msg.participant) && !(p && p.tracks.size)) {
          this._endSubscription(msg.participant, "unpublished");
        }
        break;
      }
      case "track_muted": {
        if (!inGroup) return;
        const t = this.participants.get(msg.participant)?.tracks.get(msg.track);
        if (t) t.muted = true;
        break;
      }
      case "layers_wanted": {
        // Dynacast: send only the simulcast layers someone receives.
        const pub = [...this._pubs.values()].find((p) => p.session === msg.session);
        if (pub) this._sendLayers(pub, msg.track, msg.rids);
        break;
      }
      case "media_changed":
        if (!inGroup) return;
        this.media = msg.media;
        this._applyMediaCaps();
        break;
      case "permissions_changed":
        if (!inGroup) return;
        this.permissions = msg.permissions;
        if (!msg.permissions.can_publish) this._stopAllPublishing("can_publish was revoked");
        break;
      case "left":
        if (msg.group === this.group) {
          this._stopAllPublishing(msg.reason);
          for (const p of [...this._subs.keys()]) this._endSubscription(p, msg.reason);
          this.group = null;
          this.permissions = null;
          this.media = null;
        }
        break;
      case "session_ended":
        this._sessionEnded(msg.session, msg.reason);
        break;
      case "offer":
        this._offered(msg);
        break;
      case "room_restarted":
        if (inGroup) this.refreshCall().catch(() => {});
        break;
      case "message":
        if (!inGroup) return;
        if (this._seenMessages.has(msg.message.id)) return;
        this._seenMessages.add(msg.message.id);
        this._emit("message", { group: msg.group, ...msg.message });
        return;
      case "error":
        this._emit("error", new FanfareError(msg.message, { code: msg.code }));
        return;
      default:
        break;
    }
    this._emit(msg.type, msg);
  }

  _participant(user, name) {
    let p = this.participants.get(user);
    if (!p) {
      p = { user, name: name || user, present: false, handRaised: false, tracks: new Map() };
      this.participants.set(user, p);
    }
    if (name) p.name = name;
    return p;
  }

  // ---- groups and chat ------------------------------------------------------------------

  /** Enters a group's room (leaving the previous one): resolves with your permissions. */
  async join(groupId) {
    if (this.group && this.group !== groupId) await this.leave();
    this._seenMessages = new Set();
    const reply = await this.request({ type: "join", group: groupId });
    this.group = groupId;
    this.permissions = reply.permissions;
    this.media = reply.media || null;
    this.participants = new Map();
    // Who was already connected (the server lists them with can_list).
    this.handRaised = false;
    for (const p of reply.participants || []) {
      const known = this._participant(p.user, p.name);
      known.present = true;
      known.handRaised = !!p.hand_raised;
      this._emit("participant_joined", { group: groupId, user: p.user, name: p.name, handRaised: known.handRaised });
    }
    await this.refreshCall().catch(() => {});
    return reply.permissions;
  }

  /** Raises (or, with `false`, lowers) your hand in the current group: asking a moderator for
   * the floor (socket `raise_hand`). Moderators and those who list the room get
   * `hand_raised` `{user, raised}`; the server lowers it when you are given `can_publish`. */
  async raiseHand(raised = true) {
    if (!this.group) throw new FanfareError("join a group first", { code: "invalid_argument" });
    const reply = await this.request({ type: "raise_hand", group: this.group, raised });
    this.handRaised = reply.raised;
    return reply.raised;
  }

  /** Leaves the current group: stops publishing and playback there. */
  async leave() {
    const group = this.group;
    if (!group) return;
    this._stopAllPublishing("left");
    for (const p of [...this._subs.keys()]) this._endSubscription(p, "left");
    this.group = null;
    this.permissions = null;
    this.participants = new Map();
    await this.request({ type: "leave", group }).catch(() => {});
  }

  /** Reloads the call view (who publishes which tracks) into `ff.participants`. */
  async refreshCall() {
    if (!this.group || !this.permissions?.can_list) return this.participants;
    const view = await this.api("GET", `/v1/groups/${encodeURIComponent(this.group)}/call`);
    for (const p of this.participants.values()) p.tracks = new Map();
    for (const p of view.participants || []) {
      const entry = this._participant(p.user, p.name);
      for (const t of p.tracks) entry.tracks.set(t.id, t);
    }
    return this.participants;
  }

  /** Sends a chat message to the current group; resolves with the stored message. */
  async send(text) {
    this._requireGroup();
    const reply = await this.request({ type: "send_message", group: this.group, text });
    this._seenMessages.add(reply.message.id);
    return reply.message;
  }

  /** The group's history, oldest first: the newest `limit` messages (default 200). */
  async history({ group = this.group, limit = 200 } = {}) {
    let after = null;
    let all = [];
    for (let page = 0; page < 20; page++) {
      const q = new URLSearchParams({ limit: "1000" });
      if (after) q.set("after", after);
      const body = await this.api("GET", `/v1/groups/${encodeURIComponent(group)}/messages?${q}`);
      all = all.concat(body.messages || []).slice(-limit);
      if (!body.next_after) break;
      after = body.next_after;
    }
    if (group === this.group) for (const m of all) this._seenMessages.add(m.id);
    return all;
  }

  _requireGroup() {
    if (!this.group) throw new FanfareError("Join a group first.", { code: "not_joined" });
  }

  // ---- publishing -----------------------------------------------------------------------

  /**
   * Publishes any of camera, mic and screen into the current group. Each option is `true`, a
   * MediaTrackConstraints object (e.g. `{deviceId}`), or a MediaStream you opened yourself.
   * Resolves with {camera?, mic?, screen?} -> the local MediaStream of each.
   */
  async publish({ camera, mic, screen } = {}) {
    this._requireGroup();
    const out = {};
    const jobs = [];
    const open = async (kind, want) => {
      if (!want) return;
      if (this._pubs.has(kind)) await this.unpublish(kind);
      let stream = want instanceof MediaStream ? want : null;
      try {
        if (!stream && kind === "screen") {
          stream = await navigator.mediaDevices.getDisplayMedia({ video: want === true ? true : want, audio: false });
        } else if (!stream) {
          const c = want === true ? true : want;
          stream = await navigator.mediaDevices.getUserMedia(kind === "camera" ? { video: this._capped(c) } : { audio: c });
        }
      } catch (e) {
        const what = { camera: "camera", mic: "microphone", screen: "screen share" }[kind];
        const why = e && e.name === "NotAllowedError" ? "permission was denied" :
          e && e.name === "NotFoundError" ? "no such device was found" : (e && e.message) || String(e);
        throw new FanfareError(`The ${what} could not be opened: ${why}.`, { code: "device_" + (e && e.name) });
      }
      await this._publishStream(kind, stream);
      await this._applyMediaCaps();
      out[kind] = stream;
    };
    for (const [kind, want] of Object.entries({ camera, mic, screen })) jobs.push(open(kind, want));
    const results = await Promise.allSettled(jobs);
    const failed = results.find((r) => r.status === "rejected");
    if (failed && !Object.keys(out).length) throw failed.reason;
    if (failed) this._emit("error", failed.reason);
    return out;
  }

  /** Camera constraints within your max_resolution (your own constraints kept). */
  _capped(want) {
    const size = RESOLUTIONS[this.media?.max_resolution];
    if (!size) return want;
    const c = want === true ? {} : { ...want };
    c.width = { ...(typeof c.width === "object" ? c.width : {}), max: size[0] };
    c.height = { ...(typeof c.height === "object" ? c.height : {}), max: size[1] };
    return c;
  }

  /**
   * Keeps what you send within your media caps: video tracks no larger than max_resolution and
   * senders no faster than max_bitrate_kbps (applied again when a moderator changes them).
   */
  async _applyMediaCaps() {
    const size = RESOLUTIONS[this.media?.max_resolution];
    const kbps = this.media?.max_bitrate_kbps;
    for (const pub of this._pubs.values()) {
      for (const sender of pub.pc.getSenders()) {
        if (!sender.track || sender.track.kind !== "video") continue;
        if (size) {
          await sender.track.applyConstraints({ width: { max: size[0] }, height: { max: size[1] } }).catch(() => {});
        }
        const params = sender.getParameters();
        if (kbps && params.encodings && params.encodings.length) {
          // Each simulcast layer keeps its own ceiling; none goes above the cap.
          for (const e of params.encodings) {
            const layer = LAYER_KBPS[e.rid];
            e.maxBitrate = Math.min(layer || kbps, kbps) * 1000;
          }
          await sender.setParameters(params).catch(() => {});
        }
      }
    }
  }

  /** Pauses the simulcast layers of `trackId` not named in `rids` and resumes those named. */
  async _sendLayers(pub, trackId, rids) {
    for (const sender of pub.pc.getSenders()) {
      if (!sender.track || sender.track.id !== trackId) continue;
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length < 2) continue;
      let changed = false;
      for (const e of params.encodings) {
        const active = rids.includes(e.rid);
        if (e.active !== active) {
          e.active = active;
          changed = true;
        }
      }
      if (changed) await sender.setParameters(params).catch(() => {});
    }
  }

  async _publishStream(kind, stream) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    for (const track of stream.getTracks()) {
      const init = { direction: "sendonly", streams: [stream] };
      const layers = kind === "camera" && track.kind === "video" ? simulcastLayers(track) : null;
      if (layers) init.sendEncodings = layers;
      pc.addTransceiver(track, init);
      track.addEventListener("ended", () => {
        if (this._pubs.get(kind)?.stream === stream) this.unpublish(kind);
      });
    }
    const pub = { kind, stream, pc, session: null };
    this._pubs.set(kind, pub);
    try {
      let sdp = await gatheredOffer(pc);
      if (kind === "screen") sdp = labelScreen(sdp);
      const reply = await this.request({ type: "publish", groups: [this.group], sdp });
      pub.session = reply.session;
      await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    } catch (e) {
      if (this._pubs.get(kind) === pub) this._pubs.delete(kind);
      pc.close();
      if (e.code === "forbidden") {
        throw new FanfareError("You may not publish in this group (can_publish is off).", { code: "forbidden" });
      }
      throw e;
    }
    return pub;
  }

  /** Stops publishing one kind ("camera", "mic" or "screen"). */
  async unpublish(kind) {
    const pub = this._pubs.get(kind);
    if (!pub) return;
    this._pubs.delete(kind);
    pub.stream.getTracks().forEach((t) => t.stop());
    pub.pc.close();
    if (pub.session) await this.request({ type: "end_session", session: pub.session }).catch(() => {});
    this._emit("publish_ended", { kind, reason: "stopped" });
  }

  /** What you publish now: kind -> local MediaStream. */
  published() {
    return new Map([...this._pubs].map(([k, p]) => [k, p.stream]));
  }

  _stopAllPublishing(reason) {
    for (const [kind, pub] of [...this._pubs]) {
      this._pubs.delete(kind);
      pub.stream.getTracks().forEach((t) => t.stop());
      pub.pc.close();
      this._endSession(pub.session);
      this._emit("publish_ended", { kind, reason });
    }
  }

  // ---- subscribing ----------------------------------------------------------------------

  /**
   * Plays a participant of the current group: resolves with a MediaStream holding their
   * tracks (camera, screen and microphone; `ff.sourceOf(track)` tells which). When their tracks
   * change the server sends `offer`: the library answers it, adds the new tracks to (and drops
   * the removed ones from) this MediaStream and emits `stream` again (a new subscription only if
   * answering fails).
   */
  async subscribe(participant) {
    this._requireGroup();
    const existing = this._subs.get(participant);
    if (existing && existing.stream) return existing.stream;
    const sub = existing || { participant, generation: 0, stream: null, pc: null, session: null };
    this._subs.set(participant, sub);
    return this._negotiate(sub);
  }

  async _negotiate(sub) {
    const generation = ++sub.generation;
    const info = this.participants.get(sub.participant);
    const tracks = info ? [...info.tracks.values()] : [];
    const videos = Math.max(1, tracks.filter((t) => t.kind === "video").length);
    const audios = Math.max(1, tracks.filter((t) => t.kind === "audio").length);
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    for (let i = 0; i < videos; i++) pc.addTransceiver("video", { direction: "recvonly" });
    for (let i = 0; i < audios; i++) pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.addEventListener("track", (e) => stream.addTrack(e.track));
    let reply;
    try {
      const offer = await gatheredOffer(pc);
      reply = await this.request({ type: "subscribe", group: this.group, participant: sub.participant, sdp: offer });
      if (sub.generation !== generation || this._subs.get(sub.participant) !== sub) {
        pc.close();
        this._endSession(reply.session);
        return sub.stream;
      }
      await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    } catch (e) {
      pc.close();
      if (this._subs.get(sub.participant) === sub && !sub.stream) this._subs.delete(sub.participant);
      throw e;
    }
    // Which received track is which publication (by the msid in the answer).
    const ids = trackIdsByMid(reply.sdp);
    for (const t of pc.getTransceivers()) {
      const id = ids.get(t.mid);
      const view = id && info?.tracks.get(id);
      if (t.receiver.track) {
        this._sources.set(t.receiver.track, view ? view.source : t.receiver.track.kind === "audio" ? "microphone" : "camera");
        if (id) this._trackIds.set(t.receiver.track, id);
        else stream.removeTrack(t.receiver.track);
      }
    }
    const old = { pc: sub.pc, session: sub.session };
    Object.assign(sub, { pc, session: reply.session, stream, mids: ids });
    if (old.pc) old.pc.close();
    this._endSession(old.session);
    this._emit("stream", { participant: sub.participant, stream, pc });
    // An offer the server sent right after its answer (tracks changed meanwhile).
    const early = this._earlyOffers.get(reply.session);
    if (early) {
      this._earlyOffers.delete(reply.session);
      this._offered(early.msg);
    }
    return stream;
  }

  /** The server's `offer` for a playback of this socket: its publisher's tracks changed. */
  _offered(msg) {
    const sub = [...this._subs.values()].find((s) => s.session && s.session === msg.session);
    if (!sub) {
      // Its subscription is still applying the server's first answer; the offer waits for it.
      const prev = this._earlyOffers.get(msg.session);
      if (prev) clearTimeout(prev.timer);
      const timer = setTimeout(() => this._earlyOffers.delete(msg.session), REQUEST_TIMEOUT_MS);
      this._earlyOffers.set(msg.session, { msg, timer });
      return;
    }
    const pc = sub.pc;
    const generation = sub.generation;
    sub.answering = (sub.answering || Promise.resolve()).then(async () => {
      if (sub.pc !== pc || sub.generation !== generation || this._subs.get(sub.participant) !== sub) return;
      // What the stream held before (applying the offer fires `track`, which adds to it).
      const before = new Set(sub.stream.getTracks());
      try {
        await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        if (sub.pc !== pc || sub.generation !== generation) return;
        if (!this._raw({ type: "answer", session: msg.session, sdp: pc.localDescription.sdp, req: this._watchAnswer(sub, pc) })) return;
      } catch (e) {
        // Could not apply it: fall back to a new subscription.
        if (sub.pc === pc && this._subs.get(sub.participant) === sub) this._scheduleResubscribe(sub.participant, 0);
        return;
      }
      sub.mids = trackIdsByMid(msg.sdp);
      this._syncTracks(sub, before);
    });
  }

  /** A `req` for an `answer`: the server replies only when it refuses it (then resubscribe). */
  _watchAnswer(sub, pc) {
    const req = "r" + ++this._seq;
    const timer = setTimeout(() => this._pending.delete(req), REQUEST_TIMEOUT_MS);
    this._pending.set(req, {
      timer,
      resolve: () => {},
      reject: (e) => {
        if (e && e.code === "not_connected") return;
        if (sub.pc === pc && this._subs.get(sub.participant) === sub) this._scheduleResubscribe(sub.participant, 0);
      },
    });
    return req;
  }

  /** After a renegotiation: the stream holds the tracks being received now; emits `stream`. */
  _syncTracks(sub, before) {
    const { pc, stream } = sub;
    const want = new Set();
    for (const t of pc.getTransceivers()) {
      const track = t.receiver.track;
      const receiving = !t.stopped && (t.currentDirection === "recvonly" || t.currentDirection === "sendrecv");
      if (track && receiving && track.readyState !== "ended" && sub.mids.has(t.mid)) want.add(track);
    }
    for (const track of stream.getTracks()) if (!want.has(track)) stream.removeTrack(track);
    const have = new Set(stream.getTracks());
    for (const track of want) if (!have.has(track)) stream.addTrack(track);
    const changed = want.size !== before.size || [...want].some((t) => !before.has(t));
    this._labelTracks(sub);
    if (changed) this._emit("stream", { participant: sub.participant, stream, pc });
  }

  /** The server's id of a received track (for `adaptTo`'s and `setLayer`'s `track`), if known. */
  trackIdOf(track) {
    return this._trackIds.get(track) || null;
  }

  /** Which received track is which publication (by the msid the server sent). */
  _labelTracks(sub) {
    if (!sub.pc || !sub.mids) return;
    const info = this.participants.get(sub.participant);
    for (const t of sub.pc.getTransceivers()) {
      const track = t.receiver.track;
      const id = sub.mids.get(t.mid);
      if (!track || !id) continue;
      this._trackIds.set(track, id);
      const view = info?.tracks.get(id);
      if (view) this._sources.set(track, view.source);
      else if (!this._sources.has(track)) this._sources.set(track, track.kind === "audio" ? "microphone" : "camera");
    }
  }

  _scheduleResubscribe(participant, delay = 300) {
    clearTimeout(this._resubTimers.get(participant));
    this._resubTimers.set(participant, setTimeout(() => {
      this._resubTimers.delete(participant);
      const sub = this._subs.get(participant);
      if (sub) this._negotiate(sub).catch((e) => {
        if (e.status === 404 || /not publishing/.test(e.message)) this._endSubscription(participant, "unpublished");
        else this._emit("error", e);
      });
    }, delay));
  }

  /**
   * Pins the video of a participant you play to a simulcast layer ("q", "h", "f"), or back to
   * automatic with `null`; within your caps (a layer above your max_resolution is not sent).
   * `track` limits it to one of their tracks (e.g. keep the screen share sharp).
   */
  async setLayer(participant, rid, { track } = {}) {
    const sub = this._subs.get(participant);
    if (!sub || !sub.session) throw new FanfareError(`you are not playing ${participant}`, { code: "not_found" });
    const msg = { type: "set_layer", session: sub.session, rid: rid ?? null };
    if (track) msg.track = track;
    return this.request(msg);
  }

  /**
   * Adaptive stream: keeps telling the server the size `video` shows `participant`'s video at
   * (socket `set_view`, device pixels; 0 x 0 while the element or the page is hidden), so it
   * sends the smallest simulcast layer that covers it, within your caps (a `setLayer` pin goes
   * first). Follows the element's size and visibility, and a renewed subscription, until the
   * returned function is called.
   */
  adaptTo(participant, video, { track } = {}) {
    let told = null;
    let visible = true;
    let timer = null;
    const tell = () => {
      timer = null;
      const sub = this._subs.get(participant);
      if (!sub || !sub.session) return;
      const dpr = window.devicePixelRatio || 1;
      const shown = visible && !document.hidden;
      const size = shown ? [Math.round(video.clientWidth * dpr), Math.round(video.clientHeight * dpr)] : [0, 0];
      const key = `${sub.session} ${size[0]}x${size[1]}`;
      if (key === told) return;
      told = key;
      const msg = { type: "set_view", session: sub.session, width: size[0], height: size[1] };
      if (track) msg.track = track;
      this.request(msg).catch(() => {
        told = null;
      });
    };
    const soon = () => {
      if (!timer) timer = setTimeout(tell, 250);
    };
    const resized = new ResizeObserver(soon);
    resized.observe(video);
    const seen = new IntersectionObserver((entries) => {
      visible = entries.some((e) => e.isIntersecting);
      soon();
    });
    seen.observe(video);
    document.addEventListener("visibilitychange", soon);
    const offStream = this.on("stream", (e) => {
      if (e.participant === participant) soon();
    });
    soon();
    return () => {
      resized.disconnect();
      seen.disconnect();
      document.removeEventListener("visibilitychange", soon);
      offStream();
      clearTimeout(timer);
    };
  }

  /** Stops playing a participant. */
  unsubscribe(participant) {
    this._endSubscription(participant, "unsubscribed");
  }

  _endSubscription(participant, reason) {
    const sub = this._subs.get(participant);
    if (!sub) return;
    this._subs.delete(participant);
    sub.generation++;
    if (sub.pc) sub.pc.close();
    this._endSession(sub.session);
    this._emit("stream", { participant, stream: null, reason });
  }

  /** The stream of a participant you subscribed to, if any. */
  streamOf(participant) {
    return this._subs.get(participant)?.stream || null;
  }

  /** "camera", "screen" or "microphone" for a track received through `subscribe`. */
  sourceOf(track) {
    return this._sources.get(track) || (track.kind === "audio" ? "microphone" : "camera");
  }

  _sessionEnded(session, reason) {
    for (const [kind, pub] of this._pubs) {
      if (pub.session !== session) continue;
      this._pubs.delete(kind);
      pub.pc.close();
      // A dropped connection (not a revoked permission): publish the same tracks again.
      const live = pub.stream.getTracks().some((t) => t.readyState === "live");
      if (live && /dropped/.test(reason || "") && this.group && (pub.retries || 0) < 3) {
        setTimeout(() => {
          if (this._pubs.has(kind) || !this.group) return;
          this._publishStream(kind, pub.stream).then((p) => { p.retries = (pub.retries || 0) + 1; })
            .catch((e) => { pub.stream.getTracks().forEach((t) => t.stop()); this._emit("publish_ended", { kind, reason: e.message }); });
        }, 500);
        continue;
      }
      pub.stream.getTracks().forEach((t) => t.stop());
      this._emit("publish_ended", { kind, reason: reason || "ended" });
    }
    for (const [participant, sub] of this._subs) {
      if (sub.session === session && reason) {
        const p = this.participants.get(participant);
        if (p && p.tracks.size && !/revoked|removed/.test(reason)) this._scheduleResubscribe(participant, 1000);
        else this._endSubscription(participant, reason);
      }
    }
  }

  /** Drops every media session after the socket closed (the server ends them too). */
  _dropSessions() {
    for (const pub of this._pubs.values()) {
      pub.pc.close();
      pub.session = null;
    }
    for (const sub of this._subs.values()) {
      if (sub.pc) sub.pc.close();
      sub.session = null;
      sub.pc = null;
    }
  }

  // ---- stats ----------------------------------------------------------------------------

  /** Inbound stats of a subscription: {framesDecoded, audioLevel, bytesReceived}. */
  async stats(participant) {
    const sub = this._subs.get(participant);
    const out = { framesDecoded: 0, audioLevel: 0, bytesReceived: 0 };
    if (!sub || !sub.pc) return out;
    (await sub.pc.getStats()).forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      out.bytesReceived += s.bytesReceived || 0;
      if (s.kind === "video") out.framesDecoded += s.framesDecoded || 0;
      if (s.kind === "audio") out.audioLevel = Math.max(out.audioLevel, s.audioLevel || 0);
    });
    return out;
  }

  /** The level (0..1) of your own published microphone. */
  async localAudioLevel() {
    const pub = this._pubs.get("mic");
    if (!pub) return 0;
    let level = 0;
    (await pub.pc.getStats()).forEach((s) => {
      if (s.type === "media-source" && s.kind === "audio") level = Math.max(level, s.audioLevel || 0);
    });
    return level;
  }

  /** Closes everything: publishing, playback, the socket. */
  close() {
    this._closed = true;
    this._stopAllPublishing("closed");
    for (const p of [...this._subs.keys()]) this._endSubscription(p, "closed");
    clearInterval(this._pinger);
    if (this._ws) this._ws.close();
    this._setState("closed");
  }
}

export { SOURCES };
export default Fanfare;

// app/call.js — the call tab: the lobby, then the call itself. Conference layout (a grid of
// tiles with names, mute badges and the active speaker highlighted) for those who may publish,
// webinar layout (the presenter large, the others small) for those who may only watch. Owns the
// call controls (mic, camera, screen, device pickers, leave), the people strip, and moderation
// (mute, remove from the call, allow / stop presenting) for moderators; watchers may raise a
// hand, which moderators see in the people strip.

import { h, fill, sentence, toast, initials } from "./dom.js";

export class CallView {
  constructor(root, ff, group) {
    this.root = root;
    this.ff = ff;
    this.group = group;
    this.inCall = false;
    this.tiles = new Map(); // "user:camera" | "user:screen" -> tile
    this.speaker = null;
    this.linkQuality = new Map(); // user -> "excellent" | "good" | "poor" | "lost"
    this.offs = [];
    this.timers = [];
    this.wantCamera = true;
    this.wantMic = true;
    const on = (type, fn) => this.offs.push(ff.on(type, fn));
    on("track_published", (m) => this.onTracksChanged(m.participant));
    on("track_unpublished", (m) => this.onTracksChanged(m.participant));
    on("track_muted", (m) => this.onMuted(m));
    on("participant_joined", () => this.renderPeople());
    on("participant_left", () => this.renderPeople());
    // The server grades each participant's links; a poor or lost one is marked on their tiles,
    // and told once to its own user when it turns poor.
    on("connection_quality", (m) => {
      if (m.group !== this.group.id) return;
      for (const { user, quality } of m.participants) {
        const before = this.linkQuality.get(user);
        this.linkQuality.set(user, quality);
        if (user === this.ff.user && quality === "poor" && before !== "poor" && this.inCall) {
          toast("Your connection is weak: others may see and hear you poorly.", "error");
        }
      }
      this.markLinks();
    });
    on("hand_raised", (m) => {
      if (m.group !== this.group.id || !this.inCall) return;
      if (m.user === this.ff.user) return this.renderControls();
      if (m.raised && this.perms.can_moderate) toast(`${this.ff.participants.get(m.user)?.name || m.user} raised a hand.`);
      this.renderPeople();
    });
    on("stream", () => this.renderTiles());
    // The server says who speaks, loudest first, from the levels clients put on their audio.
    on("active_speakers", (m) => {
      if (m.group === this.group.id && this.inCall) this.showSpeaker(m.speakers[0]?.user ?? null);
    });
    on("publish_ended", ({ kind, reason }) => {
      if (reason && reason !== "stopped" && reason !== "left" && reason !== "closed") {
        toast(`Your ${kind} stopped: ${reason}.`, "error");
      }
      this.renderControls();
      this.renderTiles();
    });
    on("permissions_changed", ({ permissions }) => this.onPermissions(permissions));
    on("connection", ({ state }) => { if (state === "open") this.refresh(); });
    this.render();
    this.refresh();
  }

  get perms() {
    return this.ff.permissions || {};
  }

  /** Conference layout for publishers, webinar layout for watchers. */
  get webinar() {
    return !this.perms.can_publish;
  }

  async refresh() {
    try { await this.ff.refreshCall(); } catch (_) { /* can_list off */ }
    if (this.inCall) this.subscribeAll();
    this.render();
  }

  render() {
    if (!this.inCall) return this.renderLobby();
    this.stage = h("div.stage" + (this.webinar ? ".webinar" : ".grid"), { id: "stage" });
    this.controls = h("div.controls#controls");
    this.people = h("div.people#people");
    for (const tile of this.tiles.values()) tile.stopAdapt?.();
    this.tiles.clear();
    fill(this.root, h("div.call", this.stage, this.controls, this.people));
    this.renderTiles();
    this.renderControls();
    this.renderPeople();
  }

  publishers() {
    return [...this.ff.participants.values()].filter((p) => p.tracks.size);
  }

  renderLobby() {
    const p = this.perms;
    const pubs = this.publishers();
    const cam = h("input#lobby-camera", { type: "checkbox", checked: this.wantCamera, onchange: (e) => (this.wantCamera = e.target.checked) });
    const mic = h("input#lobby-mic", { type: "checkbox", checked: this.wantMic, onchange: (e) => (this.wantMic = e.target.checked) });
    let note = null;
    if (!p.can_publish && !p.can_subscribe) note = "You may neither watch nor present in this call.";
    else if (!p.can_publish) note = "You will watch this call; a moderator can let you present.";
    else if (!p.can_subscribe) note = "You may present but not watch the others.";
    fill(this.root, h("section.lobby",
      h("h2", this.group.name),
      h("p", !p.can_list ? "You cannot see who is in the call." :
        pubs.length ? `In the call now: ${pubs.map((x) => x.name).join(", ")}.` : "Nobody is in the call yet."),
      note && h("p.muted", note),
      p.can_publish && h("div.lobby-options", h("label.check", cam, "Camera on"), h("label.check", mic, "Microphone on")),
      h("button.primary.big#join-call", {
        disabled: !p.can_publish && !p.can_subscribe,
        onclick: () => this.join(),
      }, p.can_publish ? "Join call" : "Watch")));
  }

  async join() {
    this.inCall = true;
    this.render();
    this.subscribeAll();
    if (this.perms.can_publish && (this.wantCamera || this.wantMic)) {
      await this.publish({ camera: this.wantCamera, mic: this.wantMic });
    }
  }

  async leave() {
    this.inCall = false;
    for (const t of this.timers.splice(0)) clearInterval(t);
    for (const kind of this.ff.published().keys()) await this.ff.unpublish(kind);
    for (const p of this.ff.participants.keys()) this.ff.unsubscribe(p);
    this.render();
  }

  async publish(what) {
    const withDevices = {};
    for (const [k, v] of Object.entries(what)) {
      if (!v) continue;
      const sel = this.root.querySelector(`select[data-device="${k}"]`);
      withDevices[k] = sel && sel.value ? { deviceId: { exact: sel.value } } : true;
    }
    try {
      await this.ff.publish(withDevices);
    } catch (e) {
      toast(sentence(e), "error");
    }
    this.renderControls();
    this.renderTiles();
    this.fillDevices();
  }

  subscribeAll() {
    if (!this.inCall || !this.perms.can_subscribe) return;
    for (const p of this.publishers()) {
      if (p.user === this.ff.user || this.ff.streamOf(p.user)) continue;
      this.ff.subscribe(p.user).catch((e) => {
        if (e.status !== 404) toast(`Cannot play ${p.name}: ${sentence(e)}`, "error");
      });
    }
  }

  onTracksChanged(user) {
    if (!this.inCall) return this.renderLobby();
    if (user !== this.ff.user) this.subscribeAll();
    this.renderTiles();
    this.renderPeople();
  }

  onMuted({ participant, track }) {
    if (participant === this.ff.user) {
      const t = this.ff.participants.get(participant)?.tracks.get(track);
      toast(`A moderator muted your ${t ? t.source : "track"}.`, "error");
      if (t && t.source === "microphone") this.ff.unpublish("mic");
      if (t && t.source === "camera") this.ff.unpublish("camera");
    }
    this.renderTiles();
  }

  onPermissions(p) {
    if (p.can_publish) toast("You may now present: turn on your camera or share your screen.");
    else toast("You can no longer present in this group.");
    if (!p.can_subscribe) for (const u of this.ff.participants.keys()) this.ff.unsubscribe(u);
    if (!this.inCall) return this.renderLobby();
    this.stage.className = "stage " + (this.webinar ? "webinar" : "grid");
    this.subscribeAll();
    this.renderControls();
    this.renderTiles();
  }

  // ---- tiles ----------------------------------------------------------------------------

  /** What each tile should show: [{key, user, name, source, stream, local, audio, muted}]. */
  wantedTiles() {
    const ff = this.ff;
    const out = [];
    const mine = ff.published();
    const me = ff.participants.get(ff.user);
    const myName = ff.name;
    if (mine.size || !this.webinar) {
      const cam = mine.get("camera");
      out.push({ key: `${ff.user}:camera`, user: ff.user, name: myName + " (you)", source: "camera", local: true,
        stream: cam || null, hasVideo: !!cam, hasAudio: mine.has("mic"), muted: mutedSource(me, "microphone") });
    }
    if (mine.get("screen")) {
      out.push({ key: `${ff.user}:screen`, user: ff.user, name: myName + " (your screen)", source: "screen", local: true,
        stream: mine.get("screen"), hasVideo: true, hasAudio: false });
    }
    for (const p of this.publishers()) {
      if (p.user === ff.user) continue;
      const stream = ff.streamOf(p.user);
      const tracks = stream ? stream.getTracks() : [];
      const cam = tracks.filter((t) => t.kind === "video" && ff.sourceOf(t) !== "screen");
      const screen = tracks.filter((t) => t.kind === "video" && ff.sourceOf(t) === "screen");
      const audio = tracks.filter((t) => t.kind === "audio");
      const views = [...p.tracks.values()];
      const hasCam = views.some((t) => t.kind === "video" && t.source !== "screen");
      const hasAudio = views.some((t) => t.kind === "audio");
      out.push({ key: `${p.user}:camera`, user: p.user, name: p.name, source: "camera", local: false,
        tracks: [...cam.slice(0, 1), ...audio], hasVideo: hasCam && cam.length > 0, hasAudio,
        muted: !hasAudio || mutedSource(p, "microphone") });
      if (views.some((t) => t.source === "screen") && screen.length) {
        out.push({ key: `${p.user}:screen`, user: p.user, name: `${p.name}'s screen`, source: "screen", local: false,
          tracks: screen.slice(0, 1), hasVideo: true, hasAudio: false });
      }
    }
    return out;
  }

  renderTiles() {
    if (!this.inCall || !this.stage) return;
    const wanted = this.wantedTiles();
    const keys = new Set(wanted.map((w) => w.key));
    for (const [key, tile] of this.tiles) {
      if (!keys.has(key)) { tile.stopAdapt?.(); tile.el.remove(); this.tiles.delete(key); }
    }
    for (const w of wanted) {
      let tile = this.tiles.get(w.key);
      if (!tile) { tile = this.makeTile(w); this.tiles.set(w.key, tile); }
      this.updateTile(tile, w);
    }
    this.layout(wanted);
  }

  makeTile(w) {
    const video = h("video", { autoplay: true, playsInline: true, muted: w.local, dataset: { user: w.user, source: w.source } });
    const avatar = h("div.avatar", initials(w.local ? this.ff.name : w.name));
    const label = h("span.name");
    const badges = h("span.badges");
    const menu = h("div.tile-menu");
    const el = h("figure.tile", { dataset: { user: w.user, source: w.source, key: w.key } },
      video, avatar, h("figcaption", badges, label), menu);
    el.addEventListener("dblclick", () => { this.pinned = this.pinned === w.key ? null : w.key; this.renderTiles(); });
    return { el, video, avatar, label, badges, menu, trackIds: "" };
  }

  updateTile(tile, w) {
    tile.label.textContent = w.name;
    fill(tile.badges,
      w.source === "screen" ? h("span.badge", { title: "screen share" }, "screen") : null,
      w.source === "camera" && (w.muted || !w.hasAudio) ? h("span.badge.muted", { title: "microphone off", dataset: { badge: "mic-off" } }, "mic off") : null);
    tile.el.classList.toggle("no-video", !w.hasVideo);
    this.markLink(tile.el, w.user);
    // Attach media only when the set of tracks changed, so playback does not restart.
    let stream = w.stream || null;
    const tracks = stream ? stream.getTracks() : w.tracks || [];
    const ids = tracks.map((t) => t.id).join(",");
    if (ids !== tile.trackIds) {
      tile.trackIds = ids;
      tile.video.srcObject = tracks.length ? (stream || new MediaStream(tracks)) : null;
      if (tracks.length) tile.video.play().catch(() => {});
      // Adaptive stream: a remote video gets the simulcast layer that covers its tile.
      tile.stopAdapt?.();
      tile.stopAdapt = null;
      const video = tracks.find((t) => t.kind === "video");
      const id = !w.local && video ? this.ff.trackIdOf(video) : null;
      if (id) tile.stopAdapt = this.ff.adaptTo(w.user, tile.video, { track: id });
    }
    if (!w.local && this.perms.can_moderate) {
      fill(tile.menu, w.source === "camera" && [
        h("button.small", { dataset: { action: "mute", user: w.user }, title: "Mute for everyone", onclick: () => this.moderate("mute", w.user) }, "Mute"),
        h("button.small", { dataset: { action: "stop-present", user: w.user }, onclick: () => this.setPresent(w.user, false) }, "Stop presenting"),
        h("button.small.danger", { dataset: { action: "remove", user: w.user }, onclick: () => this.moderate("remove", w.user) }, "Remove"),
      ]);
    } else {
      tile.menu.replaceChildren();
    }
  }

  /** Webinar: the presenter (a screen share, the pinned tile, the speaker, or the first) large. */
  layout(wanted) {
    const order = [...wanted];
    let main = null;
    if (this.webinar || this.pinned) {
      main = order.find((w) => w.key === this.pinned) || order.find((w) => w.source === "screen" && !w.local) ||
        order.find((w) => `${w.user}:camera` === this.speaker && !w.local) || order.find((w) => !w.local) || order[0];
    }
    this.stage.classList.toggle("has-main", !!main);
    this.stage.dataset.count = String(order.length);
    for (const w of order) {
      const tile = this.tiles.get(w.key);
      tile.el.classList.toggle("main", !!main && w.key === main.key);
      this.stage.append(tile.el);
    }
    if (main) this.stage.prepend(this.tiles.get(main.key).el);
    if (!order.length) {
      if (!this.stage.querySelector(".empty")) {
        this.stage.append(h("p.empty.muted", this.webinar ? "Waiting for a presenter…" : "Nobody else is here yet."));
      }
    } else {
      this.stage.querySelector(".empty")?.remove();
    }
  }

  /** Marks the tiles of participants whose links the server grades poor or lost. */
  markLinks() {
    for (const [, t] of this.tiles) this.markLink(t.el, t.el.dataset.user);
  }

  /** Marks one tile with its participant's link grade. */
  markLink(el, user) {
    const q = this.linkQuality.get(user);
    el.classList.toggle("poor-link", q === "poor");
    el.classList.toggle("lost-link", q === "lost");
  }

  /** Outlines `user`'s camera tile as the active speaker (none: `null`). */
  showSpeaker(user) {
    const key = user ? `${user}:camera` : null;
    if (key === this.speaker) return;
    this.speaker = key;
    for (const [k, t] of this.tiles) t.el.classList.toggle("speaking", k === key);
    if (this.webinar) this.renderTiles();
  }

  // ---- controls -------------------------------------------------------------------------

  renderControls() {
    if (!this.inCall || !this.controls) return;
    const pub = this.ff.published();
    const p = this.perms;
    const toggle = (kind, on, off) => h("button.ctl" + (pub.has(kind) ? ".on" : ""), {
      id: `toggle-${kind}`, dataset: { kind },
      onclick: () => (pub.has(kind) ? this.ff.unpublish(kind).then(() => { this.renderControls(); this.renderTiles(); }) : this.publish({ [kind]: true })),
    }, pub.has(kind) ? off : on);
    fill(this.controls,
      p.can_publish ? [
        toggle("mic", "Unmute", "Mute"),
        toggle("camera", "Start video", "Stop video"),
        toggle("screen", "Share screen", "Stop sharing"),
        h("select.device", { dataset: { device: "camera" }, title: "Camera", onchange: () => this.switchDevice("camera") }),
        h("select.device", { dataset: { device: "mic" }, title: "Microphone", onchange: () => this.switchDevice("mic") }),
      ] : [
        h("span.muted#watch-note", "You are watching. A moderator can let you present."),
        h("button.ctl#raise-hand" + (this.ff.handRaised ? ".on" : ""), {
          onclick: () => this.ff.raiseHand(!this.ff.handRaised)
            .then(() => this.renderControls())
            .catch((e) => toast(e.message, "error")),
        }, this.ff.handRaised ? "Lower hand" : "Raise hand"),
      ],
      h("span.spacer"),
      h("button.ctl.danger#leave-call", { onclick: () => this.leave() }, "Leave"));
    this.fillDevices();
  }

  async fillDevices() {
    if (!navigator.mediaDevices?.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
    for (const [kind, type, label] of [["camera", "videoinput", "Camera"], ["mic", "audioinput", "Microphone"]]) {
      const sel = this.root.querySelector(`select[data-device="${kind}"]`);
      if (!sel) continue;
      const current = this.ff.published().get(kind)?.getTracks()[0]?.getSettings().deviceId || sel.value;
      const list = devices.filter((d) => d.kind === type);
      fill(sel, list.length ? list.map((d, i) => h("option", { value: d.deviceId, selected: d.deviceId === current }, d.label || `${label} ${i + 1}`))
        : h("option", { value: "" }, `No ${label.toLowerCase()}`));
    }
  }

  async switchDevice(kind) {
    if (this.ff.published().has(kind)) await this.publish({ [kind]: true });
  }

  // ---- people and moderation ------------------------------------------------------------

  renderPeople() {
    if (!this.inCall || !this.people) return;
    const ff = this.ff;
    const list = [...ff.participants.values()].filter((p) => p.user !== ff.user && (p.present || p.tracks.size));
    const mod = this.perms.can_moderate;
    fill(this.people, h("h4", `People (${list.length + 1})`),
      h("ul", h("li.person", h("b", ff.name), " (you)", ff.published().size ? " · presenting" : " · watching"),
        list.map((p) => h("li.person", { dataset: { user: p.user } },
          h("b", p.name), p.tracks.size ? " · presenting" : " · watching",
          p.handRaised && h("span.hand", { title: "Hand raised" }, " ✋"),
          mod && (p.tracks.size
            ? h("button.small", { dataset: { action: "stop-present", user: p.user }, onclick: () => this.setPresent(p.user, false) }, "Stop presenting")
            : h("button.small", { dataset: { action: "allow-present", user: p.user }, onclick: () => this.setPresent(p.user, true) }, "Allow to present"))))));
  }

  async setPresent(user, allow) {
    try {
      await this.ff.api("PATCH", `/v1/groups/${encodeURIComponent(this.group.id)}/members/${encodeURIComponent(user)}`,
        { permissions: { can_publish: allow } });
      toast(allow ? `${user} may now present.` : `${user} no longer presents.`);
    } catch (e) {
      toast(e.status === 404 ? `${user} is not a member of this group, so their permissions cannot change.` : sentence(e), "error");
    }
  }

  async moderate(action, user) {
    const base = `/v1/groups/${encodeURIComponent(this.group.id)}/call/participants/${encodeURIComponent(user)}`;
    try {
      if (action === "mute") await this.ff.api("POST", base + "/mute", { source: "microphone" });
      else await this.ff.api("DELETE", base);
      toast(action === "mute" ? `Muted ${user}.` : `Took ${user} out of the call.`);
    } catch (e) {
      toast(sentence(e), "error");
    }
  }

  /** For tests and diagnostics: what each remote tile is playing. */
  async debugStats() {
    const out = {};
    for (const [key, tile] of this.tiles) {
      const user = tile.el.dataset.user;
      const s = user === this.ff.user ? {} : await this.ff.stats(user);
      out[key] = { videoWidth: tile.video.videoWidth, currentTime: tile.video.currentTime, ...s };
    }
    return out;
  }

  destroy() {
    for (const off of this.offs.splice(0)) off();
    for (const t of this.timers.splice(0)) clearInterval(t);
    if (this.inCall) {
      for (const kind of this.ff.published().keys()) this.ff.unpublish(kind);
      for (const p of this.ff.participants.keys()) this.ff.unsubscribe(p);
    }
  }
}

function mutedSource(p, source) {
  return !!p && [...p.tracks.values()].some((t) => t.source === source && t.muted);
}

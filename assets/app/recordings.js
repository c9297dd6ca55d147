// app/recordings.js — the recordings tab: the group's recordings and uploads
// (GET /v1/groups/{gid}/recordings), playing one with hls.js (vendored in /vendor), starting and
// stopping a call recording, deleting, and uploading a video with a progress bar.
// The recording endpoints may be missing on an older server: 404/501 become a sentence.

import { h, fill, sentence, toast } from "./dom.js";

let hlsLoading = null;
function loadHls() {
  if (window.Hls) return Promise.resolve(window.Hls);
  hlsLoading ||= new Promise((resolve, reject) => {
    const s = h("script", { src: "/vendor/hls.min.js" });
    s.onload = () => resolve(window.Hls);
    s.onerror = () => reject(new Error("The video player (hls.js) could not be loaded."));
    document.head.append(s);
  });
  return hlsLoading;
}

let poll = null;
let player = null;

function unavailable(e) {
  return e.status === 404 && e.code === "not_found" || e.status === 501 || e.status === 405;
}

export async function renderRecordings(root, ff, group) {
  clearTimeout(poll);
  const gpath = `/v1/groups/${encodeURIComponent(group.id)}`;
  const perms = ff.permissions || {};
  const list = h("ul.recordings#recordings-list");
  const err = h("p.error", { role: "alert" });
  const video = h("video#recording-player", { controls: true, playsInline: true });
  const playing = h("p.muted#now-playing", "Pick a recording to play it.");
  const progress = h("progress#upload-progress", { max: 100, value: 0, hidden: true });
  const uploadNote = h("span.muted");
  const file = h("input#upload-file", { type: "file", accept: "video/mp4" });
  const upload = perms.can_publish && h("form.inline#upload-form", {
    onsubmit: (e) => {
      e.preventDefault();
      if (!file.files[0]) { uploadNote.textContent = "Choose an MP4 file first."; return; }
      uploadFile(ff, gpath, file.files[0], progress, uploadNote, () => renderRecordings(root, ff, group));
    },
  }, h("b", "Upload a video "), file, h("button", { type: "submit" }, "Upload"), progress, uploadNote);
  const recordBtn = perms.can_moderate && h("button#record-start", {
    onclick: async () => {
      try {
        const r = await ff.api("POST", `${gpath}/recordings`, {});
        toast(`Recording started (${r.id}).`);
        renderRecordings(root, ff, group);
      } catch (e) { err.textContent = unavailable(e) ? "This server cannot record calls yet." : sentence(e); }
    },
  }, "● Record the call");

  fill(root, h("section.recordings-view",
    h("div.rec-head", h("h2", "Recordings"), h("span.spacer"), recordBtn || ""),
    err,
    h("div.rec-body", h("div.rec-list", list), h("div.rec-player", video, playing)),
    upload || h("p.muted", "Uploading needs can_publish.")));

  if (!perms.can_playback) {
    fill(list, h("li.muted", "You may not watch recordings in this group (can_playback is off)."));
    return;
  }
  let items;
  try {
    const body = await ff.api("GET", `${gpath}/recordings`);
    items = Array.isArray(body) ? body : body.recordings || body.items || [];
  } catch (e) {
    fill(list, h("li.muted", unavailable(e) ? "Recordings are not available on this server yet." : sentence(e)));
    return;
  }
  if (!items.length) fill(list, h("li.muted", "No recordings or uploads yet."));
  items.sort((a, b) => String(b.started_at || "").localeCompare(String(a.started_at || "")));
  for (const r of items) {
    const ready = !["recording", "processing", "uploading", "failed"].includes(r.status);
    list.append(h("li.rec", { dataset: { id: r.id, status: r.status } },
      h("div", h("b", r.name || (r.kind === "upload" ? "Upload" : r.kind === "ingest" ? "Camera" : "Call recording")),
        " ", h("span.badge.status-" + r.status, r.status)),
      h("div.muted", [r.started_at && new Date(r.started_at).toLocaleString(), r.duration_s != null && fmtDuration(r.duration_s)].filter(Boolean).join(" · ")),
      h("div.rec-actions",
        h("button.small.primary", { disabled: !ready, dataset: { action: "play", id: r.id }, onclick: () => play(ff, r, video, playing) }, "▶ Play"),
        r.status === "recording" && perms.can_moderate && h("button.small", {
          onclick: async () => { try { await ff.api("POST", `/v1/recordings/${encodeURIComponent(r.id)}/stop`); renderRecordings(root, ff, group); } catch (e) { err.textContent = sentence(e); } },
        }, "■ Stop"),
        perms.can_moderate && h("button.small.danger", {
          onclick: async () => {
            if (!confirm("Delete this recording?")) return;
            try { await ff.api("DELETE", `/v1/recordings/${encodeURIComponent(r.id)}`); renderRecordings(root, ff, group); } catch (e) { err.textContent = sentence(e); }
          },
        }, "Delete"))));
  }
  // Keep statuses fresh while something is being recorded or processed.
  if (items.some((r) => ["recording", "processing", "uploading"].includes(r.status)) && root.isConnected) {
    poll = setTimeout(() => root.isConnected && location.hash.endsWith("/recordings") && renderRecordings(root, ff, group), 3000);
  }
}

function fmtDuration(s) {
  s = Math.round(s);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function play(ff, r, video, note) {
  const url = `${ff.url}/v1/recordings/${encodeURIComponent(r.id)}/index.m3u8?token=${encodeURIComponent(ff.token)}`;
  note.textContent = "Loading…";
  if (player) { player.destroy(); player = null; }
  try {
    if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = url;
    } else {
      const Hls = await loadHls();
      if (!Hls.isSupported()) throw new Error("This browser cannot play HLS video.");
      player = new Hls();
      player.on(Hls.Events.ERROR, (_, data) => {
        if (data.fatal) note.textContent = `The recording cannot be played (${data.details}${data.response?.code ? ", HTTP " + data.response.code : ""}).`;
      });
      // play() before the media source is attached may be refused: start once the playlist is in.
      player.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
      player.loadSource(url);
      player.attachMedia(video);
    }
    video.dataset.recording = r.id;
    video.muted = true; // autoplay is allowed muted; the controls unmute
    video.autoplay = true;
    await video.play().catch(() => {});
    note.textContent = `Playing ${r.name || r.id}.`;
  } catch (e) {
    note.textContent = sentence(e);
  }
}

function uploadFile(ff, gpath, file, progress, note, done) {
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `${ff.url}${gpath}/media`);
  xhr.setRequestHeader("Authorization", "Bearer " + ff.token);
  xhr.setRequestHeader("Content-Type", "video/mp4");
  progress.hidden = false;
  progress.value = 0;
  note.textContent = "Uploading…";
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      progress.value = Math.round((e.loaded / e.total) * 100);
      note.textContent = `${progress.value}%`;
    }
  };
  xhr.onerror = () => { note.textContent = "The upload failed: the server cannot be reached."; };
  xhr.onload = () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status === 201 || xhr.status === 200 || xhr.status === 202) {
      note.textContent = `Uploaded; ${body && body.status ? body.status : "processing"}.`;
      toast("Upload received; it will be listed when processed.");
      done();
    } else if (xhr.status === 404 || xhr.status === 501) {
      note.textContent = "This server does not accept uploads yet.";
    } else {
      note.textContent = "The upload failed: " + ((body && body.error && body.error.message) || `HTTP ${xhr.status}`);
    }
  };
  xhr.send(file);
}

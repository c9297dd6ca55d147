// app/main.js — boots the web app: sign-in, connecting the Fanfare client, the page shell
// (top bar, group sidebar, footer), hash routing (#/g/<group>/<tab>), and the group page that
// holds the tabs (call, members, recordings) beside the chat.

import { Fanfare } from "../fanfare.js";
import { h, fill, sentence, banner, toast } from "./dom.js";
import { storedToken, signOut, renderSignIn } from "./session.js";
import { renderGroups } from "./groups.js";
import { renderStatus } from "./status.js";
import { CallView } from "./call.js";
import { ChatPanel } from "./chat.js";
import { renderMembers } from "./members.js";
import { renderRecordings } from "./recordings.js";

const app = {
  ff: null,
  group: null, // GET /v1/groups/{gid} of the open group
  call: null, // the CallView while the call tab is open
  chat: null,
  cleanup: [],
};
window.fanfareApp = app; // for the browser tests and the curious

const $ = (id) => document.getElementById(id);

function shell() {
  fill(document.body,
    h("header.topbar",
      h("a.brand", { href: "#/" }, h("span.logo", "◉"), "Fanfare"),
      h("span#group-title"),
      h("span.spacer"),
      h("span#conn.pill", ""),
      h("span#who"),
      h("button.ghost#signout", { onclick: () => { signOut(); location.hash = ""; location.reload(); } }, "Sign out")),
    h("div#banner.banner", { hidden: true, role: "alert" }),
    h("div.layout", h("aside#sidebar"), h("main#main")),
    h("footer#status.status"));
  renderStatus($("status"));
}

function route() {
  const m = /^#\/g\/([^/]+)(?:\/(\w+))?/.exec(location.hash);
  return m ? { gid: decodeURIComponent(m[1]), tab: m[2] || "call" } : { gid: null, tab: null };
}

async function boot(problem) {
  const token = storedToken();
  if (!token) {
    fill(document.body, h("main#main.center"), h("footer#status.status"));
    renderStatus($("status"));
    renderSignIn($("main"), () => boot(), problem);
    return;
  }
  shell();
  fill($("main"), h("p.muted.center-text", "Connecting…"));
  try {
    app.ff = await Fanfare.connect({ token });
  } catch (e) {
    if (e.status === 401) {
      signOut();
      return boot(sentence(e));
    }
    banner(sentence(e) + " Retrying in 3 s…", "bad");
    setTimeout(() => boot(), 3000);
    return;
  }
  const ff = app.ff;
  $("who").textContent = ff.name + (ff.name !== ff.user ? ` (${ff.user})` : "");
  ff.on("connection", ({ state, attempt, retryInMs, error }) => {
    const pill = $("conn");
    pill.className = "pill " + state;
    pill.textContent = state === "open" ? "online" : state;
    if (state === "reconnecting") {
      banner(`The server is gone; reconnecting (attempt ${attempt}, next try in ${Math.round(retryInMs / 1000)} s)…`, "warn");
    } else if (state === "open") {
      banner(null);
      toast("Reconnected.");
      openRoute();
    } else if (state === "closed" && error) {
      signOut();
      boot(sentence(error));
    }
  });
  ff.on("left", ({ group, reason }) => {
    if (reason === "removed") toast(`You were removed from ${group}.`, "error");
    if (reason === "group_deleted") toast(`The group ${group} was deleted.`, "error");
    if (reason !== "left") { location.hash = "#/"; }
  });
  ff.on("error", (e) => toast(sentence(e), "error"));
  $("conn").className = "pill open";
  $("conn").textContent = "online";
  window.addEventListener("hashchange", openRoute);
  openRoute();
}

function teardown() {
  for (const f of app.cleanup.splice(0)) { try { f(); } catch (_) { /* ignore */ } }
  if (app.call) { app.call.destroy(); app.call = null; }
  if (app.chat) { app.chat.destroy(); app.chat = null; }
}

let routing = 0;
async function openRoute() {
  const ff = app.ff;
  const { gid, tab } = route();
  const mine = ++routing;
  renderGroups($("sidebar"), ff, gid, (id) => { location.hash = `#/g/${encodeURIComponent(id)}/call`; });
  if (!gid) {
    teardown();
    if (ff.group) await ff.leave();
    app.group = null;
    $("group-title").textContent = "";
    fill($("main"), h("section.welcome",
      h("h1", `Hello, ${ff.name}`),
      h("p", "Pick a group on the left, create one, or open one by id. In a group you can chat, start or join its call, share your screen, manage members and watch recordings.")));
    return;
  }
  // Same group, another tab: keep the room and the chat.
  if (app.group && app.group.id === gid && ff.group === gid) {
    renderTab(tab);
    return;
  }
  teardown();
  fill($("main"), h("p.muted.center-text", "Opening the group…"));
  let group;
  try {
    group = await ff.api("GET", `/v1/groups/${encodeURIComponent(gid)}`);
    await ff.join(gid);
  } catch (e) {
    if (mine !== routing) return;
    const text = e.status === 404 ? `There is no group “${gid}”.` :
      e.status === 403 || e.code === "forbidden" ? `You are not a member of “${gid}”, and it is closed to guests.` : sentence(e);
    fill($("main"), h("section.welcome", h("h2", "Cannot open this group"), h("p.error", text)));
    return;
  }
  if (mine !== routing) return;
  app.group = group;
  $("group-title").textContent = group.name;
  fill($("main"), h("div.group-page",
    h("section.group-main",
      h("nav.tabs#tabs"),
      h("div#tab-body.tab-body")),
    h("aside#chat.chat-panel")));
  app.chat = new ChatPanel($("chat"), ff, group);
  app.cleanup.push(ff.on("permissions_changed", ({ permissions }) => {
    app.group.permissions = permissions;
    renderTabs(route().tab);
    app.chat.setPermissions(permissions);
  }));
  renderTab(tab);
}

function renderTabs(current) {
  const g = app.group;
  const tabs = [["call", "Call"], ["members", "Members"], ["recordings", "Recordings"]];
  fill($("tabs"), tabs.map(([id, label]) =>
    h("a" + (id === current ? ".active" : ""), { href: `#/g/${encodeURIComponent(g.id)}/${id}`, dataset: { tab: id } }, label)),
  h("span.spacer"),
  h("span.perm-summary", { title: "your effective permissions" }, g.role ? `${g.role}` : "guest"));
}

function renderTab(tab) {
  const body = $("tab-body");
  renderTabs(tab);
  if (tab !== "call" && app.call) { app.call.destroy(); app.call = null; }
  if (tab === "call") {
    if (!app.call) app.call = new CallView(body, app.ff, app.group);
  } else if (tab === "members") {
    renderMembers(body, app.ff, app.group);
  } else if (tab === "recordings") {
    renderRecordings(body, app.ff, app.group);
  }
}

window.addEventListener("unhandledrejection", (e) => toast(sentence(e.reason), "error"));
boot();

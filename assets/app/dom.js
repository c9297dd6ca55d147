// app/dom.js — tiny DOM helpers shared by every view: element builder, notices (toasts and the
// sticky connection banner), and turning any error into a sentence.

/** h("div.card#id", {onclick, dataset, ...attrs}, ...children) -> HTMLElement. */
export function h(spec, attrs, ...children) {
  if (attrs instanceof Node || typeof attrs === "string" || Array.isArray(attrs) || attrs == null) {
    if (attrs != null) children.unshift(attrs);
    attrs = {};
  }
  const [, tag = "div", rest = ""] = /^([a-z0-9-]*)(.*)$/i.exec(spec);
  const el = document.createElement(tag || "div");
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A sentence for anything thrown. */
export function sentence(e) {
  if (!e) return "Something went wrong.";
  if (e.code === "token_expired") return "Your sign-in has expired; sign in again.";
  if (e.status === 401) return "Your token was not accepted (" + e.message + "). Sign in again.";
  if (e.status === 403) return "You do not have permission for that: " + e.message;
  return e.message || String(e);
}

/** Shows a short-lived notice at the bottom right. */
export function toast(text, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) document.body.append((box = h("div#toasts", { role: "status", "aria-live": "polite" })));
  const t = h("div.toast." + kind, text);
  box.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

/** The sticky banner under the top bar (connection problems); `null` hides it. */
export function banner(text, kind = "warn") {
  const el = document.getElementById("banner");
  if (!el) return;
  el.hidden = !text;
  el.className = "banner " + kind;
  el.textContent = text || "";
}

/** Formats an RFC 3339 time as a short local time. */
export function clock(ts) {
  const d = new Date(ts);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Initials for an avatar. */
export function initials(name) {
  return (name || "?").split(/[\s._-]+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("") || "?";
}

// app/session.js — who is signed in: the token kept in localStorage, development sign-in by
// name (POST /v1/dev/token), pasting a token, signing out. Also the sign-in screen.

import { tokenClaims } from "../fanfare.js";
import { h, fill, sentence } from "./dom.js";

const KEY = "fanfare.token";

export function storedToken() {
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl) {
    localStorage.setItem(KEY, fromUrl);
    history.replaceState(null, "", location.pathname + location.hash);
    return fromUrl;
  }
  const t = localStorage.getItem(KEY);
  const c = t && tokenClaims(t);
  if (c && c.exp && c.exp * 1000 < Date.now()) {
    localStorage.removeItem(KEY);
    return null;
  }
  return t;
}

export function saveToken(token) {
  localStorage.setItem(KEY, token);
}

export function signOut() {
  localStorage.removeItem(KEY);
}

/** Asks the server for a development token; rejects with a sentence when it is off. */
async function devToken(user, name) {
  let res;
  try {
    res = await fetch("/v1/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(name ? { user, name } : { user }),
    });
  } catch (_) {
    throw new Error("The server cannot be reached.");
  }
  const body = await res.json().catch(() => null);
  if (res.status === 404) {
    throw new Error("This server does not hand out development tokens; paste a token instead.");
  }
  if (!res.ok) throw new Error((body && body.error && body.error.message) || `The server answered ${res.status}.`);
  return body.token;
}

/** Renders the sign-in screen into `root`; calls `done(token)` once signed in. */
export function renderSignIn(root, done, problem) {
  const err = h("p.error", { role: "alert" }, problem || "");
  const user = h("input#signin-user", { placeholder: "user id, e.g. alice", required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}", autocomplete: "username" });
  const name = h("input#signin-name", { placeholder: "display name (optional)" });
  const token = h("textarea#signin-token", { placeholder: "eyJhbGciOi…", rows: 3 });
  const devForm = h("form.card", {
    onsubmit: async (e) => {
      e.preventDefault();
      err.textContent = "";
      try {
        const t = await devToken(user.value.trim(), name.value.trim());
        saveToken(t);
        done(t);
      } catch (x) {
        err.textContent = sentence(x);
      }
    },
  },
  h("h2", "Sign in by name"),
  h("p.muted", "On a development server you can pick any user id."),
  h("label", "User id", user), h("label", "Name", name),
  h("button.primary#signin-go", { type: "submit" }, "Sign in"));
  const pasteForm = h("form.card", {
    onsubmit: (e) => {
      e.preventDefault();
      const t = token.value.trim();
      if (!tokenClaims(t)) {
        err.textContent = "That does not look like a token (a JWT has three parts separated by dots).";
        return;
      }
      saveToken(t);
      done(t);
    },
  },
  h("h2", "Paste a token"),
  h("p.muted", "From your backend, ", h("code", "fanfare token --user alice"), " or ", h("code", "POST /v1/tokens"), "."),
  token,
  h("button", { type: "submit" }, "Use this token"));
  fill(root, h("section.signin", h("h1", "Welcome to Fanfare"), err, h("div.signin-forms", devForm, pasteForm)));
  user.focus();
}

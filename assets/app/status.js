// app/status.js — the small server health line in the footer (GET /readyz), kept from the old
// status page, with links to the API description and metrics.

import { h, fill } from "./dom.js";

export async function renderStatus(root) {
  const dot = h("span.dot");
  const text = h("span", "checking…");
  fill(root, dot, text, " · ", h("a", { href: "/v1/openapi.json" }, "API"), " · ",
    h("a", { href: "/metrics" }, "metrics"));
  const check = async () => {
    try {
      const r = await fetch("/readyz");
      const b = await r.json().catch(() => ({}));
      dot.className = "dot " + (r.ok ? "ok" : "bad");
      text.textContent = r.ok ? "server ready" : (b.error && b.error.message) || "server not ready";
    } catch (_) {
      dot.className = "dot bad";
      text.textContent = "server unreachable";
    }
  };
  await check();
  setInterval(check, 15000);
}

// app/groups.js — the sidebar: the caller's groups (GET /v1/groups), creating a group, and
// opening a group by id (how guests reach an open group they are not a member of).

import { h, fill, sentence, toast } from "./dom.js";

const GUEST_WATCH = { can_send: false, can_receive: true, can_publish: false, can_subscribe: true,
  can_list: true, can_playback: true, can_moderate: false };

/** Renders the group list into `root`; `open(gid)` navigates. */
export async function renderGroups(root, ff, current, open) {
  const list = h("ul.group-list");
  const err = h("p.error");
  const name = h("input", { placeholder: "New group name", required: true, maxlength: 200 });
  const guests = h("input", { type: "checkbox" });
  const byId = h("input", { placeholder: "Group id", pattern: "[A-Za-z0-9_.\\-]{1,64}", required: true });
  fill(root,
    h("h3", "Groups"), list, err,
    h("form.stack#create-group", {
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const body = { name: name.value.trim() };
          if (guests.checked) body.settings = { guests: GUEST_WATCH };
          const g = await ff.api("POST", "/v1/groups", body);
          name.value = "";
          toast(`Created ${g.name}.`);
          open(g.id);
        } catch (x) { err.textContent = sentence(x); }
      },
    }, h("h4", "New group"), name,
    h("label.check", guests, "Guests may watch"),
    h("button", { type: "submit" }, "Create")),
    h("form.stack#open-group", {
      onsubmit: (e) => { e.preventDefault(); open(byId.value.trim()); },
    }, h("h4", "Open by id"), byId, h("button", { type: "submit" }, "Open")));
  try {
    const { groups } = await ff.api("GET", "/v1/groups");
    if (!groups.length) list.append(h("li.muted", "No groups yet: create one below."));
    for (const g of groups.sort((a, b) => a.name.localeCompare(b.name))) {
      list.append(h("li", h("a" + (g.id === current ? ".active" : ""), {
        href: `#/g/${encodeURIComponent(g.id)}/call`, dataset: { group: g.id },
      }, h("span.gname", g.name), h("span.role", g.role || "guest"))));
    }
  } catch (x) {
    err.textContent = sentence(x);
  }
}

// app/members.js — the members tab: who belongs to the group, their roles, and the seven
// permissions as toggles (editable with can_moderate; owners and admins have them all), adding
// and removing members, and the group's defaults for members and guests.

import { h, fill, sentence, toast } from "./dom.js";

export const PERMS = ["can_send", "can_receive", "can_publish", "can_subscribe", "can_list", "can_playback", "can_moderate"];
const LABELS = { can_send: "send", can_receive: "read", can_publish: "present", can_subscribe: "watch",
  can_list: "see call", can_playback: "recordings", can_moderate: "moderate" };

export async function renderMembers(root, ff, group) {
  const gpath = `/v1/groups/${encodeURIComponent(group.id)}`;
  const mod = !!ff.permissions?.can_moderate;
  const boss = group.role === "owner" || group.role === "admin";
  const err = h("p.error", { role: "alert" });
  fill(root, h("section.members", h("h2", "Members"), err, h("p.muted", "Loading…")));
  let members;
  let g;
  try {
    [{ members }, g] = await Promise.all([ff.api("GET", `${gpath}/members`), ff.api("GET", gpath)]);
  } catch (e) {
    fill(root, h("section.members", h("h2", "Members"),
      h("p.error", e.status === 403 ? "Only members can see who belongs to this group." : sentence(e))));
    return;
  }
  const reload = () => renderMembers(root, ff, group);
  const act = async (fn, done) => {
    try { await fn(); if (done) toast(done); reload(); } catch (e) { err.textContent = sentence(e); }
  };

  const header = h("tr", h("th", "User"), h("th", "Role"), PERMS.map((p) => h("th", { title: p }, LABELS[p])), h("th"));
  const rows = members.map((m) => {
    const implied = m.role !== "member";
    const role = h("select", { disabled: !mod || (!boss && implied), dataset: { user: m.user, field: "role" },
      onchange: (e) => act(() => ff.api("PATCH", `${gpath}/members/${encodeURIComponent(m.user)}`, { role: e.target.value }), `${m.user} is now ${e.target.value}.`) },
    ["owner", "admin", "member"].map((r) => h("option", { value: r, selected: r === m.role }, r)));
    const toggles = PERMS.map((p) => {
      const overridden = m.permissions && m.permissions[p] !== undefined;
      return h("td", h("input.toggle", {
        type: "checkbox", checked: !!m.effective[p], disabled: !mod || implied,
        title: implied ? `${m.role}s have every permission` : overridden ? `${p} (set for this member)` : `${p} (group default)`,
        dataset: { user: m.user, perm: p, overridden: overridden ? "yes" : "no" },
        onchange: (e) => act(() => ff.api("PATCH", `${gpath}/members/${encodeURIComponent(m.user)}`, { permissions: { [p]: e.target.checked } })),
      }));
    });
    const remove = (mod || m.user === ff.user) && h("button.small.danger", {
      dataset: { action: "remove-member", user: m.user },
      onclick: () => confirm(m.user === ff.user ? "Leave this group?" : `Remove ${m.user} from the group?`) &&
        act(() => ff.api("DELETE", `${gpath}/members/${encodeURIComponent(m.user)}`), `${m.user} removed.`),
    }, m.user === ff.user ? "Leave" : "Remove");
    return h("tr", { dataset: { user: m.user } }, h("td", h("b", m.user), m.user === ff.user ? " (you)" : ""), h("td", role), toggles, h("td", remove || ""));
  });

  const newUser = h("input", { placeholder: "user id", required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}" });
  const newRole = h("select", ["member", "admin", "owner"].map((r) => h("option", { value: r }, r)));
  const add = mod && h("form.inline#add-member", {
    onsubmit: (e) => {
      e.preventDefault();
      const user = newUser.value.trim();
      act(() => ff.api("PUT", `${gpath}/members/${encodeURIComponent(user)}`, { role: newRole.value }), `${user} added.`);
    },
  }, h("b", "Add a member "), newUser, newRole, h("button", { type: "submit" }, "Add"));

  fill(root, h("section.members",
    h("h2", "Members"), err,
    !mod && h("p.muted", "You can see the members; changing them needs can_moderate."),
    h("div.table-wrap", h("table.perm-table#members-table", h("thead", header), h("tbody", rows))),
    add,
    defaults(g, mod, (patch, done) => act(() => ff.api("PATCH", gpath, { settings: patch }), done))));
}

/** The group's defaults: what every member gets, and whether (and how) guests may come in. */
function defaults(g, mod, patch) {
  const s = g.settings || {};
  const row = (label, who, perms) => h("tr", h("th", label), PERMS.map((p) => h("td", h("input.toggle", {
    type: "checkbox", checked: !!(perms && perms[p]), disabled: !mod || (who === "guests" && !perms),
    dataset: { defaults: who, perm: p },
    onchange: (e) => patch({ [who]: { [p]: e.target.checked } }),
  }))));
  const open = !!s.guests;
  return h("section.defaults",
    h("h3", "Group defaults"),
    h("div.table-wrap", h("table.perm-table",
      h("thead", h("tr", h("th"), PERMS.map((p) => h("th", { title: p }, LABELS[p])))),
      h("tbody", row("Members", "members", s.members), row("Guests", "guests", s.guests)))),
    h("label.check", h("input", {
      type: "checkbox", checked: open, disabled: !mod, id: "guests-open",
      onchange: (e) => patch({ guests: e.target.checked ? { can_receive: true, can_subscribe: true, can_list: true, can_playback: true } : null },
        e.target.checked ? "Guests may now watch and read." : "The group is closed to guests."),
    }), "Open to guests (anyone signed in who has the group id)"));
}

// app/chat.js — the chat panel beside every group page: history (GET .../messages), live
// messages from the socket, sending (socket send_message), and what to say when the caller
// may not read or send.

import { h, fill, sentence, clock } from "./dom.js";

export class ChatPanel {
  constructor(root, ff, group) {
    this.root = root;
    this.ff = ff;
    this.group = group;
    this.list = h("ol.messages#messages", { "aria-live": "polite" });
    this.note = h("p.muted.chat-note");
    this.input = h("input#chat-input", { placeholder: "Message the group…", maxlength: 4000, autocomplete: "off" });
    this.form = h("form.chat-form#chat-form", { onsubmit: (e) => this.submit(e) },
      this.input, h("button.primary", { type: "submit" }, "Send"));
    fill(root, h("h3", "Chat"), this.list, this.note, this.form);
    this.off = ff.on("message", (m) => this.add(m));
    this.setPermissions(group.permissions || ff.permissions || {});
    this.load();
  }

  setPermissions(p) {
    this.perms = p;
    this.form.hidden = !p.can_send;
    this.note.textContent = !p.can_receive ? "You may not read this group's messages." :
      !p.can_send ? "You can read this chat but not write in it." : "";
    if (!p.can_receive) this.list.replaceChildren();
  }

  async load() {
    if (!this.perms.can_receive) return;
    try {
      const messages = await this.ff.history({ group: this.group.id });
      this.list.replaceChildren();
      if (!messages.length) this.list.append(h("li.muted.empty", "No messages yet."));
      for (const m of messages) this.add(m, false);
      this.scroll();
    } catch (e) {
      this.note.textContent = sentence(e);
    }
  }

  add(m, scroll = true) {
    if (this.list.querySelector(`[data-id="${CSS.escape(m.id)}"]`)) return;
    this.list.querySelector(".empty")?.remove();
    const who = this.ff.participants.get(m.from)?.name || m.from;
    const mine = m.from === this.ff.user;
    this.list.append(h("li.msg" + (mine ? ".mine" : ""), { dataset: { id: m.id, from: m.from } },
      h("div.meta", h("b", mine ? "You" : who), " ", h("time", clock(m.ts))),
      h("div.text", m.text)));
    if (scroll) this.scroll();
  }

  scroll() {
    this.list.scrollTop = this.list.scrollHeight;
  }

  async submit(e) {
    e.preventDefault();
    const text = this.input.value.trim();
    if (!text) return;
    this.input.disabled = true;
    try {
      const m = await this.ff.send(text);
      this.add(m);
      this.input.value = "";
      this.note.textContent = "";
    } catch (x) {
      this.note.textContent = "Not sent: " + sentence(x);
    } finally {
      this.input.disabled = false;
      this.input.focus();
    }
  }

  destroy() {
    this.off();
  }
}

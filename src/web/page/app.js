// screenpop agent page: signs in over the push WebSocket (docs/protocol.md), shows one card
// per call at the agent's extensions, and keeps a small call journal (notes, dispositions,
// recent calls) through the REST API.
//
// Rules this file keeps:
// - Every piece of data from the server is put in the page with textContent or as an
//   attribute value; never as HTML. (The CSP forbids inline script as a second fence.)
// - Messages are applied by call_id, idempotently: a snapshot after a reconnect and the
//   messages after it may repeat each other.
// - The token lives in sessionStorage only: it is gone when the tab closes.
"use strict";

(() => {
  const TOKEN_KEY = "screenpop.token";
  const ASKED_KEY = "screenpop.alerts-asked";
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const MAX_NOTE = 4000;

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  };

  // ---- state ----------------------------------------------------------------------------
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    ws: null,
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    lastHeard: 0,
    heartbeatMs: 15000,
    agent: null,
    page: { crm_url: null, dispositions: [], ring_sound: false },
    cards: new Map(), // call_id → card
    audio: null,
    ringTimer: null,
    recentTimer: null,
    // A cluster's nodes (`ready.nodes`: their page addresses). When the connection drops, each
    // reconnect attempt goes to the next one, so the page finds a node that is up; -1 is the
    // node that served the page.
    nodes: [],
    nodeIndex: -1,
    callbacks: new Map(), // id → callback entry (open or claimed)
    found: new Map(), // customer id → the last search's hit
    searchTimer: null,
    searchSeq: 0,
  };

  // ---- phone numbers ----------------------------------------------------------------------
  // Country calling codes of one and two digits; the rest have three (ITU-T E.164 list).
  const CC2 = new Set(("20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 " +
    "57 58 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98").split(" "));

  // National significant numbers in readable groups, by length (3-3-4 for ten digits…).
  const GROUPS = { 5: [5], 6: [3, 3], 7: [3, 4], 8: [4, 4], 9: [3, 3, 3], 10: [3, 3, 4], 11: [3, 4, 4], 12: [4, 4, 4] };
  function group(digits) {
    const sizes = GROUPS[digits.length];
    if (!sizes) return digits.length <= 4 ? digits : digits.replace(/(\d{4})(?=\d)/g, "$1 ");
    const out = [];
    let i = 0;
    for (const size of sizes) {
      out.push(digits.slice(i, i + size));
      i += size;
    }
    return out.join(" ");
  }

  function formatNumber(raw) {
    if (!raw) return "";
    const m = /^\+(\d{7,15})$/.exec(raw.replace(/[\s().-]/g, ""));
    if (!m) return raw;
    const d = m[1];
    if (d[0] === "1" && d.length === 11) {
      return "+1 " + d.slice(1, 4) + " " + d.slice(4, 7) + " " + d.slice(7); // NANP 3-3-4
    }
    const ccLen = d[0] === "7" ? 1 : CC2.has(d.slice(0, 2)) ? 2 : 3;
    return "+" + d.slice(0, ccLen) + " " + group(d.slice(ccLen));
  }

  // ---- small formatters -------------------------------------------------------------------
  function money(amount, currency) {
    if (typeof amount !== "number") return amount === null || amount === undefined ? "—" : String(amount);
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "USD" }).format(amount);
    } catch (_) {
      return amount.toFixed(2) + (currency ? " " + currency : "");
    }
  }
  const clock = (iso) => {
    const t = new Date(iso);
    return isNaN(t) ? "" : t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  };
  const shortDate = (iso) => {
    const t = new Date(iso);
    if (isNaN(t)) return "";
    const today = new Date().toDateString() === t.toDateString();
    return today ? t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : t.toLocaleDateString([], { month: "short", day: "numeric" }) + " " +
        t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  };
  const since = (iso) => {
    const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    const mm = String(Math.floor(s / 60) % 60).padStart(2, "0");
    const ss = String(s % 60).padStart(2, "0");
    return s >= 3600 ? Math.floor(s / 3600) + ":" + mm + ":" + ss : Math.floor(s / 60) + ":" + ss;
  };
  const ageText = (seconds) => seconds < 90 ? Math.round(seconds) + " s" : Math.round(seconds / 60) + " min";
  const REASONS = {
    cancelled: "Caller hung up", completed: "Call ended", answered_elsewhere: "Answered elsewhere",
    timeout: "Not answered", rejected: "Rejected", expired: "No longer tracked", shutdown: "Screenpop restarted",
    answered_unseen: "Answered",
  };
  // What a card's clock shows: time ringing, time in call (counting from the answer), or, when
  // the call's hang-up cannot be seen (a SIP fork target), the time it was answered, still.
  const counting = (card) => card.state === "ringing" || (card.state === "answered" && card.hangupSeen !== false);
  const clockText = (card) => card.state === "ringing" ? since(card.started)
    : card.state === "answered" && card.hangupSeen !== false ? since(card.answeredAt || card.started)
    : card.state === "answered" ? clock(card.answeredAt || card.started)
    : clock(card.started);

  // ---- connection ---------------------------------------------------------------------------
  function setConn(kind, text) {
    $("conn").dataset.state = kind;
    $("conn-text").textContent = text;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (!state.token) return;
    let url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    if (state.nodeIndex >= 0 && state.nodes.length) {
      url = state.nodes[state.nodeIndex % state.nodes.length].replace(/^http/, "ws").replace(/\/+$/, "") + "/ws";
    }
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (_) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    setConn("connecting", state.attempt ? "Reconnecting…" : "Connecting…");
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "auth", token: state.token }));
    });
    ws.addEventListener("message", (event) => {
      if (ws !== state.ws) return;
      state.lastHeard = Date.now();
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      handle(msg);
    });
    ws.addEventListener("close", (event) => {
      if (ws !== state.ws) return;
      state.ws = null;
      clearInterval(state.pingTimer);
      if (event.code === 4401) {
        signOut("That token was refused. Check it and sign in again.");
        return;
      }
      scheduleReconnect();
    });
  }

  // Exponential backoff with equal jitter, capped: a whole floor of agents reconnecting after
  // a daemon restart spreads out instead of arriving at once.
  function scheduleReconnect() {
    if (!state.token) return;
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
    const delay = Math.round(cap / 2 + Math.random() * cap / 2);
    state.attempt = Math.min(state.attempt + 1, 10);
    if (state.nodes.length) state.nodeIndex = (state.nodeIndex + 1) % state.nodes.length;
    setConn("offline", "Offline · retrying in " + Math.max(1, Math.round(delay / 1000)) + " s");
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function startPings() {
    clearInterval(state.pingTimer);
    state.lastHeard = Date.now();
    state.pingTimer = setInterval(() => {
      const ws = state.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      // No message (not even a pong) for two heartbeats: the connection is dead.
      if (Date.now() - state.lastHeard > 2 * state.heartbeatMs + 5000) {
        ws.close(4000, "no pong");
        state.ws = null;
        scheduleReconnect();
        return;
      }
      ws.send(JSON.stringify({ type: "ping" }));
    }, state.heartbeatMs);
  }

  function send(msg) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  // ---- messages ---------------------------------------------------------------------------
  function handle(msg) {
    switch (msg.type) {
      case "ready": return onReady(msg);
      case "snapshot": return onSnapshot(msg);
      case "ringing": return upsertPop(msg, true);
      case "answered": return withCard(msg.call_id, (c) => {
        if (c.state !== "ended") c.state = "answered";
        c.by = msg.by || c.by;
        c.answeredAt = msg.answered_at || c.answeredAt || msg.at;
        c.hangupSeen = !!msg.hangup_seen;
        render(c);
      });
      case "ended": return withCard(msg.call_id, (c) => {
        // A call whose hang-up cannot be seen leaves the table after a while: for the agent it
        // stays what it was, answered.
        const unseen = c.state === "answered" && c.hangupSeen === false && msg.reason === "expired";
        c.state = "ended";
        c.reason = unseen ? "answered_unseen" : msg.reason;
        render(c);
        refreshRecentSoon();
      });
      case "section": return withCard(msg.call_id, (c) => { addSection(c, msg); render(c); });
      case "complete": return withCard(msg.call_id, (c) => {
        c.complete = { customer_id: msg.customer_id, missing: msg.missing || [] };
        render(c);
      });
      case "picked": return withCard(msg.call_id, (c) => { choose(c, msg.customer_id); render(c); });
      case "last_contacts": return withCard(msg.call_id, (c) => setContacts(c, msg));
      case "callback": return onCallback(msg.callback);
      case "error": return notify("The daemon said: " + (msg.message || "error"));
      default: return undefined; // pong, dismissed, and types a newer daemon may add
    }
  }

  function onReady(msg) {
    state.attempt = 0;
    state.agent = { id: msg.agent, name: msg.name, extensions: msg.extensions || [] };
    state.heartbeatMs = Math.max(1000, msg.heartbeat_ms || 15000);
    if (msg.page) state.page = msg.page;
    state.nodes = Array.isArray(msg.nodes) ? msg.nodes.filter((n) => /^https?:\/\//.test(n)) : [];
    // This node is the list's first: a dropped connection tries the next one first.
    state.nodeIndex = state.nodes.length ? 0 : -1;
    setConn("live", "Live");
    $("who").hidden = false;
    $("who").textContent = msg.name + " · ext " + (msg.extensions || []).join(", ");
    $("signin").hidden = true;
    $("desk").hidden = false;
    $("signout").hidden = false;
    updateAlertsButton();
    startPings();
    refreshRecent();
  }

  function onSnapshot(msg) {
    state.callbacks = new Map((msg.callbacks || []).map((cb) => [cb.id, cb]));
    renderCallbacks();
    const live = new Set();
    for (const pop of msg.calls || []) {
      live.add(pop.call_id);
      upsertPop(pop, false);
    }
    // Calls that ended while we were away are not in the snapshot: close their cards.
    for (const card of state.cards.values()) {
      if (!live.has(card.id) && card.state !== "ended") {
        card.state = "ended";
        card.reason = null;
        render(card);
      }
    }
    refreshIdle();
  }

  function withCard(id, fn) {
    const card = state.cards.get(id);
    if (card) fn(card);
    refreshIdle();
    updateRinging();
  }

  // A pop: a `ringing` message or a snapshot entry (which adds state, sections, complete).
  function upsertPop(pop, fresh) {
    let card = state.cards.get(pop.call_id);
    const isNew = !card;
    if (isNew) {
      card = {
        id: pop.call_id, extensions: [], sections: new Map(), sectionsFor: null,
        complete: null, picked: null, state: "ringing", by: null, reason: null, dom: null,
      };
      state.cards.set(card.id, card);
    }
    if (!card.extensions.includes(pop.extension)) card.extensions.push(pop.extension);
    card.caller = pop.caller || { number: null, display: null, withheld: false };
    card.dialled = pop.dialled || null;
    card.started = pop.started;
    card.customer = pop.customer || null;
    card.approximate = !!pop.approximate;
    card.matchReason = pop.reason || null;
    card.candidates = pop.candidates || null;
    if (pop.last_contacts) card.lastContacts = contactsMap(pop.last_contacts);
    card.unknown = !!pop.unknown;
    if (pop.state && card.state !== "ended") card.state = pop.state;
    if (pop.state === "ended") card.state = "ended";
    if (pop.by) card.by = pop.by;
    if (pop.answered_at) card.answeredAt = pop.answered_at;
    if (pop.hangup_seen !== undefined) card.hangupSeen = !!pop.hangup_seen;
    for (const section of pop.sections || []) addSection(card, section);
    if (pop.complete === true && !card.complete) {
      // A snapshot says only whether it is complete: what is missing is what is not ok.
      const missing = [...card.sections.values()].filter((x) => x.status !== "ok").map((x) => x.name);
      card.complete = { customer_id: card.sectionsFor, missing };
    }
    render(card);
    refreshIdle();
    updateRinging();
    if (isNew && card.state === "ringing") {
      announce(card);
      if (fresh || document.hidden) alertInBackground(card);
    }
  }

  // When each candidate was last in contact (`last_contacts`): customer id → item.
  function contactsMap(msg) {
    return new Map((Array.isArray(msg.contacts) ? msg.contacts : []).map((c) => [c.customer_id, c]));
  }

  // Arrives after the pop: the candidates' lines are filled in place, so that a button the
  // agent is about to press is not replaced under the pointer.
  function setContacts(card, msg) {
    card.lastContacts = contactsMap(msg);
    if (!card.dom) return;
    for (const line of card.dom.root.querySelectorAll("[data-role=last-contact]")) {
      line.textContent = lastContactText(card, line.dataset.customerId) || "";
    }
  }

  // "Last call 3 days ago · missed"; "No earlier calls"; null while not known.
  function lastContactText(card, customerId) {
    if (!card.lastContacts) return null;
    const c = card.lastContacts.get(customerId);
    if (!c || !c.last_contact) return "No earlier calls";
    const outcome = OUTCOMES[c.outcome];
    return "Last call " + agoText(c.last_contact) + (outcome ? " · " + outcome[0] : "");
  }

  // An agent's sense of "when": "just now", "12 min ago", "5 h ago", "3 days ago".
  function agoText(iso) {
    const t = Date.parse(iso);
    if (isNaN(t)) return "at an unknown time";
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return "just now";
    if (s < 90 * 60) return Math.round(s / 60) + " min ago";
    if (s < 36 * 3600) return Math.round(s / 3600) + " h ago";
    const days = Math.round(s / 86400);
    return days + (days === 1 ? " day ago" : " days ago");
  }

  function addSection(card, section) {
    if (section.customer_id && section.customer_id !== card.sectionsFor) {
      // Sections for another customer (the agent picked one): start over.
      card.sections = new Map();
      card.complete = null;
      card.sectionsFor = section.customer_id;
      if (card.candidates && !card.picked) choose(card, section.customer_id);
    }
    card.sections.set(section.name, section);
  }

  function choose(card, customerId) {
    const chosen = (card.candidates || []).find((c) => c.id === customerId)
      || (state.found.get(customerId) || null);
    if (chosen) card.picked = chosen;
  }

  // ---- cards --------------------------------------------------------------------------------
  function identity(card) {
    if (card.picked) return { name: card.picked.name, customer: card.picked };
    if (card.customer) return { name: card.customer.name, customer: card.customer };
    if (card.caller.withheld) return { name: "Number withheld", customer: null };
    if (card.candidates) return { name: card.candidates.length + " possible customers", customer: null };
    return { name: "Unknown caller", customer: null };
  }

  function crmLink(customer) {
    if (!customer) return null;
    let url = null;
    const template = state.page.crm_url;
    if (template) {
      url = template.replace(/\{(id|account)\}/g, (_, key) => encodeURIComponent(customer[key] || ""));
    } else if (customer.crm_url) {
      url = customer.crm_url;
    }
    if (!url) return null;
    try {
      const parsed = new URL(url, location.href);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  function render(card) {
    if (!card.dom) {
      const title = el("h2", { class: "name", id: "name-" + card.id });
      const dom = {
        root: el("article", { class: "card", "data-call-id": card.id, "aria-labelledby": "name-" + card.id, tabindex: "-1" }),
        head: el("div", { class: "card-head" }),
        title,
        body: el("div", { class: "card-body" }),
        sections: el("div", { class: "sections" }),
        after: el("div", { class: "after" }),
        notes: null,
      };
      dom.root.append(dom.head, title, dom.body, dom.sections, dom.after);
      // Esc dismisses the card from the card or one of its buttons (not from the notes box).
      dom.root.addEventListener("keydown", (e) => {
        if (e.key === "Escape" && (e.target === dom.root || e.target.matches("button, a"))) dismiss(card);
      });
      card.dom = dom;
      $("calls").insertBefore(dom.root, $("idle").nextSibling);
    }
    const { root, head, title, body, sections, after } = card.dom;
    const who = identity(card);
    root.dataset.state = card.state;
    // Ended cards of calls nobody answered fold to their head and name (a click on the name
    // opens one again; the caller is in the call-back list); an answered call stays open for
    // its notes.
    if (card.state === "answered") card.wasAnswered = true;
    if (card.state === "ended" && card.folded === undefined) {
      card.folded = !card.wasAnswered && !card.answeredAt
        && card.reason !== "completed" && card.reason !== "answered_elsewhere";
    }
    root.classList.toggle("folded", card.state === "ended" && card.folded === true);
    if (!title.dataset.toggles) {
      title.dataset.toggles = "1";
      title.addEventListener("click", () => {
        if (card.state !== "ended") return;
        card.folded = !card.folded;
        root.classList.toggle("folded", card.folded);
      });
    }
    root.classList.toggle("approx", card.approximate);

    // Head: state badge, extension, time, dismiss.
    const stateText = card.state === "ringing" ? "Ringing"
      : card.state === "answered" ? (card.by ? "Answered at " + card.by : "Answered")
      : card.reason === "answered_unseen" && card.by ? "Answered at " + card.by
      : (REASONS[card.reason] || "Ended");
    head.replaceChildren(
      el("span", { class: "badge state-" + card.state, "data-role": "state", text: stateText }),
      el("span", { class: "ext", text: "ext " + card.extensions.join(", ") }),
      repeatBadge(card),
      el("time", { class: "when", datetime: card.started || "", "data-started": card.started || "",
        title: card.state === "answered" && card.hangupSeen === false
          ? "Answered at " + clock(card.answeredAt || card.started) + "; screenpop cannot see when this call ends"
          : "Rang at " + clock(card.started),
        "data-counting": counting(card) ? "1" : "0",
        text: clockText(card) }),
      el("button", { type: "button", class: "dismiss", "aria-label": "Dismiss the call from " + who.name,
        title: "Dismiss (Esc)", onclick: () => dismiss(card), text: "×" }),
    );

    title.textContent = who.name;
    const caller = card.caller;
    const number = caller.withheld ? null : formatNumber(caller.e164 || caller.number);
    const lines = [];
    lines.push(el("p", { class: "caller" },
      number ? el("span", { class: "number", "data-role": "number", text: number }) : null,
      caller.display ? el("span", { class: "display", text: caller.display }) : null,
      card.dialled ? el("span", { class: "dialled", text: "dialled " + formatNumber(card.dialled) }) : null));
    const c = who.customer;
    if (c) {
      const facts = [];
      if (c.company && c.company !== c.name) facts.push(c.company);
      if (c.account) facts.push("Account " + c.account);
      if (facts.length) lines.push(el("p", { class: "company", "data-role": "company", text: facts.join(" · ") }));
      if (c.tags && c.tags.length) {
        lines.push(el("ul", { class: "tags", "aria-label": "Tags" }, c.tags.map((t) => el("li", { text: t }))));
      }
    }
    if (card.approximate && !card.picked) {
      lines.push(el("p", { class: "approx-note", "data-role": "approximate" },
        el("strong", { text: "Approximate match: " }), card.matchReason || "number not on file"));
    }
    if (card.picked) {
      lines.push(el("p", { class: "muted small", "data-role": "attached",
        text: card.candidates ? "Picked from " + card.candidates.length + " candidates." : "Attached from a search." }));
    } else if (card.candidates) {
      lines.push(el("fieldset", { class: "candidates" },
        el("legend", { text: "Several customers share this number. Who is calling?" }),
        el("ul", {}, card.candidates.map((cand) => el("li", {},
          el("button", { type: "button", class: "candidate", "data-customer-id": cand.id,
            onclick: () => pick(card, cand) },
          el("span", { class: "cand-name", text: cand.name }),
          cand.company && cand.company !== cand.name ? el("span", { class: "cand-company", text: cand.company }) : null),
          el("span", { class: "reason", text: cand.reason || "" }),
          el("span", { class: "cand-last", "data-role": "last-contact", "data-customer-id": cand.id,
            text: lastContactText(card, cand.id) || "" }))))));
    }
    const link = crmLink(c);
    if (link) {
      lines.push(el("p", { class: "actions" },
        el("a", { class: "button", href: link, target: "_blank", rel: "noopener noreferrer", "data-role": "crm" },
          "Open in CRM", el("span", { class: "sr-only", text: " (opens a new tab)" }))));
    }
    body.replaceChildren(...lines);

    renderSections(card, sections);

    if ((card.state === "answered" || card.state === "ended") && !card.dom.notes) {
      card.dom.notes = noteForm(card.id, null, null);
      after.append(card.dom.notes);
    }
  }

  // "Repeat caller" on the card when its history says the customer already called today.
  function repeatBadge(card) {
    const history = card.sections.get("history");
    const d = history && history.status === "ok" ? history.data : null;
    if (!isObject(d) || d.repeat !== true) return null;
    const n = (Number(d.calls_24h) || 0) + 1;
    return el("span", { class: "badge warn", "data-role": "repeat-badge",
      title: n + " calls from this customer in 24 hours", text: "Repeat caller · " + ordinal(n) + " call" });
  }

  function renderSections(card, box) {
    const list = [...card.sections.values()];
    const nodes = list.map(renderSection);
    if (list.length && !card.complete) {
      nodes.push(el("p", { class: "muted small loading", text: "More of the profile may follow…" }));
    }
    if (card.complete && card.complete.missing && card.complete.missing.length) {
      nodes.push(el("p", { class: "muted small", text: "Not available: " + card.complete.missing.join(", ") }));
    }
    box.replaceChildren(...nodes);
  }

  function badge(section) {
    switch (section.status) {
      case "ok":
        return typeof section.age === "number"
          ? el("span", { class: "badge cached", text: "updated " + ageText(section.age) + " ago" }) : null;
      case "timeout": return el("span", { class: "badge warn", text: "timed out" });
      case "error": return el("span", { class: "badge bad", text: "error" });
      case "skipped": return el("span", { class: "badge muted-badge", text: "skipped" });
      case "forbidden": return el("span", { class: "badge muted-badge", text: "not permitted" });
      default: return el("span", { class: "badge muted-badge", text: String(section.status) });
    }
  }

  // ---- sections: by shape, or as the source's display hints say ---------------------------
  // A section's `display` (docs/protocol.md, `[sources.display]` in the config) may name a
  // view, labels, the columns and their order, formats and what to say when empty. Without
  // it the data's shape decides: an object → labelled fields, a list of objects → a table, a
  // list of scalars → a list, a scalar → text, nothing → "Nothing on file." No section is
  // treated by its name.
  const MAX_ROWS = 10;
  const MAX_FIELDS = 30;
  const MAX_COLUMNS = 8;

  const own = (object, key) => object !== null && typeof object === "object" &&
    Object.prototype.hasOwnProperty.call(object, key);
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const isScalar = (v) => v === null || v === undefined || typeof v !== "object";
  const nothing = (v) => v === null || v === undefined || (Array.isArray(v) && !v.length) ||
    (isObject(v) && !Object.keys(v).length);
  const show = (v) => v === null || v === undefined ? "—"
    : typeof v === "object" ? JSON.stringify(v) : String(v);

  // `credit_limit` → "Credit limit", `overdueDays` → "Overdue days"; words in capitals stay.
  function humanise(key) {
    const words = String(key).replace(/([a-z0-9])([A-Z])/g, "$1 $2").split(/[\s_.-]+/).filter(Boolean)
      .map((w) => w.length > 1 && w === w.toUpperCase() && /[A-Z]/.test(w) ? w : w.toLowerCase());
    const text = words.join(" ");
    return text ? text[0].toUpperCase() + text.slice(1) : String(key);
  }

  function hintsOf(section) {
    const d = isObject(section.display) ? section.display : {};
    const columns = Array.isArray(d.columns) ? d.columns.filter((c) => typeof c === "string") : [];
    return {
      view: typeof d.view === "string" ? d.view : null,
      labels: isObject(d.labels) ? d.labels : {},
      columns: columns.length ? columns : null,
      formats: isObject(d.formats) ? d.formats : {},
      empty: typeof d.empty === "string" && d.empty ? d.empty : "Nothing on file.",
    };
  }
  const label = (hints, key, fallback) => own(hints.labels, key) && typeof hints.labels[key] === "string"
    ? hints.labels[key] : fallback || humanise(key);

  // The views; each answers null when the data does not fit it (then the shape decides).
  const VIEWS = {
    fields: (data, hints) => isObject(data) ? fields(data, hints) : null,
    table: (data, hints) => Array.isArray(data) && data.every(isObject) ? rowsTable(data, hints)
      : isObject(data) ? rowsTable([data], hints) : null,
    list: (data) => Array.isArray(data) ? list(data) : null,
    balance: (data, hints) => isObject(data) ? balance(data, hints) : null,
    credit: (data, hints) => isObject(data) ? credit(data, hints) : null,
    history: (data) => isObject(data) && Array.isArray(data.calls) ? history(data) : null,
    text: (data) => el("p", { class: "value", text: show(data) }),
  };
  function shapeOf(data) {
    if (Array.isArray(data)) return data.every(isObject) ? "table" : "list";
    return isObject(data) ? "fields" : "text";
  }

  function renderSection(section) {
    const hints = hintsOf(section);
    const data = section.data;
    const shape = shapeOf(data);
    const view = own(VIEWS, hints.view) ? hints.view : shape;
    const box = el("section", { class: "section", "data-section": section.name, "data-status": section.status,
      "data-view": view },
    el("h3", {}, el("span", { text: section.title || humanise(section.name) }), badge(section)));
    if (section.status !== "ok") {
      const why = section.status === "forbidden" ? "Your role may not see this."
        : section.error || (section.status === "timeout" ? "No answer in time." : "Unavailable.");
      box.append(el("p", { class: "muted small", text: why }));
      return box;
    }
    if (nothing(data)) {
      box.append(el("p", { class: "muted small", "data-role": "empty", text: hints.empty }));
      return box;
    }
    let body = null;
    try { body = VIEWS[view](data, hints); } catch (_) { body = null; }
    if (!body) {
      box.dataset.view = shape;
      try { body = VIEWS[shape](data, hints); } catch (_) { body = el("p", { text: show(data) }); }
    }
    box.append(body);
    return box;
  }

  // ---- formats ----
  function number(v) {
    if (typeof v === "number") return Number.isFinite(v) ? v : null;
    if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) return Number(v);
    return null;
  }

  // An amount in `currency` (an ISO 4217 code, e.g. a sibling `currency` field), else a plain
  // number with two decimals.
  function formatMoney(value, currency) {
    const n = number(value);
    if (n === null) return show(value);
    if (typeof currency === "string" && /^[A-Za-z]{3}$/.test(currency)) {
      try {
        return new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() }).format(n);
      } catch (_) { /* an unknown code: the plain number */ }
    }
    return new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(n);
  }

  // An ISO date (a calendar day, shown as that day wherever the agent is) or timestamp.
  function formatDate(value) {
    if (typeof value !== "string") return show(value);
    const day = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
    const t = day ? new Date(Number(day[1]), Number(day[2]) - 1, Number(day[3])) : new Date(value);
    if (isNaN(t)) return value;
    return day ? t.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" })
      : t.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function formatPercent(value) {
    const n = number(value);
    return n === null ? show(value)
      : new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 2 }).format(n);
  }

  // A pill: yes/no for a boolean (truthy ones stand out), else the text.
  function pill(value) {
    if (value === null || value === undefined || value === "") return "—";
    const text = value === true ? "yes" : value === false ? "no" : show(value);
    const cls = value === true ? " on" : value === false ? " off" : "";
    return el("span", { class: "badge pill" + cls, "data-role": "pill", text });
  }

  // Line items, `[{qty, name}]` → "10 × Widget, 5 × Gasket".
  function lineItems(value) {
    if (!Array.isArray(value)) return compact(value, false);
    return value.map((i) => {
      if (!isObject(i)) return show(i);
      const qty = i.qty ?? i.quantity;
      return (qty ? qty + " × " : "") + String(i.name ?? i.description ?? i.sku ?? "");
    }).join(", ");
  }

  function formatted(value, format, row) {
    switch (format) {
      case "money": return formatMoney(value, isObject(row) ? row.currency : null);
      case "date": return formatDate(value);
      case "percent": return formatPercent(value);
      case "badge": return pill(value);
      case "items": return lineItems(value);
      default: return compact(value, false);
    }
  }

  // A nested value, compactly: text for scalars and small things, nested fields (roomy: in a
  // field, not a table cell), JSON text as the last resort.
  function inline(v, depth) {
    if (isScalar(v)) return show(v);
    if (depth > 2) return JSON.stringify(v);
    if (Array.isArray(v)) return v.map((x) => inline(x, depth + 1)).join(isScalar(v[0]) ? ", " : "; ");
    return Object.entries(v).map(([k, x]) => humanise(k) + ": " + inline(x, depth + 1)).join(" · ");
  }
  function compact(v, roomy) {
    if (isScalar(v) || !roomy) return inline(v, 0);
    if (Array.isArray(v)) {
      return v.every(isScalar) ? inline(v, 0)
        : el("ul", { class: "nested" }, v.slice(0, MAX_ROWS).map((x) => el("li", { text: inline(x, 1) })));
    }
    return el("dl", { class: "facts nested" }, Object.entries(v).slice(0, MAX_FIELDS).map(([k, x]) =>
      el("div", {}, el("dt", { text: humanise(k) }), el("dd", { text: inline(x, 1) }))));
  }

  function cellOf(row, key, hints, roomy) {
    const v = own(row, key) ? row[key] : undefined;
    return own(hints.formats, key) ? formatted(v, hints.formats[key], row) : compact(v, roomy);
  }

  // ---- views ----
  const keysOf = (hints, rows, most) => hints.columns ||
    [...new Set(rows.flatMap((r) => Object.keys(r)))].slice(0, most);

  function more(total, shown) {
    return total > shown ? el("p", { class: "muted small more", text: "+" + (total - shown) + " more" }) : null;
  }

  function fields(data, hints) {
    return dl(keysOf(hints, [data], MAX_FIELDS).map((k) => [label(hints, k), cellOf(data, k, hints, true)]));
  }

  function rowsTable(rows, hints) {
    const keys = keysOf(hints, rows, MAX_COLUMNS);
    const shown = rows.slice(0, MAX_ROWS);
    return el("div", { class: "rows" },
      table(keys.map((k) => label(hints, k)), shown.map((r) => keys.map((k) => cellOf(r, k, hints, false)))),
      more(rows.length, shown.length));
  }

  // A list's items have no key to hint at: they are shown as they are.
  function list(items) {
    const shown = items.slice(0, MAX_ROWS);
    return el("div", { class: "rows" },
      el("ul", { class: "plain-list" }, shown.map((v) => el("li", {}, compact(v, false)))),
      more(items.length, shown.length));
  }

  // Pairs of [label, value (text or node), class].
  function dl(pairs) {
    return el("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v, cls]) =>
      el("div", { class: cls || null }, el("dt", { text: k }), el("dd", {}, v))));
  }

  // The balance view: `{currency, balance, overdue, overdue_days, invoices: [{number, date, due,
  // amount, status}]}`.
  function balance(d, hints) {
    const overdue = typeof d.overdue === "number" && d.overdue > 0;
    const frag = el("div", { class: "balance" });
    frag.append(dl([
      [label(hints, "balance", "Balance"), money(d.balance, d.currency)],
      [label(hints, "overdue", "Overdue"),
        overdue ? money(d.overdue, d.currency) + (d.overdue_days ? " · " + d.overdue_days + " days" : "") : "none",
        overdue ? "warn" : null],
    ]));
    const invoices = Array.isArray(d.invoices) ? d.invoices.filter(isObject).slice(0, 5) : [];
    if (invoices.length) {
      frag.append(table(["Invoice", "Due", "Amount", "Status"], invoices.map((i) => [
        i.number, i.due || i.date, money(i.amount, d.currency),
        { text: i.status || "", cls: i.status === "overdue" ? "warn" : null },
      ])));
    }
    return frag;
  }

  // The credit view: `{limit, currency, terms, rating, hold}`, with a banner when on hold.
  function credit(d, hints) {
    const frag = el("div", { class: "credit" });
    if (d.hold === true) {
      frag.append(el("p", { class: "hold", "data-role": "hold", text: "Account on credit hold" }));
    }
    frag.append(dl([
      [label(hints, "limit", "Credit limit"), money(d.limit, d.currency)],
      [label(hints, "terms", "Terms"), d.terms === undefined ? "—" : String(d.terms)],
      [label(hints, "rating", "Rating"), d.rating === undefined ? "—" : String(d.rating)],
      [label(hints, "hold", "Hold"), d.hold ? "yes" : "no", d.hold ? "bad" : null],
    ]));
    return frag;
  }

  // The history view (the built-in `history` section): a repeat-caller banner, the counts,
  // then the earlier calls, newest first, with outcome, who answered, note and a call-back link.
  const OUTCOMES = { answered: ["answered", null], missed: ["missed", "warn"], rejected: ["rejected", "bad"], live: ["live", null] };
  const SAFE_LINK = /^(tel|sip|sips|callto|https?):/i;
  function history(d) {
    const frag = el("div", { class: "history", "data-role": "history" });
    const day = Number(d.calls_24h) || 0, week = Number(d.calls_7d) || 0;
    if (d.repeat === true) {
      const nth = day + 1;
      frag.append(el("p", { class: "repeat", "data-role": "repeat",
        text: "Repeat caller: " + ordinal(nth) + " call in 24 hours" }));
    }
    frag.append(el("p", { class: "muted", "data-role": "counts",
      text: day + " earlier in 24 h · " + week + " in 7 days" }));
    if (!d.calls.length) frag.append(el("p", { class: "muted", text: "No earlier calls." }));
    const items = el("ol", { class: "history-items" });
    for (const c of d.calls.filter(isObject)) {
      const [text, cls] = OUTCOMES[c.outcome] || [String(c.outcome || ""), null];
      const who = c.outcome === "answered"
        ? (c.answered_by_name || c.answered_by || c.answered_extension || "")
        : (Array.isArray(c.extensions) ? c.extensions.join(", ") : "");
      const line = el("div", { class: "history-line" },
        el("time", { datetime: c.started, text: formatDate(c.started) }),
        el("span", { class: "badge" + (cls ? " " + cls : ""), "data-role": "outcome", text }),
        who ? el("span", { class: "muted", text: (c.outcome === "answered" ? "by " : "rang ") + who }) : null,
        typeof c.duration_s === "number" ? el("span", { class: "muted", text: duration(c.duration_s) }) : null,
        c.disposition ? el("span", { class: "badge pill", text: String(c.disposition) }) : null,
        typeof c.call_back === "string" && SAFE_LINK.test(c.call_back)
          ? el("a", { href: c.call_back, class: "call-back", "data-role": "call-back", text: "Call back" }) : null);
      items.append(el("li", { "data-call": c.call_id }, line,
        c.note ? el("p", { class: "history-note", "data-role": "history-note", text: String(c.note) }) : null));
    }
    frag.append(items);
    if (d.partial === true) {
      frag.append(el("p", { class: "muted", "data-role": "partial", text: "Older calls are unavailable right now." }));
    }
    return frag;
  }
  function ordinal(n) {
    const s = ["th", "st", "nd", "rd"], v = n % 100;
    return n + (s[(v - 20) % 10] || s[v] || s[0]);
  }
  function duration(secs) {
    const m = Math.floor(secs / 60), s = secs % 60;
    return m ? m + " min " + s + " s" : s + " s";
  }

  // Cells: text, a node, or {text, cls}.
  function table(headers, rows) {
    return el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((cell, i) =>
        cell instanceof Node ? el("td", { "data-label": headers[i] }, cell)
          : cell && typeof cell === "object"
            ? el("td", { class: cell.cls, "data-label": headers[i], text: show(cell.text) })
            : el("td", { "data-label": headers[i], text: show(cell) })))))));
  }

  function pick(card, candidate) {
    if (send({ type: "pick", call_id: card.id, customer_id: candidate.id })) {
      card.picked = candidate;
      render(card);
      card.dom.title.setAttribute("tabindex", "-1");
      card.dom.title.focus();
    } else {
      notify("Not connected: the pick was not sent.");
    }
  }

  function dismiss(card) {
    if (card.state !== "ended") send({ type: "dismiss", call_id: card.id });
    const next = card.dom.root.nextElementSibling || card.dom.root.previousElementSibling;
    card.dom.root.remove();
    state.cards.delete(card.id);
    refreshIdle();
    updateRinging();
    if (next && next.classList.contains("card")) next.focus();
    else $("calls").focus();
  }

  function refreshIdle() {
    $("idle").hidden = state.cards.size > 0;
    $("clear-ended").hidden = ![...state.cards.values()].some((c) => c.state === "ended");
  }

  // ---- callbacks ----------------------------------------------------------------------------
  function onCallback(cb) {
    if (!cb || typeof cb.id !== "string") return;
    if (cb.state === "open" || cb.state === "claimed") state.callbacks.set(cb.id, cb);
    else state.callbacks.delete(cb.id);
    renderCallbacks();
  }

  function renderCallbacks() {
    const list = [...state.callbacks.values()].sort((a, b) => (a.last_ring < b.last_ring ? 1 : -1));
    const count = $("callbacks-count");
    count.hidden = list.length === 0;
    count.textContent = String(list.length);
    $("callbacks-empty").hidden = list.length > 0;
    const me = state.agent && state.agent.id;
    $("callbacks-list").replaceChildren(...list.map((cb) => {
      const who = cb.customer ? cb.customer.name
        : cb.match === "candidates" ? (cb.candidates || []).length + " possible customers"
        : cb.display || "Unknown caller";
      const mine = cb.state === "claimed" && cb.claimed_by === me;
      const held = cb.state === "claimed" && !mine;
      const buttons = [];
      if (!held) {
        buttons.push(el("button", { type: "button", class: "small", "data-action": mine ? "release" : "claim",
          onclick: () => callbackAction(cb, mine ? "release" : "claim"), text: mine ? "Release" : "Claim" }));
        buttons.push(el("button", { type: "button", class: "small", "data-action": "done",
          onclick: () => callbackAction(cb, "done"), text: "Done" }));
      }
      return el("li", { "data-callback-id": cb.id, "data-state": cb.state },
        el("div", { class: "cb-line" },
          el("strong", { class: "cb-who", text: who }),
          el("span", { class: "number", text: formatNumber(cb.e164 || cb.number) }),
          cb.attempts > 1 ? el("span", { class: "badge warn", "data-role": "attempts", text: cb.attempts + " calls" }) : null),
        el("div", { class: "cb-line muted small" },
          el("time", { datetime: cb.last_ring, text: shortDate(cb.last_ring) }),
          " · ext " + (cb.extensions || []).join(", "),
          held ? el("span", { "data-role": "held", text: " · " + cb.claimed_by + " is on it" }) : null,
          mine ? el("span", { "data-role": "held", text: " · you are on it" }) : null),
        el("div", { class: "cb-actions" },
          typeof cb.call_back === "string" && SAFE_LINK.test(cb.call_back)
            ? el("a", { href: cb.call_back, class: "button small", "data-role": "call-back", text: "Call back" }) : null,
          state.page.dial && !held ? el("button", { type: "button", class: "small", "data-action": "dial",
            title: "The PBX rings your phone, then the caller", onclick: () => callbackAction(cb, "dial"),
            text: "Ring me first" }) : null,
          buttons));
    }));
  }

  async function callbackAction(cb, action) {
    let r;
    try {
      r = await fetch("/api/callbacks/" + encodeURIComponent(cb.id) + "/" + action, {
        method: "POST", headers: { Authorization: "Bearer " + state.token, "Content-Type": "application/json" },
        body: "{}",
      });
    } catch (_) {
      notify("Not connected: try again.");
      return;
    }
    let body = {};
    try { body = await r.json(); } catch (_) { /* no body */ }
    if (r.ok && body.callback) onCallback(body.callback);
    if (r.status === 202) notify("Your phone rings now; answer it to call " + formatNumber(body.dialled && body.dialled.number) + ".");
    else if (!r.ok) notify(body.error || "That did not work (" + r.status + ").");
  }

  // ---- search -------------------------------------------------------------------------------
  // Cards a found customer can be attached to: live, not identified, rang here.
  const attachable = () => [...state.cards.values()].filter((c) => c.state !== "ended"
    && !c.picked && (!c.customer || c.approximate));

  async function search(q) {
    const seq = ++state.searchSeq;
    const results = $("search-results");
    if (q.trim().length < 2) {
      results.hidden = true;
      results.replaceChildren();
      $("search-status").textContent = "";
      return;
    }
    let body;
    try {
      const r = await fetch("/api/customers?limit=8&q=" + encodeURIComponent(q.trim()),
        { headers: { Authorization: "Bearer " + state.token } });
      body = await r.json();
      if (!r.ok) throw new Error(body.error || String(r.status));
    } catch (e) {
      if (seq === state.searchSeq) $("search-status").textContent = "Search failed: " + e.message;
      return;
    }
    if (seq !== state.searchSeq) return; // a newer query is on its way
    const hits = body.customers || [];
    for (const c of hits) state.found.set(c.id, c);
    $("search-status").textContent = hits.length ? hits.length + " found" : "Nobody found";
    const cards = attachable();
    results.hidden = hits.length === 0;
    results.replaceChildren(...hits.map((c) => el("li", { "data-customer-id": c.id },
      el("div", {},
        el("strong", { text: c.name }),
        c.company && c.company !== c.name ? el("span", { class: "muted", text: " · " + c.company }) : null,
        c.account ? el("span", { class: "muted", text: " · " + c.account }) : null),
      el("div", { class: "muted small", text: (c.numbers || []).map((n) => formatNumber(n.number || n)).join(", ") }),
      cards.map((card) => el("button", { type: "button", class: "small", "data-action": "attach",
        "data-call-id": card.id, onclick: () => attach(card, c),
        text: "Attach to " + (card.caller.withheld ? "withheld call" : formatNumber(card.caller.number) || "call") })))));
  }

  function attach(card, customer) {
    if (send({ type: "pick", call_id: card.id, customer_id: customer.id })) {
      card.picked = customer;
      render(card);
      $("search-results").hidden = true;
      $("search-q").value = "";
      $("search-status").textContent = customer.name + " attached to the call.";
      card.dom.root.focus();
    } else {
      notify("Not connected: the customer was not attached.");
    }
  }

  // ---- notes and the journal -----------------------------------------------------------------
  let formSeq = 0;
  function noteForm(callId, note, disposition) {
    const n = ++formSeq;
    const status = el("span", { class: "save-status", role: "status" });
    const text = el("textarea", { id: "note-" + n, name: "note", rows: "2", maxlength: String(MAX_NOTE) });
    text.value = note || "";
    const select = el("select", { id: "disp-" + n, name: "disposition" },
      el("option", { value: "", text: "— none —" }),
      (state.page.dispositions || []).map((d) => el("option", { value: d, text: d })));
    select.value = disposition || "";
    const form = el("form", { class: "notes", "data-call-id": callId },
      el("label", { for: "note-" + n, text: "Notes" }), text,
      el("div", { class: "notes-row" },
        el("label", { for: "disp-" + n, text: "Disposition" }), select,
        el("button", { type: "submit", class: "primary small", text: "Save" }), status));
    form.addEventListener("input", () => { form.dataset.dirty = "1"; });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      status.textContent = "Saving…";
      try {
        const r = await fetch("/api/calls/" + encodeURIComponent(callId) + "/notes", {
          method: "POST",
          headers: { "Content-Type": "application/json", Authorization: "Bearer " + state.token },
          body: JSON.stringify({ note: text.value, disposition: select.value || null }),
        });
        if (r.ok) {
          delete form.dataset.dirty;
          status.textContent = "Saved " + clock(new Date().toISOString());
          refreshRecent(true);
        } else if (r.status === 404) {
          status.textContent = "This call is no longer in the journal.";
        } else {
          const body = await r.json().catch(() => ({}));
          status.textContent = "Not saved: " + (body.error || r.status);
        }
      } catch (_) {
        status.textContent = "Not saved: the daemon is unreachable.";
      }
    });
    return form;
  }

  function refreshRecentSoon() {
    clearTimeout(state.recentTimer);
    state.recentTimer = setTimeout(refreshRecent, 400);
  }

  // A note is being written in the list (changed, or the focus is on a note or its toggle): the
  // list is refreshed after, never under the agent's hands (a refresh would take the focus away
  // between a keyboard user's Tab and Enter).
  function editingRecent(list, saved) {
    if (list.querySelector("form[data-dirty]")) return true;
    if (saved) return false; // a note was just saved: show it
    const active = document.activeElement;
    return !!(active && list.contains(active) && active.closest("details"));
  }

  async function refreshRecent(saved) {
    if (!state.token) return;
    if (editingRecent($("recent-list"), saved === true)) {
      clearTimeout(state.recentTimer);
      state.recentTimer = setTimeout(refreshRecent, 2000);
      return;
    }
    let body;
    try {
      const r = await fetch("/api/calls?mine=1&limit=25", { headers: { Authorization: "Bearer " + state.token } });
      if (!r.ok) return;
      body = await r.json();
    } catch (_) {
      return;
    }
    const list = $("recent-list");
    if (editingRecent(list, saved === true)) {
      refreshRecentSoon();
      return;
    }
    // Updated in place, keyed by call: an item's note form stays the same element (what is
    // typed, whether it is open, the focus, a click on its way) unless it is closed and the
    // note changed elsewhere; items move only when a newer call goes in above them. (A list
    // rebuilt wholesale would swap the elements under the agent's pointer and keyboard.)
    const existing = new Map([...list.children].map((li) => [li.dataset.callId, li]));
    const calls = body.calls || [];
    calls.forEach((call, i) => {
      const who = call.customer ? call.customer.name
        : call.withheld ? "Number withheld"
        : call.match === "candidates" ? call.candidates + " possible customers" : "Unknown caller";
      const outcome = call.outcome ? (REASONS[call.outcome] || call.outcome) : call.state;
      const top = el("div", { class: "recent-top" },
        el("span", { class: "recent-who", text: who }),
        el("time", { datetime: call.started, text: shortDate(call.started) }));
      const meta = el("div", { class: "recent-meta" },
        call.withheld ? null : el("span", { text: formatNumber(call.caller_e164 || call.caller_number) || "" }),
        el("span", { class: "badge outcome-" + (call.outcome || call.state), text: outcome }),
        call.disposition ? el("span", { class: "badge disp", "data-role": "disposition", text: call.disposition }) : null);
      const note = call.note ? el("p", { class: "recent-note", "data-role": "note", text: call.note }) : null;
      const version = JSON.stringify([call.note || "", call.disposition || ""]);
      const fresh = () => el("details", { "data-call-id": call.call_id, "data-version": version },
        el("summary", {}, call.note || call.disposition ? "Edit note" : "Add a note"),
        noteForm(call.call_id, call.note, call.disposition));
      let li = existing.get(call.call_id);
      if (li) {
        existing.delete(call.call_id);
        li.querySelector(".recent-top").replaceWith(top);
        li.querySelector(".recent-meta").replaceWith(meta);
        const oldNote = li.querySelector(".recent-note");
        const details = li.querySelector("details");
        if (oldNote) oldNote.remove();
        if (note) li.insertBefore(note, details);
        const busy = details.open || details.contains(document.activeElement)
          || details.querySelector("form[data-dirty]");
        if (!busy && details.dataset.version !== version) details.replaceWith(fresh());
      } else {
        li = el("li", { class: "recent-item", "data-call-id": call.call_id }, top, meta, note, fresh());
      }
      const at = list.children[i];
      if (at !== li) list.insertBefore(li, at || null);
    });
    for (const gone of existing.values()) gone.remove();
    $("recent-empty").hidden = calls.length > 0;
  }

  // ---- alerts: announcement, title, notification, ring tone ------------------------------
  function announce(card) {
    const who = identity(card).name;
    const number = card.caller.withheld ? "" : formatNumber(card.caller.e164 || card.caller.number);
    $("announce").textContent = "Incoming call from " + who + (number && who !== number ? ", " + number : "");
  }

  let noticeTimer = null;
  function notify(text) {
    const notice = $("notice");
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { notice.hidden = true; notice.textContent = ""; }, 8000);
  }

  function ringingCards() {
    return [...state.cards.values()].filter((c) => c.state === "ringing");
  }

  function updateRinging() {
    const ringing = ringingCards();
    document.title = ringing.length ? "☎ " + identity(ringing[ringing.length - 1]).name + " · screenpop" : "screenpop";
    if (!ringing.length || !document.hidden) stopRing();
  }

  function alertInBackground(card) {
    if (!document.hidden) return;
    const who = identity(card).name;
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        const n = new Notification("Incoming call: " + who, {
          body: [formatNumber(card.caller.e164 || card.caller.number), card.caller.display].filter(Boolean).join(" · "),
          tag: card.id,
        });
        n.addEventListener("click", () => { window.focus(); card.dom.root.focus(); n.close(); });
      } catch (_) { /* some platforms only allow notifications from a service worker */ }
    }
    startRing();
  }

  function unlockAlerts() {
    // Called from a user gesture: browsers allow the permission prompt and audio only then.
    if ("Notification" in window && Notification.permission === "default" && !localStorage.getItem(ASKED_KEY)) {
      localStorage.setItem(ASKED_KEY, "1");
      try { Notification.requestPermission().then(updateAlertsButton, updateAlertsButton); } catch (_) { /* old API */ }
    }
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (Ctx && !state.audio) {
      try { state.audio = new Ctx(); } catch (_) { state.audio = null; }
    }
    if (state.audio && state.audio.state === "suspended") state.audio.resume().catch(() => {});
    updateAlertsButton();
  }

  function updateAlertsButton() {
    const canAsk = "Notification" in window && Notification.permission === "default";
    $("alerts").hidden = !state.agent || !(canAsk || (state.page.ring_sound && !state.audio));
  }

  // A North American ring (440 + 480 Hz, 2 s on) synthesised with WebAudio: no file to fetch.
  function ringOnce() {
    const ctx = state.audio;
    if (!ctx || ctx.state !== "running") return;
    const t = ctx.currentTime;
    const gain = ctx.createGain();
    gain.gain.setValueAtTime(0, t);
    gain.gain.linearRampToValueAtTime(0.12, t + 0.05);
    gain.gain.setValueAtTime(0.12, t + 1.2);
    gain.gain.linearRampToValueAtTime(0, t + 1.3);
    gain.connect(ctx.destination);
    for (const f of [440, 480]) {
      const osc = ctx.createOscillator();
      osc.frequency.value = f;
      osc.connect(gain);
      osc.start(t);
      osc.stop(t + 1.35);
    }
  }

  function startRing() {
    if (!state.page.ring_sound || !state.audio || state.ringTimer) return;
    ringOnce();
    state.ringTimer = setInterval(() => {
      if (!ringingCards().length || !document.hidden) stopRing();
      else ringOnce();
    }, 4000);
  }

  function stopRing() {
    clearInterval(state.ringTimer);
    state.ringTimer = null;
  }

  // ---- sign in / out ------------------------------------------------------------------------
  function signOut(error) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(state.reconnectTimer);
    clearInterval(state.pingTimer);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000, "signed out");
    for (const card of state.cards.values()) card.dom.root.remove();
    state.cards.clear();
    state.callbacks.clear();
    state.found.clear();
    renderCallbacks();
    state.agent = null;
    stopRing();
    document.title = "screenpop";
    setConn("signed-out", "Signed out");
    $("desk").hidden = true;
    $("who").hidden = true;
    $("signout").hidden = true;
    $("alerts").hidden = true;
    $("recent-list").replaceChildren();
    $("signin").hidden = false;
    const err = $("signin-error");
    err.hidden = !error;
    err.textContent = error || "";
    $("token").value = "";
    $("token").focus();
  }

  $("signin").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (!token) {
      $("signin-error").hidden = false;
      $("signin-error").textContent = "Enter your agent token.";
      return;
    }
    $("signin-error").hidden = true;
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    unlockAlerts();
    state.attempt = 0;
    connect();
  });
  $("signout").addEventListener("click", () => signOut(null));
  $("alerts").addEventListener("click", () => {
    localStorage.removeItem(ASKED_KEY);
    unlockAlerts();
  });
  $("recent-refresh").addEventListener("click", refreshRecent);
  $("search").addEventListener("submit", (e) => { e.preventDefault(); search($("search-q").value); });
  $("search-q").addEventListener("input", () => {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(() => search($("search-q").value), 150);
  });
  $("clear-ended").addEventListener("click", () => {
    for (const card of [...state.cards.values()]) if (card.state === "ended") dismiss(card);
    $("calls").focus();
  });
  // Keys, outside text fields: "/" finds a customer, "r" jumps to the newest ringing call,
  // 1–9 pick that candidate on it.
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || !state.agent) return;
    if (e.target.closest && e.target.closest("input, textarea, select")) return;
    const ringing = [...state.cards.values()].filter((c) => c.state === "ringing");
    const newest = ringing.length ? ringing[ringing.length - 1] : null;
    if (e.key === "/") {
      e.preventDefault();
      $("search-q").focus();
    } else if (e.key === "r" && newest) {
      e.preventDefault();
      newest.dom.root.focus();
    } else if (/^[1-9]$/.test(e.key) && newest && newest.candidates && !newest.picked) {
      const cand = newest.candidates[Number(e.key) - 1];
      if (cand) { e.preventDefault(); pick(newest, cand); }
    }
  });
  document.addEventListener("visibilitychange", updateRinging);
  window.addEventListener("online", () => {
    if (state.token && !state.ws) { state.attempt = 0; connect(); }
  });
  setInterval(() => {
    for (const card of state.cards.values()) {
      if (!counting(card) || !card.dom) continue;
      const t = card.dom.head.querySelector("time");
      if (t) t.textContent = clockText(card);
    }
  }, 1000);

  if (state.token) connect();
  else $("token").focus();
})();

/*
 * Concierge chat widget. No build step, no dependencies.
 *
 *   <script src="https://your-server/widget.js" data-sandbox="default"></script>
 *
 * Attributes (all optional):
 *   data-sandbox   sandbox name or id (default "default")
 *   data-api-url   the concierge server (default: where this script came from)
 *   data-api-key   an API key (ck_...); leave it out on a server started with
 *                  --allow-anonymous-loopback or behind your own proxy that adds it
 *   data-title     the panel's title (default "Concierge")
 *   data-open      "true" opens the panel on load
 *
 * It streams the concierge's Server-Sent Events from a POST (fetch + ReadableStream) and shows:
 * each step in plain words ("Checking the server…", from the event's `label`), answers with
 * their lists and commands laid out, confirmation cards (Confirm / Cancel) and a password
 * field for credentials, which go straight to the server's secret endpoint and never into
 * the chat. What you typed is shown as the server stored it, so a token pasted into a message
 * appears as "•••• secret", never in clear. The newest answer is shown from its start. On a
 * narrow screen (a phone) the panel takes the whole screen. The conversation id is kept in
 * localStorage and the history is reloaded from the server, so a reload continues it.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || window.__conciergeWidget) return;
  window.__conciergeWidget = true;

  var data = script.dataset || {};
  var API = (data.apiUrl || new URL(script.src, location.href).origin).replace(/\/$/, "");
  var SANDBOX = data.sandbox || "default";
  var TITLE = data.title || "Concierge";
  var KEY = data.apiKey || null;
  var STORE = "concierge-widget:" + API + ":" + SANDBOX;
  var BASE = API + "/api/v1/storage/sandboxes/" + encodeURIComponent(SANDBOX) + "/concierge";
  var MAX_CHARS = 4000;  // the server's limit (MAX_MESSAGE_CHARS)

  var CSS = [
    ":host { all: initial; }",
    "* { box-sizing: border-box; font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; }",
    ".vh { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;",
    "  clip: rect(0 0 0 0); white-space: nowrap; border: 0; }",
    ".launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; border: 0;",
    "  border-radius: 28px; padding: 14px 20px; background: #1f4fd1; color: #fff; font-size: 15px;",
    "  font-weight: 600; cursor: pointer; box-shadow: 0 6px 20px rgba(0,0,0,.25); max-width: calc(100vw - 40px); }",
    ".launcher:focus-visible, button:focus-visible, textarea:focus-visible, input:focus-visible {",
    "  outline: 3px solid #f5a623; outline-offset: 2px; }",
    ".panel { position: fixed; right: 20px; bottom: 84px; z-index: 2147483000; width: 380px;",
    "  max-width: calc(100vw - 40px); height: 560px; max-height: calc(100vh - 110px); display: flex;",
    "  flex-direction: column; background: #fff; color: #1f2328; border-radius: 14px;",
    "  box-shadow: 0 12px 40px rgba(0,0,0,.28); overflow: hidden; font-size: 14px; }",
    ".panel[hidden] { display: none; }",
    "header { display: flex; align-items: center; gap: 8px; padding: 12px 14px; background: #1f4fd1; color: #fff; }",
    "header h2 { flex: 1; margin: 0; font-size: 16px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }",
    "header button { background: transparent; color: #fff; border: 1px solid rgba(255,255,255,.6);",
    "  border-radius: 6px; padding: 4px 8px; cursor: pointer; font-size: 12px; }",
    ".log { position: relative; flex: 1; overflow-y: auto; overscroll-behavior: contain; padding: 12px;",
    "  display: flex; flex-direction: column; gap: 8px; background: #f6f8fa; }",
    ".msg { max-width: 88%; padding: 8px 11px; border-radius: 12px; overflow-wrap: break-word; line-height: 1.4; }",
    ".bot.wide { max-width: 100%; }",
    ".user { align-self: flex-end; background: #1f4fd1; color: #fff; border-bottom-right-radius: 3px;",
    "  white-space: pre-wrap; }",
    ".user.sending { opacity: .7; }",
    ".bot { align-self: flex-start; background: #fff; border: 1px solid #d0d7de; border-bottom-left-radius: 3px; }",
    ".bot p { margin: 0; white-space: pre-wrap; }",
    ".bot p + p, .bot p + ul, .bot p + ol, .bot ul + p, .bot ol + p, .bot pre + p, .bot p + pre { margin-top: 6px; }",
    ".bot ul, .bot ol { margin: 4px 0 0; padding-left: 20px; }",
    ".bot li + li { margin-top: 3px; }",
    ".bot pre { margin: 4px 0 0; padding: 6px 8px; background: #f6f8fa; border-radius: 6px; white-space: pre-wrap;",
    "  overflow-wrap: anywhere; font-size: 12.5px; }",
    ".bot code, .bot pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }",
    ".bot code { background: #eff1f3; padding: 0 3px; border-radius: 4px; font-size: 12.5px; }",
    ".bot pre code { background: none; padding: 0; }",
    ".secret { display: inline-block; padding: 0 5px; border-radius: 4px; font-size: 12px; letter-spacing: .02em;",
    "  background: rgba(0,0,0,.12); }",
    ".user .secret { background: rgba(255,255,255,.25); }",
    ".step { align-self: flex-start; font-size: 12.5px; color: #57606a; padding: 2px 4px; }",
    ".step.ok::before { content: '\\2713  '; color: #1a7f37; }",
    ".step.err::before { content: '\\2717  '; color: #cf222e; }",
    ".step.off::before { content: '\\2013  '; }",
    ".step.run::before { content: '\\2026  '; }",
    ".step.wait::before { content: '\\2192  '; }",
    ".authorize { align-self: flex-start; font-size: 13px; padding: 4px; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }",
    ".authorize a { display: inline-block; background: #0969da; color: #fff; border-radius: 6px; padding: 5px 12px; text-decoration: none; font-weight: 600; }",
    ".authorize a:focus-visible { outline: 2px solid #0550ae; outline-offset: 2px; }",
    ".note { align-self: center; font-size: 12px; color: #57606a; text-align: center; }",
    ".error { align-self: stretch; background: #ffebe9; border: 1px solid #ff8182; color: #82071e;",
    "  padding: 8px 10px; border-radius: 8px; }",
    ".card { align-self: stretch; background: #fff8c5; border: 1px solid #d4a72c; border-radius: 10px;",
    "  padding: 10px 12px; display: flex; flex-direction: column; gap: 8px; }",
    ".card.done { background: #f6f8fa; border-color: #d0d7de; }",
    ".card h3 { margin: 0; font-size: 13px; }",
    ".card p { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }",
    ".card .row { display: flex; gap: 8px; flex-wrap: wrap; }",
    ".card button { border-radius: 6px; padding: 8px 14px; cursor: pointer; font-size: 14px; border: 1px solid #8c959f; background: #fff; }",
    ".card button.primary { background: #1a7f37; border-color: #1a7f37; color: #fff; font-weight: 600; }",
    ".card input { width: 100%; padding: 8px; border: 1px solid #8c959f; border-radius: 6px; font-size: 16px; }",
    ".card label { font-size: 13px; }",
    ".card .outcome { font-size: 12px; color: #57606a; }",
    "form.composer { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #d0d7de; background: #fff; }",
    "form.composer textarea { flex: 1; min-width: 0; resize: none; height: 42px; padding: 9px; border: 1px solid #8c959f;",
    "  border-radius: 8px; font-size: 14px; }",
    "form.composer textarea[aria-invalid=true] { border-color: #cf222e; }",
    "form.composer button { border: 0; border-radius: 8px; padding: 0 14px; background: #1f4fd1; color: #fff;",
    "  font-weight: 600; cursor: pointer; }",
    "form.composer button:disabled { opacity: .5; cursor: default; }",
    ".status { font-size: 12px; color: #57606a; padding: 0 12px 6px; min-height: 1em; background: #fff; }",
    ".status.bad { color: #cf222e; }",
    // A phone: the panel is the whole screen, the launcher steps aside while it is open.
    "@media (max-width: 480px) {",
    "  .panel { left: 0; right: 0; top: 0; bottom: 0; width: 100%; max-width: none; height: 100%;",
    "    max-height: none; border-radius: 0; font-size: 15px; }",
    "  .launcher[aria-expanded=true] { display: none; }",
    "  header { padding: 10px 12px; padding-top: max(10px, env(safe-area-inset-top)); }",
    "  header button { padding: 8px 10px; font-size: 14px; }",
    "  .msg { max-width: 92%; }",
    "  form.composer { padding-bottom: max(10px, env(safe-area-inset-bottom)); }",
    "  form.composer textarea { font-size: 16px; }",
    "}"
  ].join("\n");

  // Field names in error details, as people know them.
  var FIELD_WORDS = {
    base_url: "URL", url: "URL", auth_kind: "authentication", auth_header: "header name",
    app_namespace: "namespace", namespace: "namespace", rate_cap_per_minute: "rate cap",
    webhook_rate_cap_per_minute: "webhook rate cap", allowed_tools: "allowed tools",
    tool_allowlist: "tool allowlist", token: "token", token_ref: "token", name: "name",
    message: "message", connect_timeout: "connect timeout", call_timeout: "call timeout",
    sandbox: "sandbox", slug: "agent name", transport: "transport", value: "credential",
    command: "command", args: "program arguments", env: "environment", secret_env: "secret environment",
    cwd: "working directory", client_id: "client id", client_secret: "client secret", scopes: "scopes",
    grant: "grant", headers: "headers"
  };

  // What a result's status means, said after the step.
  var STATUS_WORDS = {
    active: "healthy", error: "failing its health check", paused: "paused", disconnected: "revoked",
    auth_required: "waiting for you to sign in",
    declined: "cancelled; nothing was changed", not_confirmed: "not answered; nothing was changed",
    skipped: "skipped", abandoned: "stopped; nothing was changed",
    cancelled: "interrupted"
  };
  var NOT_RUN = { declined: 1, not_confirmed: 1, skipped: 1, abandoned: 1, cancelled: 1 };

  // -- DOM ------------------------------------------------------------------------------------

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    if (text != null) node.textContent = text;
    return node;
  }

  var host = el("div", { id: "concierge-widget" });
  document.body.appendChild(host);
  var root = host.attachShadow({ mode: "open" });
  root.appendChild(el("style", {}, CSS));

  var launcher = el("button", { class: "launcher", type: "button", "aria-expanded": "false",
    "aria-controls": "cw-panel" }, "Chat with " + TITLE);
  var panel = el("section", { class: "panel", id: "cw-panel", role: "dialog", "aria-modal": "false",
    "aria-labelledby": "cw-title" });
  panel.hidden = true;
  var header = el("header");
  var title = el("h2", { id: "cw-title" }, TITLE);
  var reset = el("button", { type: "button", title: "Start a new conversation" }, "New chat");
  var close = el("button", { type: "button", "aria-label": "Close the chat" }, "Close");
  header.append(title, reset, close);
  var log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Conversation",
    tabindex: "0" });
  var status = el("div", { class: "status", role: "status", "aria-live": "polite" });
  var form = el("form", { class: "composer" });
  var inputLabel = el("label", { for: "cw-input", class: "vh" }, "Message to the concierge");
  var input = el("textarea", { id: "cw-input", rows: "1", placeholder: "Ask the concierge…",
    "aria-describedby": "cw-hint" });
  var hint = el("span", { id: "cw-hint", class: "vh" }, "Enter sends; Shift+Enter adds a line.");
  var send = el("button", { type: "submit" }, "Send");
  form.append(inputLabel, input, hint, send);
  panel.append(header, log, status, form);
  root.append(launcher, panel);

  // -- state ----------------------------------------------------------------------------------

  var sessionId = null;
  try { sessionId = localStorage.getItem(STORE); } catch (e) { sessionId = null; }
  var busy = false;
  var loaded = false;
  var bubble = null;             // the assistant message being streamed
  var bubbleText = "";           // ... and its text so far
  var sending = null;            // the person's message until the server says how it stored it
  var steps = {};                // call_id -> step line
  var lastStep = null;           // the latest step, and whether an answer followed it
  var replayPending = null;      // the request still open while the history is replayed
  var lastSecretCard = null;     // the newest credential card

  function remember(id) {
    sessionId = id;
    try {
      if (id) localStorage.setItem(STORE, id); else localStorage.removeItem(STORE);
    } catch (e) { /* private mode: the conversation lasts as long as the page */ }
  }

  // Show the newest thing, but never scroll past its start: a long answer is read from the top.
  function reveal(node) {
    var bottom = log.scrollHeight - log.clientHeight;
    var top = node.offsetTop - 8;
    log.scrollTop = Math.max(0, Math.min(bottom, top));
  }

  function add(node) { log.appendChild(node); reveal(node); return node; }

  function setBusy(value, text) {
    busy = value;
    send.disabled = value;
    log.setAttribute("aria-busy", value ? "true" : "false");
    status.className = "status";
    status.textContent = text || "";
  }

  function headers(json) {
    var h = { "Accept": "text/event-stream" };
    if (json) h["Content-Type"] = "application/json";
    if (KEY) h["Authorization"] = "Bearer " + KEY;
    return h;
  }

  // -- words ----------------------------------------------------------------------------------

  function capital(text) { return text ? text.charAt(0).toUpperCase() + text.slice(1) : text; }

  function stepLabel(d) {
    if (d.label) return d.label;
    return capital(String(d.name || "working").replace(/[_-]+/g, " "));
  }

  // "rate_cap_per_minute: must be ≤ 600" -> "the rate cap must be ≤ 600"; "app_namespace" -> "namespace".
  var FIELD_RULE = /(^|[^\w])([a-z][a-z_]*): (?:(?:String|Input|Value|List) )?(should|must|is|has|cannot|can't|may|needs?|too)\b/g;

  function userWords(text) {
    text = String(text || "").replace(FIELD_RULE, function (m, pre, field, verb, at) {
      var words = FIELD_WORDS[field];
      if (!words) return m;
      var start = at === 0 && pre === "";
      return pre + (start ? "The " : "the ") + words + " " + verb;
    });
    return text.replace(/\b([a-z]+(?:_[a-z]+)+)\b/g, function (m, field) { return FIELD_WORDS[field] || m; });
  }

  // -- rich text (answers) ----------------------------------------------------------------------

  var INLINE = /`([^`\n]+)`|\[secret:sec_[0-9a-f]{8,32}\]/g;

  function inline(node, text) {
    var last = 0, m;
    INLINE.lastIndex = 0;
    while ((m = INLINE.exec(text))) {
      if (m.index > last) node.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[1] != null) node.appendChild(el("code", {}, m[1]));
      else node.appendChild(secretChip());
      last = m.index + m[0].length;
    }
    if (last < text.length) node.appendChild(document.createTextNode(text.slice(last)));
    return node;
  }

  function secretChip() {
    return el("span", { class: "secret", title: "A credential, stored privately; never shown" }, "•••• secret");
  }

  // Paragraphs, "- " / "• " bullet lists, "1. " numbered lists, indented lines as commands.
  function rich(node, text) {
    node.textContent = "";
    var list = null, para = null, pre = null;
    function closeAll() { list = para = pre = null; }
    text.split("\n").forEach(function (line) {
      var m;
      if ((m = /^\s*[-*•]\s+(.*)$/.exec(line))) {
        if (!list || list.tagName !== "UL") { closeAll(); list = node.appendChild(el("ul")); }
        inline(list.appendChild(el("li")), m[1]);
      } else if ((m = /^\s*(\d{1,3})[.)]\s+(.*)$/.exec(line))) {
        if (!list || list.tagName !== "OL") {
          closeAll();
          list = node.appendChild(el("ol"));
          if (m[1] !== "1") list.setAttribute("start", m[1]);
        }
        inline(list.appendChild(el("li")), m[2]);
      } else if (!line.trim()) {
        closeAll();
      } else if (/^(?: {2,}|\t)\S/.test(line) && list) {
        var item = list.lastElementChild;
        item.appendChild(document.createTextNode(" "));
        inline(item, line.trim());
      } else if (/^(?: {2,}|\t)\S/.test(line)) {
        if (!pre) { list = para = null; pre = node.appendChild(el("pre")); }
        else pre.appendChild(document.createTextNode("\n"));
        inline(pre, line.replace(/^\s+/, ""));
      } else {
        if (!para) { list = pre = null; para = node.appendChild(el("p")); }
        else para.appendChild(document.createTextNode("\n"));
        inline(para, line);
      }
    });
    return node;
  }

  // -- rendering events -----------------------------------------------------------------------

  function userLine(text, pending) {
    var line = add(inline(el("div", { class: "msg user" + (pending ? " sending" : "") }), text));
    return line;
  }

  function stored(d) {
    // The server's copy of what was said: credentials are references, shown as "•••• secret".
    if (sending) {
      sending.textContent = "";
      inline(sending, d.text || "");
      sending.classList.remove("sending");
      sending = null;
    } else {
      userLine(d.text || "");
    }
  }

  function botText(text) {
    if (!bubble) {
      bubble = add(el("div", { class: "msg bot", "aria-busy": "true" }));
      bubbleText = "";
    }
    bubbleText += text;
    rich(bubble, userWords(bubbleText));
    bubble.classList.toggle("wide", !!bubble.querySelector("ul, ol, pre"));
    if (lastStep) lastStep.answered = true;
    reveal(bubble);
  }

  function endBubble() {
    if (bubble) bubble.setAttribute("aria-busy", "false");
    bubble = null;
    bubbleText = "";
  }

  function stepStarted(d) {
    endBubble();
    var line = add(el("div", { class: "step run", "data-tool": d.name }, stepLabel(d) + "…"));
    line.label = stepLabel(d);
    steps[d.call_id] = line;
    lastStep = { line: line, answered: false, detail: null };
  }

  function stepDone(d) {
    var result = d.result || {};
    var state = result.status;
    var line = steps[d.call_id];
    if (NOT_RUN[state] && !line) {
      // Declined, not answered, skipped: the card and the answer say so; no third line.
      lastStep = null;
      return;
    }
    if (!line) {
      line = add(el("div", { class: "step", "data-tool": d.name }));
      line.label = stepLabel(d);
    }
    var kind, words = "";
    if (NOT_RUN[state]) {
      kind = "off";
      words = STATUS_WORDS[state];
    } else if (d.error) {
      kind = "err";
      words = "didn't work";
    } else if (state === "error" && result.health_error !== undefined) {
      kind = "err";
      words = STATUS_WORDS.error;
    } else {
      kind = "ok";
      if (state && STATUS_WORDS[state] && result.data_source_id) words = STATUS_WORDS[state];
      if (state === "active" && typeof result.tool_count === "number") {
        words += ", " + result.tool_count + (result.tool_count === 1 ? " tool" : " tools");
      }
    }
    line.className = "step " + kind;
    line.textContent = line.label + (words ? " — " + words : "");
    line.setAttribute("data-status", kind === "err" ? "error" : kind === "off" ? (state || "off") : "ok");
    lastStep = { line: line, answered: false,
                 detail: kind === "err" ? (result.detail || result.health_error || d.error) : null };
    if (typeof result.authorize_url === "string" && /^https?:\/\//i.test(result.authorize_url)) {
      authorizeButton(result.authorize_url);
    }
  }

  function authorizeButton(url) {
    // An OAuth source waits for its person: the sign-in opens in a new tab, and the server's
    // callback route finishes it (only http(s) links, never a script URL).
    var row = el("div", { class: "authorize", "data-authorize": "true" });
    row.appendChild(el("span", {}, "Open this link to sign in:"));
    row.appendChild(el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, "Authorize"));
    add(row);
  }

  function parked(d) {
    // The call waits for the person: its result will get a fresh line below the card.
    var line = steps[d.call_id];
    if (line) {
      line.className = "step wait";
      line.textContent = line.label + " — waiting for you";
      line.setAttribute("data-status", "waiting");
      delete steps[d.call_id];
    }
  }

  function asked(d, text) {
    endBubble();
    parked(d);
    add(el("div", { class: "note" }, text));
  }

  function errorLine(text) {
    endBubble();
    add(el("div", { class: "error", role: "alert" }, userWords(text)));
  }

  function finished() {
    // A failed step the answer did not explain: say why once, in plain words.
    if (lastStep && lastStep.detail && !lastStep.answered) errorLine(lastStep.detail);
    lastStep = null;
  }

  function closeCards(words, which) {
    // A new message drops whatever was waiting: its card can no longer be answered.
    Array.prototype.forEach.call(log.querySelectorAll(which || ".card:not(.done)"), function (card) {
      card.classList.add("done");
      var row = card.querySelector(".row");
      var field = card.querySelector("input");
      var label = card.querySelector("label");
      if (field) { field.value = ""; field.remove(); }
      if (label) label.remove();
      if (row) row.replaceWith(el("div", { class: "outcome" }, words));
    });
  }

  function answeredCard(d) {
    // A typed "yes please" / "nah" answered the open card (the server said so).
    var card = log.querySelector('[data-confirmation="' + String(d.id).replace(/["\\]/g, "") + '"]');
    var outcome = card && card.querySelector(".outcome");
    if (outcome) outcome.textContent = d.approved ? "Confirmed." : "Cancelled; nothing was changed.";
  }

  function confirmationCard(d, replay) {
    endBubble();
    parked(d);
    var card = el("div", { class: "card", role: "group", "aria-labelledby": "cw-c-" + d.id,
      "data-confirmation": d.id });
    card.append(el("h3", { id: "cw-c-" + d.id }, "Please confirm this change"),
                el("p", {}, d.summary));
    var row = el("div", { class: "row" });
    var yes = el("button", { type: "button", class: "primary" }, "Confirm");
    var no = el("button", { type: "button" }, "Cancel");
    row.append(yes, no);
    card.append(row);
    add(card);
    function answer(approved) {
      if (busy) return;
      yes.disabled = no.disabled = true;
      card.classList.add("done");
      row.replaceWith(el("div", { class: "outcome" }, approved ? "Confirmed." : "Cancelled; nothing was changed."));
      input.focus();
      stream(BASE + "/sessions/" + encodeURIComponent(sessionId) + "/confirm",
             { id: d.id, approved: approved });
    }
    yes.addEventListener("click", function () { answer(true); });
    no.addEventListener("click", function () { answer(false); });
    status.textContent = "Waiting for your confirmation.";
    if (!replay || !panel.hidden) yes.focus();
  }

  function secretCard(d, replay) {
    endBubble();
    parked(d);
    var id = "cw-s-" + d.id;
    var card = el("form", { class: "card", "aria-labelledby": id + "-h", "data-secret": d.id,
      "data-call": d.call_id || "" });
    card.append(el("h3", { id: id + "-h" }, "A credential is needed"));
    var label = el("label", { for: id }, "Enter " + d.purpose + ". It goes straight to the server's " +
      "vault, never into the chat.");
    var field = el("input", { id: id, type: "password", autocomplete: "off", spellcheck: "false",
      required: "" });
    var row = el("div", { class: "row" });
    var ok = el("button", { type: "submit", class: "primary" }, "Send securely");
    var no = el("button", { type: "button" }, "Cancel");
    row.append(ok, no);
    card.append(label, field, row);
    add(card);
    function done(words) {
      field.value = "";
      label.remove();
      field.remove();
      card.classList.add("done");
      row.replaceWith(el("div", { class: "outcome" }, words));
      input.focus();
    }
    card.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var value = field.value;
      if (!value.trim() || busy) { field.focus(); return; }
      done("Credential sent to the server.");
      stream(BASE + "/sessions/" + encodeURIComponent(sessionId) + "/secret", { id: d.id, value: value });
    });
    no.addEventListener("click", function () {
      if (busy) return;
      done("Cancelled; nothing was changed.");
      // Say so in the conversation: the request is dropped on the server too, so a token in a
      // later message cannot answer it.
      say("Cancel");
    });
    lastSecretCard = card;
    status.textContent = "Waiting for a credential.";
    if (!replay || !panel.hidden) field.focus();
  }

  function render(kind, d, replay) {
    switch (kind) {
      case "user_message":
        if (replay) userLine(d.text || "");
        else { stored(d); closeCards("Not answered; nothing was changed.", "[data-confirmation]:not(.done)"); }
        break;
      case "run_started":
        if (d.session_id) remember(d.session_id);
        break;
      case "agent_text_delta": botText(d.text || ""); break;
      case "agent_tool_call": stepStarted(d); break;
      case "agent_tool_result": stepDone(d); break;
      case "confirmation_required":
        // A token typed into the chat instead of the card answered the credential request.
        if (!replay) closeCards("Credential received (it is not shown in the chat).",
                                '[data-secret][data-call="' + String(d.call_id).replace(/["\\]/g, "") + '"]:not(.done)');
        if (!replay) confirmationCard(d, false);
        else if (d.id !== replayPending) asked(d, "Asked to confirm: " + d.summary);
        break;
      case "secret_required":
        if (!replay) secretCard(d, false);
        else if (d.id !== replayPending) asked(d, "Asked for " + d.purpose + ".");
        break;
      case "agent_finish":
        endBubble();
        finished();
        if (!replay) {
          // A credential request this run did not renew was dropped by the new message.
          Array.prototype.forEach.call(log.querySelectorAll("[data-secret]:not(.done)"), function (card) {
            if (card !== lastSecretCard || d.stop_reason !== "awaiting_secret") {
              closeCards("Not answered; nothing was changed.", '[data-secret="' + card.getAttribute("data-secret") + '"]');
            }
          });
        }
        if (d.session_id) remember(d.session_id);
        if (!replay && d.stop_reason === "end_turn") status.textContent = "";
        break;
      case "agent_error": lastStep = null; errorLine(d.message || "Something went wrong."); break;
      // Live, the card already says it ("Confirmed.", "Credential sent"); these are for reloads.
      case "user_confirm":
        if (replay) add(el("div", { class: "note" }, d.approved ? "You confirmed the change." : "You cancelled the change."));
        else answeredCard(d);
        break;
      case "user_secret":
        if (replay) add(el("div", { class: "note" }, "You handed over a credential privately."));
        break;
      default: break;
    }
  }

  // -- talking to the server ------------------------------------------------------------------

  function parseBlock(block) {
    var name = "message", lines = [];
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) name = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) lines.push(line.slice(5).replace(/^ /, ""));
    });
    if (!lines.length) return null;
    try { return { event: name, data: JSON.parse(lines.join("\n")) }; } catch (e) { return null; }
  }

  async function failure(response) {
    var detail = "The server answered " + response.status + ".";
    try {
      var body = await response.json();
      if (body && body.detail) detail = body.detail;
    } catch (e) { /* not JSON */ }
    if (response.status === 404 && sessionId) {
      remember(null);
      detail = "This conversation is no longer on the server. Send your message again to start a new one.";
    }
    return detail;
  }

  async function stream(url, body, typed) {
    setBusy(true, "The concierge is working…");
    var ok = false;
    try {
      var response = await fetch(url, { method: "POST", headers: headers(true), body: JSON.stringify(body) });
      if (!response.ok) { errorLine(await failure(response)); return; }
      ok = true;
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
        var cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          var item = parseBlock(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (item) render(item.event, item.data, false);
        }
      }
    } catch (e) {
      errorLine("Could not reach the concierge (" + e.message + "). Try again.");
    } finally {
      endBubble();
      if (sending) {
        // Never answered: show nothing of what was typed (it may hold a credential) and give
        // the text back, so nothing is lost.
        sending.textContent = "(not sent)";
        sending.classList.remove("sending");
        sending = null;
        if (!ok && typed != null && !input.value) input.value = typed;
      }
      var waiting = log.querySelector(".card:not(.done) button:not([disabled]), .card:not(.done) input");
      setBusy(false, waiting ? status.textContent : "");
    }
  }

  async function restore() {
    if (loaded) return;
    loaded = true;
    if (!sessionId) { greet(); return; }
    try {
      var response = await fetch(BASE + "/sessions/" + encodeURIComponent(sessionId), { headers: headers(false) });
      if (!response.ok) { await failure(response); remember(null); greet(); return; }
      var history = await response.json();
      replayPending = history.pending ? history.pending.data.id : null;
      history.events.forEach(function (e) { render(e.event, e.data, true); });
      endBubble();
      lastStep = null;
      if (history.pending) {
        if (history.pending.event === "confirmation_required") confirmationCard(history.pending.data, true);
        else if (history.pending.event === "secret_required") secretCard(history.pending.data, true);
      }
      if (history.running) status.textContent = "A reply is still being prepared; reload to see it.";
    } catch (e) {
      errorLine("Could not load the conversation (" + e.message + ").");
    }
  }

  function greet() {
    add(el("div", { class: "msg bot" }, "Hi! I can connect your own MCP servers to your agents. Try " +
      "\u201cAdd my MCP server at https://mcp.example.com/mcp with a bearer token\u201d or " +
      "\u201cList my sources\u201d."));
  }

  // -- wiring ---------------------------------------------------------------------------------

  function open() {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    restore().then(function () {
      var pending = log.querySelector(".card:not(.done) button.primary:not([disabled]), .card:not(.done) input");
      (pending || input).focus();
    });
  }

  function shut() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }

  function tooLong() {
    var over = input.value.length > MAX_CHARS;
    input.setAttribute("aria-invalid", over ? "true" : "false");
    if (over) {
      status.className = "status bad";
      status.textContent = "Your message is " + input.value.length.toLocaleString("en") + " characters; " +
        "the limit is " + MAX_CHARS.toLocaleString("en") + ". Shorten it to send it.";
    } else if (status.classList.contains("bad")) {
      status.className = "status";
      status.textContent = "";
    }
    return over;
  }

  launcher.addEventListener("click", function () { panel.hidden ? open() : shut(); });
  close.addEventListener("click", shut);
  panel.addEventListener("keydown", function (ev) { if (ev.key === "Escape") shut(); });
  reset.addEventListener("click", function () {
    remember(null);
    steps = {};
    lastStep = null;
    log.textContent = "";
    status.className = "status";
    status.textContent = "New conversation.";
    greet();
    input.focus();
  });
  input.addEventListener("input", tooLong);
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); form.requestSubmit(); }
  });
  function say(text) {
    // Shown as "…" until the server says how it stored it (a pasted token becomes "•••• secret").
    sending = userLine("…", true);
    var body = { message: text };
    if (sessionId) body.session_id = sessionId;
    return stream(BASE + "/chat", body, text);
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text || busy || tooLong()) return;
    input.value = "";
    say(text);
  });

  if (data.open === "true") open(); else if (sessionId) restore();
})();

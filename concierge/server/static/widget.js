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
 * It streams the concierge's Server-Sent Events from a POST (fetch + ReadableStream), shows a
 * line per tool the concierge runs, confirmation cards (Confirm / Cancel) and a password
 * field for credentials, which go straight to the server's secret endpoint and never into
 * the chat. The conversation id is kept in localStorage and the history is reloaded from
 * the server, so a page reload continues the conversation.
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

  var CSS = [
    ":host { all: initial; }",
    "* { box-sizing: border-box; font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; }",
    ".vh { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;",
    "  clip: rect(0 0 0 0); white-space: nowrap; border: 0; }",
    ".launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; border: 0;",
    "  border-radius: 28px; padding: 14px 20px; background: #1f4fd1; color: #fff; font-size: 15px;",
    "  font-weight: 600; cursor: pointer; box-shadow: 0 6px 20px rgba(0,0,0,.25); }",
    ".launcher:focus-visible, button:focus-visible, textarea:focus-visible, input:focus-visible {",
    "  outline: 3px solid #f5a623; outline-offset: 2px; }",
    ".panel { position: fixed; right: 20px; bottom: 84px; z-index: 2147483000; width: 380px;",
    "  max-width: calc(100vw - 40px); height: 560px; max-height: calc(100vh - 110px); display: flex;",
    "  flex-direction: column; background: #fff; color: #1f2328; border-radius: 14px;",
    "  box-shadow: 0 12px 40px rgba(0,0,0,.28); overflow: hidden; font-size: 14px; }",
    ".panel[hidden] { display: none; }",
    "header { display: flex; align-items: center; gap: 8px; padding: 12px 14px; background: #1f4fd1; color: #fff; }",
    "header h2 { flex: 1; margin: 0; font-size: 16px; }",
    "header button { background: transparent; color: #fff; border: 1px solid rgba(255,255,255,.6);",
    "  border-radius: 6px; padding: 4px 8px; cursor: pointer; font-size: 12px; }",
    ".log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 8px;",
    "  background: #f6f8fa; }",
    ".msg { max-width: 88%; padding: 8px 11px; border-radius: 12px; white-space: pre-wrap;",
    "  overflow-wrap: anywhere; line-height: 1.4; }",
    ".user { align-self: flex-end; background: #1f4fd1; color: #fff; border-bottom-right-radius: 3px; }",
    ".bot { align-self: flex-start; background: #fff; border: 1px solid #d0d7de; border-bottom-left-radius: 3px; }",
    ".tool { align-self: flex-start; font-size: 12px; color: #57606a; font-family: ui-monospace, monospace;",
    "  padding: 2px 4px; }",
    ".tool.ok::before { content: '\\2713  '; color: #1a7f37; }",
    ".tool.err::before { content: '\\2717  '; color: #cf222e; }",
    ".tool.run::before { content: '\\2026  '; }",
    ".note { align-self: center; font-size: 12px; color: #57606a; }",
    ".error { align-self: stretch; background: #ffebe9; border: 1px solid #ff8182; color: #82071e;",
    "  padding: 8px 10px; border-radius: 8px; }",
    ".card { align-self: stretch; background: #fff8c5; border: 1px solid #d4a72c; border-radius: 10px;",
    "  padding: 10px 12px; display: flex; flex-direction: column; gap: 8px; }",
    ".card.done { background: #f6f8fa; border-color: #d0d7de; }",
    ".card h3 { margin: 0; font-size: 13px; }",
    ".card p { margin: 0; white-space: pre-wrap; }",
    ".card .row { display: flex; gap: 8px; }",
    ".card button { border-radius: 6px; padding: 6px 12px; cursor: pointer; font-size: 13px; border: 1px solid #8c959f; background: #fff; }",
    ".card button.primary { background: #1a7f37; border-color: #1a7f37; color: #fff; font-weight: 600; }",
    ".card input { width: 100%; padding: 7px 8px; border: 1px solid #8c959f; border-radius: 6px; font-size: 14px; }",
    ".card label { font-size: 13px; }",
    ".card .outcome { font-size: 12px; color: #57606a; }",
    "form.composer { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #d0d7de; background: #fff; }",
    "form.composer textarea { flex: 1; resize: none; height: 42px; padding: 9px; border: 1px solid #8c959f;",
    "  border-radius: 8px; font-size: 14px; }",
    "form.composer button { border: 0; border-radius: 8px; padding: 0 14px; background: #1f4fd1; color: #fff;",
    "  font-weight: 600; cursor: pointer; }",
    "form.composer button:disabled { opacity: .5; cursor: default; }",
    ".status { font-size: 12px; color: #57606a; padding: 0 12px 6px; min-height: 1em; background: #fff; }"
  ].join("\n");

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
  var input = el("textarea", { id: "cw-input", rows: "1", maxlength: "4000",
    placeholder: "Ask the concierge…", "aria-describedby": "cw-hint" });
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
  var tools = {};                // call_id -> tool line
  var replayPending = null;      // the request still open while the history is replayed

  function remember(id) {
    sessionId = id;
    try {
      if (id) localStorage.setItem(STORE, id); else localStorage.removeItem(STORE);
    } catch (e) { /* private mode: the conversation lasts as long as the page */ }
  }

  function scroll() { log.scrollTop = log.scrollHeight; }

  function add(node) { log.appendChild(node); scroll(); return node; }

  function setBusy(value, text) {
    busy = value;
    send.disabled = value;
    log.setAttribute("aria-busy", value ? "true" : "false");
    status.textContent = text || "";
  }

  function headers(json) {
    var h = { "Accept": "text/event-stream" };
    if (json) h["Content-Type"] = "application/json";
    if (KEY) h["Authorization"] = "Bearer " + KEY;
    return h;
  }

  // -- rendering events -----------------------------------------------------------------------

  function userLine(text) { add(el("div", { class: "msg user" }, text)); }

  function botText(text) {
    if (!bubble) bubble = add(el("div", { class: "msg bot", "aria-busy": "true" }, ""));
    bubble.textContent += text;
    scroll();
  }

  function endBubble() {
    if (bubble) bubble.setAttribute("aria-busy", "false");
    bubble = null;
  }

  function toolStarted(d) {
    endBubble();
    var line = add(el("div", { class: "tool run", "data-tool": d.name }, "Running " + d.name + "…"));
    tools[d.call_id] = line;
  }

  function toolDone(d) {
    var line = tools[d.call_id] ||
      add(el("div", { class: "tool", "data-tool": d.name }, ""));
    var result = d.result || {};
    var failed = !!d.error || result.status === "error";
    var detail = d.error ? (result.detail || d.error) : (result.status || "done");
    line.className = "tool " + (failed ? "err" : "ok");
    line.textContent = d.name + ": " + detail;
    line.setAttribute("data-status", failed ? "error" : "ok");
  }

  function parked(d) {
    // The call waits for the person: its result will get a fresh line below the card.
    var line = tools[d.call_id];
    if (line) {
      line.textContent = d.tool + ": waiting for you";
      delete tools[d.call_id];
    }
  }

  function asked(d, text) {
    endBubble();
    parked(d);
    add(el("div", { class: "note" }, text));
  }

  function errorLine(text) {
    endBubble();
    add(el("div", { class: "error", role: "alert" }, text));
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
    var card = el("form", { class: "card", "aria-labelledby": id + "-h", "data-secret": d.id });
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
    card.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var value = field.value;
      if (!value.trim()) { field.focus(); return; }
      field.value = "";
      label.remove();
      field.remove();
      card.classList.add("done");
      row.replaceWith(el("div", { class: "outcome" }, "Credential sent to the server."));
      input.focus();
      stream(BASE + "/sessions/" + encodeURIComponent(sessionId) + "/secret", { id: d.id, value: value });
    });
    no.addEventListener("click", function () {
      field.value = "";
      label.remove();
      field.remove();
      card.classList.add("done");
      row.replaceWith(el("div", { class: "outcome" }, "Cancelled; nothing was changed."));
      input.focus();
    });
    status.textContent = "Waiting for a credential.";
    if (!replay || !panel.hidden) field.focus();
  }

  function render(kind, d, replay) {
    switch (kind) {
      case "user_message": userLine(d.text); break;
      case "run_started":
        if (d.session_id) remember(d.session_id);
        break;
      case "agent_text_delta": botText(d.text || ""); break;
      case "agent_tool_call": toolStarted(d); break;
      case "agent_tool_result": toolDone(d); break;
      case "confirmation_required":
        if (!replay) confirmationCard(d, false);
        else if (d.id !== replayPending) asked(d, "Asked to confirm: " + d.summary);
        break;
      case "secret_required":
        if (!replay) secretCard(d, false);
        else if (d.id !== replayPending) asked(d, "Asked for " + d.purpose + ".");
        break;
      case "agent_finish":
        endBubble();
        if (d.session_id) remember(d.session_id);
        if (!replay && d.stop_reason === "end_turn") status.textContent = "";
        break;
      case "agent_error": errorLine(d.message || "Something went wrong."); break;
      case "user_confirm":
        add(el("div", { class: "note" }, d.approved ? "You confirmed the change." : "You cancelled the change."));
        break;
      case "user_secret": add(el("div", { class: "note" }, "You handed over a credential privately.")); break;
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
    if (response.status === 404 && sessionId) remember(null);
    return detail;
  }

  async function stream(url, body) {
    setBusy(true, "The concierge is working…");
    try {
      var response = await fetch(url, { method: "POST", headers: headers(true), body: JSON.stringify(body) });
      if (!response.ok) { errorLine(await failure(response)); return; }
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
      var waiting = log.querySelector(".card:last-child button:not([disabled]), .card:last-child input:not([disabled])");
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
      var pending = log.querySelector(".card button.primary:not([disabled]), .card input:not([disabled])");
      (pending || input).focus();
    });
  }

  function shut() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }

  launcher.addEventListener("click", function () { panel.hidden ? open() : shut(); });
  close.addEventListener("click", shut);
  panel.addEventListener("keydown", function (ev) { if (ev.key === "Escape") shut(); });
  reset.addEventListener("click", function () {
    remember(null);
    tools = {};
    log.textContent = "";
    status.textContent = "New conversation.";
    greet();
    input.focus();
  });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text || busy) return;
    input.value = "";
    userLine(text);
    var body = { message: text };
    if (sessionId) body.session_id = sessionId;
    stream(BASE + "/chat", body);
  });

  if (data.open === "true") open(); else if (sessionId) restore();
})();

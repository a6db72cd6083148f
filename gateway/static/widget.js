/*
 * handoff-gateway chat widget. Plain JavaScript, no build step, no dependencies.
 *
 * Embed:  <script src="https://chat.example.com/widget.js" data-options='{"title":"Help"}'></script>
 * or call window.HandoffWidget.init({...}) yourself. Options:
 *   gateway            base URL of the gateway (default: where this script came from)
 *   title              header text
 *   identity           JSON string of the signed-in customer {id, name, email, tier, language, country}
 *   identitySignature  hex HMAC-SHA256 of exactly that string, made by your backend with IDENTITY_SECRET
 *   open               start opened
 *
 * The conversation token and the last message id live in localStorage, so a reload resumes the chat with its
 * history, and a reconnect after a network drop asks only for what it missed. Messages typed while offline
 * wait in an outbox (also in localStorage) and are sent once connected; the server stores each client_id
 * once, so a resend never duplicates.
 */
(function () {
  "use strict";
  if (window.HandoffWidget && window.HandoffWidget.loaded) return;

  var script = document.currentScript || document.querySelector('script[src*="widget.js"]');

  var CSS = [
    ":host{all:initial;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:15px;color:#1d2330}",
    ".launcher{position:fixed;right:20px;bottom:20px;width:60px;height:60px;border-radius:50%;border:0;display:flex;align-items:center;justify-content:center;",
    "background:#2f5bea;color:#fff;font-size:26px;cursor:pointer;box-shadow:0 6px 20px rgba(0,0,0,.25);z-index:2147483000}",
    ".launcher:focus-visible{outline:3px solid #9db4ff;outline-offset:2px}",
    ".panel{position:fixed;right:20px;bottom:92px;width:360px;max-width:calc(100vw - 40px);height:520px;",
    "max-height:calc(100vh - 120px);display:none;flex-direction:column;background:#fff;border-radius:14px;",
    "box-shadow:0 12px 40px rgba(0,0,0,.25);overflow:hidden;z-index:2147483000}",
    ".panel.open{display:flex}",
    ".header{background:#2f5bea;color:#fff;padding:12px 14px;display:flex;align-items:center;gap:8px}",
    ".header .title{font-weight:600;flex:1}",
    ".status{font-size:12px;opacity:.9}",
    ".status::before{content:'';display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:5px;background:#f5b342}",
    ".status.online::before{background:#3ddc84}",
    ".close{background:none;border:0;color:#fff;font-size:20px;cursor:pointer}",
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f5f7fb}",
    ".msg{max-width:80%;padding:8px 11px;border-radius:12px;line-height:1.35;white-space:pre-wrap;word-wrap:break-word}",
    ".msg .who{display:block;font-size:11px;font-weight:600;opacity:.7;margin-bottom:2px}",
    ".msg.customer{align-self:flex-end;background:#2f5bea;color:#fff;border-bottom-right-radius:4px}",
    ".msg.bot{align-self:flex-start;background:#fff;border:1px solid #dfe3ec;border-bottom-left-radius:4px}",
    ".msg.agent{align-self:flex-start;background:#e6f6ec;border:1px solid #b6e2c4;border-bottom-left-radius:4px}",
    ".msg.system{align-self:center;background:none;color:#5b6475;font-size:13px;font-style:italic;text-align:center}",
    ".msg.pending{opacity:.6}",
    ".msg.rejected{opacity:.5;text-decoration:line-through}",
    ".msg.pending::after{content:' \\2022 sending';font-size:11px}",
    ".notice{align-self:center;font-size:12px;color:#a33;background:#fdecec;border-radius:8px;padding:4px 8px}",
    ".banner{display:none;padding:8px 12px;font-size:13px;background:#fff7e0;border-bottom:1px solid #f0e0b0}",
    ".banner.show{display:block}",
    "form{display:flex;border-top:1px solid #dfe3ec;background:#fff}",
    "textarea{flex:1;border:0;padding:12px;font:inherit;resize:none;height:44px;outline:none}",
    "button.send{border:0;background:none;color:#2f5bea;font-weight:600;padding:0 16px;cursor:pointer}",
    "button.send:disabled{color:#aab}",
    // The callback form under an offer's message, and the banner's cancel button.
    "form.callback{display:block;align-self:stretch;border:1px solid #dfe3ec;border-radius:12px;background:#fff;padding:10px 12px;font-size:14px}",
    "form.callback fieldset{border:0;margin:0 0 8px;padding:0}",
    "form.callback legend{font-weight:600;padding:0;margin-bottom:4px}",
    "form.callback label{display:block;margin:3px 0}",
    "form.callback label.choice{display:flex;gap:6px;align-items:baseline}",
    "form.callback input[type=tel]{display:block;width:100%;box-sizing:border-box;margin-top:3px;padding:6px 8px;font:inherit;border:1px solid #c5cbd8;border-radius:6px}",
    "form.callback .hint{color:#a33;font-size:13px;margin:0 0 6px}",
    "form.callback .hint:empty{display:none}",
    "form.callback button,.callback-bar button{border:0;border-radius:8px;background:#2f5bea;color:#fff;font:inherit;font-weight:600;padding:7px 14px;cursor:pointer}",
    "form.callback button:disabled,.callback-bar button:disabled{background:#aab;cursor:default}",
    ".callback-bar{display:none;padding:8px 12px;border-top:1px solid #dfe3ec;background:#fff}",
    ".callback-bar.show{display:block}"
  ].join("");

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 12);
  }

  function idKey(id) {
    var parts = String(id).split("-");
    return [Number(parts[0]), Number(parts[1] || 0)];
  }

  function idAfter(a, b) {
    if (!b) return true;
    var x = idKey(a), y = idKey(b);
    return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
  }

  function Widget(options) {
    this.options = options;
    this.base = (options.gateway || new URL(script ? script.src : location.href).origin).replace(/\/$/, "");
    this.storeKey = "handoff-widget:" + this.base;
    this.state = this.load();
    this.rendered = {};          // message id -> element
    this.byClientId = {};        // client_id -> element, for our own messages
    this.offerForm = null;       // the callback form of the latest offer, while it can still be answered
    this.pendingChoice = null;   // a choice waiting for the menu that confirms a changed number
    this.ws = null;
    this.attempt = 0;
    this.connected = false;
    this.build();
    this.renderOutbox();
    this.connect();
    var self = this;
    window.addEventListener("online", function () { self.reconnectSoon(0); });
  }

  Widget.prototype.load = function () {
    try {
      var saved = JSON.parse(localStorage.getItem(this.storeKey) || "{}");
      return { token: saved.token || null, lastId: saved.lastId || null, outbox: saved.outbox || [] };
    } catch (e) {
      return { token: null, lastId: null, outbox: [] };
    }
  };

  Widget.prototype.save = function () {
    try { localStorage.setItem(this.storeKey, JSON.stringify(this.state)); } catch (e) { /* private mode */ }
  };

  Widget.prototype.build = function () {
    var host = document.createElement("div");
    host.id = "handoff-widget";
    document.body.appendChild(host);
    var root = host.attachShadow({ mode: "open" });
    this.root = root;
    // A constructed stylesheet is not inline style, so host pages need no 'unsafe-inline' in their CSP.
    var sheet = null;
    try { sheet = new CSSStyleSheet(); sheet.replaceSync(CSS); root.adoptedStyleSheets = [sheet]; } catch (e) { sheet = null; }
    root.innerHTML =
      (sheet ? "" : "<style>" + CSS + "</style>") +
      '<button class="launcher" aria-label="Open chat" part="launcher">' +
      '<svg width="28" height="28" viewBox="0 0 24 24" fill="currentColor" aria-hidden="true">' +
      '<path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/></svg>' +
      '</button>' +
      '<section class="panel" role="dialog" aria-label="Chat">' +
      '<div class="header"><span class="title"></span><span class="status">Connecting</span>' +
      '<button class="close" aria-label="Close chat">&times;</button></div>' +
      '<div class="banner" role="status"></div>' +
      '<div class="log" role="log" aria-live="polite"></div>' +
      '<div class="callback-bar"></div>' +
      '<form><textarea placeholder="Type your message" aria-label="Message" maxlength="4000"></textarea>' +
      '<button class="send" type="submit">Send</button></form></section>';
    this.panel = root.querySelector(".panel");
    this.log = root.querySelector(".log");
    this.status = root.querySelector(".status");
    this.banner = root.querySelector(".banner");
    this.callbackBar = root.querySelector(".callback-bar");
    this.input = root.querySelector("textarea");
    root.querySelector(".title").textContent = this.options.title || "Chat with us";
    var self = this;
    root.querySelector(".launcher").addEventListener("click", function () { self.toggle(); });
    root.querySelector(".close").addEventListener("click", function () { self.toggle(false); });
    root.querySelector("form").addEventListener("submit", function (e) { e.preventDefault(); self.submit(); });
    this.input.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); self.submit(); }
    });
    // "Typing" reaches an agent, never the bot; the server passes on at most one every two seconds.
    this.input.addEventListener("input", function () {
      var now = Date.now();
      if (self.ws && self.ws.readyState === 1 && now - (self.lastTyping || 0) > 2000) {
        self.lastTyping = now;
        self.ws.send(JSON.stringify({ type: "typing" }));
      }
    });
    var wasOpen = false;
    try { wasOpen = sessionStorage.getItem(this.storeKey + ":open") === "1"; } catch (e) { /* ignore */ }
    if (this.options.open || wasOpen) this.toggle(true);
  };

  Widget.prototype.toggle = function (open) {
    var show = open === undefined ? !this.panel.classList.contains("open") : open;
    this.panel.classList.toggle("open", show);
    try { sessionStorage.setItem(this.storeKey + ":open", show ? "1" : "0"); } catch (e) { /* ignore */ }
    if (show) { this.input.focus(); this.scroll(); }
  };

  Widget.prototype.socketUrl = function () {
    var url = new URL(this.base + "/ws/chat");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.state.token) {
      url.searchParams.set("token", this.state.token);
      if (this.state.lastId && this.hasHistory) url.searchParams.set("after", this.state.lastId);
    } else if (this.options.identity) {
      url.searchParams.set("identity", this.options.identity);
      if (this.options.identitySignature) url.searchParams.set("identity_sig", this.options.identitySignature);
    }
    return url.toString();
  };

  Widget.prototype.connect = function () {
    var self = this;
    if (this.refused) return;
    var ws = new WebSocket(this.socketUrl());
    var opened = false;
    this.ws = ws;
    ws.onopen = function () { opened = true; };
    ws.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      self.onFrame(frame);
    };
    ws.onclose = function (event) {
      if (self.ws !== ws) return;
      self.setConnected(false);
      if (event.code === 4404) {         // the conversation has ended or expired: start a new one
        self.state.token = null;
        self.state.lastId = null;
        self.save();
        self.reconnectSoon(0);
        return;
      }
      // A refused upgrade looks to a script like any failed connection: ask the gateway whether this
      // page's origin is the reason, rather than retrying for ever without a word.
      if (!opened) { self.checkOrigin(); return; }
      self.reconnectSoon();
    };
    ws.onerror = function () { /* onclose follows and reconnects */ };
  };

  Widget.prototype.checkOrigin = function () {
    var self = this;
    var retry = function () { self.reconnectSoon(); };
    if (!window.fetch) { retry(); return; }
    fetch(this.base + "/ws/chat/check", { cache: "no-store" }).then(function (response) {
      if (response.status !== 403) { retry(); return; }
      return response.json().then(function (body) {
        if (body && body.code === "origin_not_allowed") self.refuse(); else retry();
      });
    }).catch(retry);
  };

  Widget.prototype.refuse = function () {
    this.refused = true;
    this.status.textContent = "Unavailable";
    this.status.classList.remove("online");
    this.showNotice("This site is not allowed to open the chat.");
    this.input.disabled = true;
  };

  Widget.prototype.reconnectSoon = function (delay) {
    var self = this;
    if (this.timer) return;
    if (this.ws && this.ws.readyState <= 1 && delay !== 0) return;
    var wait = delay !== undefined ? delay : Math.min(30000, 500 * Math.pow(2, this.attempt++)) * (0.5 + Math.random() / 2);
    this.timer = setTimeout(function () {
      self.timer = null;
      if (self.ws && self.ws.readyState <= 1) return;
      self.connect();
    }, wait);
  };

  Widget.prototype.setConnected = function (on) {
    this.connected = on;
    this.status.textContent = on ? "Online" : "Reconnecting";
    this.status.classList.toggle("online", on);
  };

  Widget.prototype.onFrame = function (frame) {
    switch (frame.type) {
      case "session":
        // A new chat's conversation opens with its first message: a second session frame then brings its
        // token (history empty, the outbox already on its way).
        var opening = this.connected && !this.state.token;
        this.state.token = frame.token || null;
        if (opening) { this.save(); break; }
        this.attempt = 0;
        this.hasHistory = true;
        this.save();
        this.setConnected(true);
        for (var i = 0; i < frame.history.length; i++) this.showMessage(frame.history[i]);
        if (frame.handoff) this.showHandoff(frame.handoff);
        this.flushOutbox();
        break;
      case "message":
        this.showMessage(frame);
        break;
      case "ack":
        this.acknowledge(frame.client_id, frame.id);
        break;
      case "handoff":
        this.showHandoff(frame);
        break;
      case "typing":
        this.showTyping();
        break;
      case "error":
        this.showNotice(frame.detail || frame.code);
        if (frame.code === "rate_limited" && frame.client_id) this.retryLater(frame.client_id, frame.retry_after_seconds);
        else if (frame.client_id) this.reject(frame.client_id);
        break;
    }
  };

  Widget.prototype.showMessage = function (m) {
    if (m.sender === "agent" && this.typing && this.typing.parentNode) this.typing.parentNode.removeChild(this.typing);
    if (idAfter(m.id, this.state.lastId)) {
      this.state.lastId = m.id;
      this.save();
    }
    if (this.rendered[m.id]) return;
    var el = m.client_id && this.byClientId[m.client_id];
    if (el) {
      el.classList.remove("pending");
      this.dropFromOutbox(m.client_id);
    } else {
      el = this.bubble(m.sender, m.text);
      if (m.client_id) this.byClientId[m.client_id] = el;
    }
    el.dataset.id = m.id;
    this.rendered[m.id] = el;
    if (m.callback_offer) this.showCallbackOffer(m, el);
    else if (m.sender !== "customer") this.offerAnswered(m);
  };

  // -- callbacks ------------------------------------------------------------------------------------------
  // An offer's message already lists the times as a numbered menu; the form only answers it the same way a
  // customer would by typing: the number (when it changed), then the chosen choice's n, as ordinary messages.

  Widget.prototype.showCallbackOffer = function (m, after) {
    var self = this, offer = m.callback_offer, choices = offer.choices || [];
    this.dropOfferForm();                       // a newer menu (a changed number) replaces the last one
    var form = document.createElement("form");
    form.className = "callback";
    form.setAttribute("aria-label", "Arrange a callback");
    var number = document.createElement("label");
    number.appendChild(document.createTextNode("Your phone number"));
    var input = document.createElement("input");
    input.type = "tel";
    input.name = "number";
    input.autocomplete = "tel";
    input.required = true;
    input.maxLength = 40;
    input.value = offer.number || "";
    number.appendChild(input);
    var times = document.createElement("fieldset");
    var legend = document.createElement("legend");
    legend.textContent = "When should we call?";
    times.appendChild(legend);
    var group = "callback-" + m.id;
    for (var i = 0; i < choices.length; i++) {
      var option = document.createElement("label");
      option.className = "choice";
      var radio = document.createElement("input");
      radio.type = "radio";
      radio.name = group;
      radio.value = String(choices[i].n);
      radio.required = true;
      if (i === 0) radio.checked = true;
      option.appendChild(radio);
      option.appendChild(document.createTextNode(choices[i].label));
      times.appendChild(option);
    }
    var hint = document.createElement("p");
    hint.className = "hint";
    hint.setAttribute("role", "alert");
    var button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Call me back";
    form.appendChild(number);
    form.appendChild(times);
    form.appendChild(hint);
    form.appendChild(button);
    form.addEventListener("submit", function (e) { e.preventDefault(); self.answerOffer(form); });
    form.offer = offer;
    this.lastOffer = offer;
    if (after.nextSibling) this.log.insertBefore(form, after.nextSibling); else this.log.appendChild(form);
    this.offerForm = form;
    this.scroll();
    var pending = this.pendingChoice;
    if (pending) {                               // the changed number was accepted: now the time
      this.pendingChoice = null;
      var again = this.matchChoice(choices, pending);
      if (again) { this.setFormBusy(form, true); this.sendText(String(again.n)); }
    }
  };

  Widget.prototype.answerOffer = function (form) {
    var offer = form.offer, hint = form.querySelector(".hint");
    var typed = form.querySelector("input[type=tel]").value.trim();
    var picked = form.querySelector("input[type=radio]:checked");
    if (!typed) { hint.textContent = "Please enter a phone number."; return; }
    if (!picked) { hint.textContent = "Please choose a time."; return; }
    hint.textContent = "";
    var choice = null;
    for (var i = 0; i < (offer.choices || []).length; i++) {
      if (String(offer.choices[i].n) === picked.value) choice = offer.choices[i];
    }
    if (!choice) return;
    this.setFormBusy(form, true);
    var digits = function (s) { return String(s || "").replace(/[^0-9]/g, ""); };
    if (!offer.number || digits(typed) !== digits(offer.number)) {
      // The gateway answers a number with the menu again (for the new number); the choice follows it, so
      // a number it cannot read never sends a time for the old one.
      this.pendingChoice = choice;
      this.sendText(typed);
    } else {
      this.sendText(String(choice.n));
    }
  };

  Widget.prototype.matchChoice = function (choices, wanted) {
    var at = function (c) { return c.asap ? "asap" : new Date(c.start).getTime(); };
    for (var i = 0; i < choices.length; i++) if (at(choices[i]) === at(wanted)) return choices[i];
    return null;
  };

  Widget.prototype.setFormBusy = function (form, busy) {
    var fields = form.querySelectorAll("input,button");
    for (var i = 0; i < fields.length; i++) fields[i].disabled = busy;
  };

  // Any later word from the gateway or an agent settles the offer: the confirmation, "not now", a refused
  // number (then the form is usable again, to correct it).
  Widget.prototype.offerAnswered = function (m) {
    if (!this.offerForm) return;
    if (this.pendingChoice && m.sender === "system") {
      this.pendingChoice = null;
      this.setFormBusy(this.offerForm, false);
      this.offerForm.querySelector(".hint").textContent = "That number didn't work: please check it.";
      return;
    }
    this.dropOfferForm();
  };

  Widget.prototype.dropOfferForm = function () {
    if (this.offerForm && this.offerForm.parentNode) this.offerForm.parentNode.removeChild(this.offerForm);
    this.offerForm = null;
  };

  // In the time zone the offer's times were written in (the number's), named, as the messages say it.
  Widget.prototype.callbackTime = function (iso) {
    var at = new Date(iso), zone = this.lastOffer && this.lastOffer.timezone;
    var style = { weekday: "long", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZoneName: "short" };
    if (isNaN(at.getTime())) return iso;
    if (zone) {
      try { return at.toLocaleString([], Object.assign({ timeZone: zone }, style)); } catch (e) { /* unknown zone */ }
    }
    return at.toLocaleString([], style);
  };

  Widget.prototype.showCancelCallback = function (show) {
    var self = this;
    this.callbackBar.classList.toggle("show", !!show);
    if (!show) {
      if (this.cancelButton && this.cancelButton.parentNode) this.cancelButton.parentNode.removeChild(this.cancelButton);
      return;
    }
    if (!this.cancelButton) {
      this.cancelButton = document.createElement("button");
      this.cancelButton.type = "button";
      this.cancelButton.className = "cancel-callback";
      this.cancelButton.textContent = "Cancel callback";
      this.cancelButton.addEventListener("click", function () {
        self.cancelButton.disabled = true;
        self.sendText("cancel callback");
      });
    }
    this.cancelButton.disabled = false;
    this.callbackBar.appendChild(this.cancelButton);
  };

  Widget.prototype.bubble = function (sender, text) {
    var el = document.createElement("div");
    el.className = "msg " + sender;
    el.setAttribute("data-sender", sender);
    var names = { bot: "Assistant", agent: "Agent" };
    if (names[sender]) {
      var who = document.createElement("span");
      who.className = "who";
      who.textContent = names[sender];
      el.appendChild(who);
    }
    el.appendChild(document.createTextNode(text));
    this.log.appendChild(el);
    this.scroll();
    return el;
  };

  Widget.prototype.showTyping = function () {
    var self = this;
    if (!this.typing) {
      this.typing = document.createElement("div");
      this.typing.className = "notice typing";
      this.typing.textContent = "The agent is typing…";
    }
    this.log.appendChild(this.typing);
    this.scroll();
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(function () { if (self.typing.parentNode) self.typing.parentNode.removeChild(self.typing); }, 4000);
  };

  // A one-line status above the conversation; the full explanation is the system message in the log.
  Widget.prototype.showHandoff = function (frame) {
    var team = frame.queue_name || frame.queue || "our team";
    var text = "";
    if (frame.status === "queued") {
      text = "Waiting for a person from " + team + ".";
      if (frame.position) text += " You're number " + frame.position + " in line";
      if (frame.position && frame.eta_seconds) text += ", about " + Math.max(1, Math.round(frame.eta_seconds / 60)) + " min";
      if (frame.position) text += ".";
    }
    else if (frame.status === "offered") text = "A person from " + team + " is about to join.";
    else if (frame.status === "assigned") {
      text = frame.agent_name ? "You're chatting with " + frame.agent_name + " (" + team + ")." : "You're chatting with " + team + ".";
    }
    else if (frame.status === "async") {
      text = team + " will reply here";
      if (frame.back_at) {
        var back = new Date(frame.back_at);
        if (!isNaN(back.getTime()) && back > new Date()) {
          text += " after they reopen (" + back.toLocaleString([], { weekday: "long", hour: "2-digit", minute: "2-digit" }) + ")";
        }
      }
      text += ". You don't need to wait here.";
    }
    // A promised callback: a session frame (a reload) says only "callback"; live frames say which step.
    var step = frame.status === "callback" ? (frame.callback || "scheduled") : "";
    var promised = step === "scheduled" || step === "rescheduled" || step === "retry";
    if (promised) {
      this.dropOfferForm();
      text = team + " will call you back";
      var when = step === "retry" ? frame.due_at || frame.slot_start : frame.slot_start;
      if (when) text += " (" + this.callbackTime(when) + ")";
      text += ".";
    }
    else if (step === "due") text = team + " is about to call you back.";
    this.banner.textContent = text;
    this.banner.setAttribute("data-status", frame.status || "");
    this.banner.setAttribute("data-callback", step);
    this.banner.classList.toggle("show", !!text);
    this.showCancelCallback(promised);
  };

  Widget.prototype.showNotice = function (text) {
    var el = document.createElement("div");
    el.className = "notice";
    el.textContent = text;
    this.log.appendChild(el);
    this.scroll();
  };

  Widget.prototype.scroll = function () { this.log.scrollTop = this.log.scrollHeight; };

  Widget.prototype.submit = function () {
    var text = this.input.value.trim();
    if (!text) return;
    this.input.value = "";
    this.sendText(text);
  };

  // Every customer message (typed, or from the callback form) goes this way: outbox, pending bubble, resent
  // with the same client_id until acknowledged.
  Widget.prototype.sendText = function (text) {
    var item = { client_id: uuid(), text: text };
    this.state.outbox.push(item);
    this.save();
    var el = this.bubble("customer", text);
    el.classList.add("pending");
    this.byClientId[item.client_id] = el;
    this.sendItem(item);
  };

  Widget.prototype.renderOutbox = function () {
    // Messages typed before a reload that the server never acknowledged: show them as still sending.
    for (var i = 0; i < this.state.outbox.length; i++) {
      var item = this.state.outbox[i];
      var el = this.bubble("customer", item.text);
      el.classList.add("pending");
      this.byClientId[item.client_id] = el;
    }
  };

  Widget.prototype.sendItem = function (item) {
    if (this.connected && this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify({ type: "message", text: item.text, client_id: item.client_id }));
    }
  };

  Widget.prototype.flushOutbox = function () {
    for (var i = 0; i < this.state.outbox.length; i++) this.sendItem(this.state.outbox[i]);
  };

  Widget.prototype.acknowledge = function (clientId, id) {
    var el = this.byClientId[clientId];
    if (el) {
      el.classList.remove("pending");
      el.dataset.id = id;
      this.rendered[id] = el;
    }
    this.dropFromOutbox(clientId);
  };

  Widget.prototype.retryLater = function (clientId, seconds) {
    // Not refused, only early: the message stays pending and is sent again when the gateway said.
    var self = this;
    setTimeout(function () {
      for (var i = 0; i < self.state.outbox.length; i++) {
        if (self.state.outbox[i].client_id === clientId) self.sendItem(self.state.outbox[i]);
      }
    }, Math.max(1, seconds || 1) * 1000);
  };

  Widget.prototype.reject = function (clientId) {
    // The server refused this message (too long, say): it will never be stored, so stop resending it.
    var el = this.byClientId[clientId];
    if (el) { el.classList.remove("pending"); el.classList.add("rejected"); }
    this.dropFromOutbox(clientId);
  };

  Widget.prototype.dropFromOutbox = function (clientId) {
    var before = this.state.outbox.length;
    this.state.outbox = this.state.outbox.filter(function (x) { return x.client_id !== clientId; });
    if (this.state.outbox.length !== before) this.save();
  };

  function readOptions() {
    if (!script) return {};
    try { return JSON.parse(script.getAttribute("data-options") || "{}"); } catch (e) { return {}; }
  }

  var api = {
    loaded: true,
    instance: null,
    init: function (options) {
      if (api.instance) return api.instance;
      api.instance = new Widget(options || {});
      return api.instance;
    }
  };
  window.HandoffWidget = api;

  if (script && script.getAttribute("data-manual") === null) {
    var start = function () { api.init(readOptions()); };
    if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
  }
})();

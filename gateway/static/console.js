/* Agent console: plain JavaScript, no build step. REST for actions, /ws/agent for live events. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var token = sessionStorage.getItem("agent-token") || "";
  var current = null;   // conversation id shown
  var socket = null;
  var offers = {};
  var lastSeen = {};    // conversation id -> last message id shown: a re-follow replays only what came after
  var signedOut = null; // why the server signed this console out (close code 4401): do not reconnect
  var callbackRows = {}; // conversation id -> its row in Callbacks: an open Move or Cancel form survives refreshes

  function api(method, path, body) {
    return fetch(path, {
      method: method,
      headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) { var e = new Error(data.detail || data.code); e.code = data.code; e.status = r.status; throw e; }
        return data;
      });
    });
  }

  function toast(text) {
    var t = $("toast"); t.textContent = text; t.classList.remove("hidden");
    clearTimeout(toast.timer); toast.timer = setTimeout(function () { t.classList.add("hidden"); }, 4000);
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function signIn(t) {
    token = t;
    return api("GET", "/api/agents/me").then(function (me) {
      sessionStorage.setItem("agent-token", token);
      $("signin").classList.add("hidden"); $("app").classList.remove("hidden");
      $("me").textContent = me.name + " · " + (me.skills.join(", ") || "no skills");
      $("status").value = me.presence.status; $("capacity").value = me.presence.capacity || 3;
      signedOut = null; connect(); refresh();
      clearInterval(signIn.timer);
      signIn.timer = setInterval(refresh, 15000);  // the socket pushes changes; this only catches up after a drop
    }).catch(function (e) { $("signin-error").textContent = e.message; sessionStorage.removeItem("agent-token"); });
  }

  function setPresence() {
    api("POST", "/api/agents/me/presence", { status: $("status").value, capacity: Number($("capacity").value) })
      .then(function (s) { toast("You are " + s.status + " (capacity " + s.capacity + ")"); refresh(); })
      .catch(function (e) { toast(e.message); });
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/agent");
    socket.onopen = function () { socket.send(JSON.stringify({ type: "auth", token: token })); };
    socket.onmessage = function (event) { onFrame(JSON.parse(event.data)); };
    socket.onclose = function (event) {
      if (event.code === 4401) { signOut(signedOut || "Signed out: this agent's token is no longer valid."); return; }
      setTimeout(connect, 2000);
    };
  }

  function follow(id) {
    if (socket && socket.readyState === 1) {
      socket.send(JSON.stringify({ type: "follow", conversation_id: id, after: lastSeen[id] || undefined }));
    }
  }

  function signOut(why) {
    sessionStorage.removeItem("agent-token"); token = ""; clearInterval(signIn.timer);
    $("app").classList.add("hidden"); $("signin").classList.remove("hidden");
    $("signin-error").textContent = why;
  }

  function onFrame(f) {
    if (f.type === "hello") { if (current) follow(current); }  // a reconnect: replay what was missed
    else if (f.type === "signed_out") signedOut = f.detail;
    else if (f.type === "unfollowed") {
      // Another agent took it, or it left the queues you serve: nothing more of it reaches this console.
      if (f.conversation_id === current) { toast(f.detail); $("actions").classList.add("hidden"); current = null; }
      refresh();
    }
    else if (f.type === "offer") { offers[f.conversation_id] = f; renderOffers(); toast("New conversation offered"); }
    else if (f.type === "offer_withdrawn") { delete offers[f.conversation_id]; renderOffers(); }
    else if (f.type === "assigned" || f.type === "released") refresh();
    else if (f.type === "queues") { renderQueues(f); refreshLists(); }
    else if (f.type === "delivery_failed") {
      toast("Not delivered to the customer: " + (f.detail || "unknown error"));
      if (f.conversation_id === current) open(current);  // redraw the transcript with the failure marked
    }
    else if (f.type === "message" && f.conversation_id === current) { addMessage(f); $("typing").textContent = ""; }
    // A step of the open conversation (a call put on hold, an agent joining, a transfer that failed): redraw.
    else if ((f.type === "status" || f.type === "resync") && f.conversation_id === current) open(current);
    else if (f.type === "typing" && f.conversation_id === current) {
      $("typing").textContent = "The customer is typing…";
      clearTimeout(onFrame.typing); onFrame.typing = setTimeout(function () { $("typing").textContent = ""; }, 4000);
    }
  }

  function refresh() {
    refreshLists();
    api("GET", "/api/queues").then(renderQueues);
  }

  function refreshLists() {
    api("GET", "/api/conversations?state=offered").then(function (d) {
      var fresh = {};
      d.conversations.forEach(function (c) { fresh[c.id] = offers[c.id] || { conversation_id: c.id, queue: c.queue }; });
      offers = fresh; renderOffers();
    });
    api("GET", "/api/conversations?state=assigned").then(function (d) { renderList("mine", d.conversations, false); });
    Promise.all([api("GET", "/api/conversations?state=queued"), api("GET", "/api/conversations?state=async")])
      .then(function (r) { renderList("waiting", r[0].conversations.concat(r[1].conversations), true); });
    refreshCallbacks();
  }

  // -- callbacks: upcoming (scheduled), due (being offered or dialled) and failed, of the queues you serve --
  function refreshCallbacks() {
    api("GET", "/api/callbacks").then(function (d) { renderCallbacks(d.callbacks); })
      .catch(function (e) { toast("Callbacks: " + e.message); });
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function when(iso) {
    return new Date(iso).toLocaleString([], { weekday: "short", day: "numeric", month: "short", hour: "2-digit",
                                                minute: "2-digit", hour12: false });
  }

  function slotText(c) {
    if (!c.slot_start) return "no slot";
    if (c.asap) return "as soon as possible from " + when(c.slot_start);
    if (!c.slot_end) return "from " + when(c.slot_start);
    var end = new Date(c.slot_end);
    return when(c.slot_start) + "-" + pad(end.getHours()) + ":" + pad(end.getMinutes());
  }

  // A datetime-local value is the browser's local time: sent with the browser's offset, so the gateway
  // knows exactly which moment the agent meant.
  function withOffset(d) {
    var offset = -d.getTimezoneOffset(), sign = offset >= 0 ? "+" : "-";
    offset = Math.abs(offset);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" +
      pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + sign + pad(Math.floor(offset / 60)) + ":" + pad(offset % 60);
  }

  function localInput(iso) {
    var d = new Date(iso);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function renderCallbacks(list) {
    var box = $("callbacks"), seen = {};
    var none = box.querySelector(".none");
    list.forEach(function (c, i) {
      var row = callbackRows[c.conversation_id] || callbackRow(c.conversation_id);
      seen[c.conversation_id] = true;
      row.data = c;
      row.className = "item callback " + c.state;
      row.info.textContent = "";
      var head = el("div");
      head.appendChild(el("span", "state", c.state));
      head.appendChild(document.createTextNode(" " + slotText(c)));
      row.info.appendChild(head);
      row.info.appendChild(el("div", "", (c.customer_name || "Customer") + " · " + (c.number || "no number") + " · " + c.channel));
      var facts = [c.queue, "attempts " + c.attempts + "/" + c.max_attempts];
      if (c.last_outcome) facts.push("last outcome: " + c.last_outcome);
      if (c.due_at && c.state !== "failed" && c.due_at !== c.slot_start) facts.push("next try " + when(c.due_at));
      row.info.appendChild(el("div", "meta", facts.join(" · ")));
      if (c.note) row.info.appendChild(el("div", "meta", "Note: " + c.note));
      row.moveButton.classList.toggle("hidden", c.state !== "scheduled");
      row.cancelButton.classList.toggle("hidden", c.state === "failed");
      if (row.form && ((row.form.kind === "move" && c.state !== "scheduled") || c.state === "failed")) closeForm(row);
      if (box.children[i] !== row) box.insertBefore(row, box.children[i] || null);  // moved only when out of place
    });
    Object.keys(callbackRows).forEach(function (id) {
      if (!seen[id]) { box.removeChild(callbackRows[id]); delete callbackRows[id]; }
    });
    if (!list.length && !none) box.appendChild(el("div", "meta none", "None."));
    if (list.length && none) box.removeChild(none);
  }

  function callbackRow(id) {
    var row = el("div", "item callback");
    row.dataset.id = id;
    row.info = el("div");
    row.moveButton = el("button", "", "Move");
    row.cancelButton = el("button", "", "Cancel");
    row.moveButton.type = row.cancelButton.type = "button";
    row.moveButton.onclick = function () { openForm(row, "move"); };
    row.cancelButton.onclick = function () { openForm(row, "cancel"); };
    row.appendChild(row.info); row.appendChild(row.moveButton); row.appendChild(row.cancelButton);
    callbackRows[id] = row;
    return row;
  }

  function closeForm(row) {
    if (row.form && row.form.parentNode) row.removeChild(row.form);
    row.form = null;
  }

  function openForm(row, kind) {
    closeForm(row);
    var form = el("form"), error = el("p", "error"), note = el("input"), start = null;
    form.kind = kind;
    error.setAttribute("role", "alert");
    note.type = "text";
    note.maxLength = 2000;
    note.placeholder = "Note (optional)";
    if (kind === "move") {
      start = el("input");
      start.type = "datetime-local";
      start.required = true;
      start.setAttribute("aria-label", "New start");
      if (row.data.slot_start) start.value = localInput(row.data.slot_start);
      form.appendChild(start);
      note.setAttribute("aria-label", "Move note");
    } else {
      note.setAttribute("aria-label", "Cancel note");
    }
    form.appendChild(note);
    var go = el("button", "", kind === "move" ? "Move callback" : "Cancel callback"), close = el("button", "", "Close");
    close.type = "button";
    close.onclick = function () { closeForm(row); };
    form.appendChild(go); form.appendChild(close); form.appendChild(error);
    form.onsubmit = function (e) {
      e.preventDefault();
      var c = row.data, body = { note: note.value.trim() }, path = "/api/callbacks/" + c.conversation_id + "/";
      if (kind === "move") {
        var at = new Date(start.value);  // "2026-11-30T14:00": the browser's local time
        if (isNaN(at.getTime())) { error.textContent = "Choose a date and time."; return; }
        body.start = withOffset(at);
        if (c.slot_start && c.slot_end && !c.asap) {  // the same length of window as before
          body.end = withOffset(new Date(at.getTime() + (new Date(c.slot_end) - new Date(c.slot_start))));
        }
      }
      go.disabled = true; error.textContent = "";
      api("POST", path + (kind === "move" ? "reschedule" : "cancel"), body).then(function () {
        closeForm(row); toast(kind === "move" ? "Callback moved; the customer was told." : "Callback cancelled; the customer was told.");
        refreshCallbacks();
      }).catch(function (err) { go.disabled = false; error.textContent = err.message; });
    };
    row.form = form;
    row.appendChild(form);
    (start || note).focus();
  }

  function renderOffers() {
    var box = $("offers"); box.textContent = "";
    Object.keys(offers).forEach(function (id) {
      var item = el("div", "item offer");
      item.appendChild(el("div", "", "Offer · " + (offers[id].queue || "")));
      var accept = el("button", "", "Accept"), decline = el("button", "", "Decline");
      accept.onclick = function () { claim(id); };
      decline.onclick = function () {
        api("POST", "/api/conversations/" + id + "/decline").then(function () { delete offers[id]; renderOffers(); })
          .catch(function (e) { toast(e.message); });
      };
      item.appendChild(accept); item.appendChild(decline); box.appendChild(item);
    });
    if (!Object.keys(offers).length) box.appendChild(el("div", "meta", "No offers."));
  }

  function renderList(boxId, conversations, takeable) {
    var box = $(boxId); box.textContent = "";
    conversations.forEach(function (c) {
      var item = el("div", "item" + (c.id === current ? " active" : ""));
      var reason = c.handoff ? c.handoff.reason : "";
      item.appendChild(el("div", "", (c.customer.name || "Customer " + c.customer.id.slice(0, 6)) + " · " + c.channel));
      item.appendChild(el("div", "meta", (c.queue || "") + " · " + reason + " · priority " + c.priority + " · " + c.state));
      if (takeable) { var take = el("button", "", "Take"); take.onclick = function (e) { e.stopPropagation(); claim(c.id); }; item.appendChild(take); }
      item.onclick = function () { open(c.id); };
      box.appendChild(item);
    });
    if (!conversations.length) box.appendChild(el("div", "meta", "None."));
  }

  function renderQueues(d) {
    var box = $("queues"); box.textContent = "";
    var select = $("transfer-queue"); var chosen = select.value; select.textContent = "";
    d.queues.forEach(function (q) {
      var line = q.name + ": " + q.depth + " waiting, " + q.backlog + " follow-ups, " + q.agents_online + " online, " + (q.open_now ? "open" : "closed");
      box.appendChild(el("div", "meta", line));
      var option = el("option", "", q.name); option.value = q.id; select.appendChild(option);
    });
    if (chosen) select.value = chosen;
  }

  function claim(id, phone) {
    api("POST", "/api/conversations/" + id + "/claim", phone ? { phone: phone } : undefined).then(function (d) {
      delete offers[id]; renderOffers(); show(d); refresh();
      if (d.call) toast("Your phone will ring: you join the caller when you answer");
    }).catch(function (e) {
      if (e.code === "phone_required") {  // a phone call: the desk calls the agent to join the caller
        var number = window.prompt("This is a phone call. Your phone number (e.g. +15551230000):");
        if (number) { claim(id, number.trim()); return; }
      }
      toast(e.message); refresh();
    });
  }

  function open(id) { api("GET", "/api/conversations/" + id).then(show).catch(function (e) { toast(e.message); }); }

  function show(d) {
    var c = d.conversation, ctx = d.context;
    current = c.id;
    var s = $("summary"); s.textContent = ""; s.appendChild(el("h2", "", "Summary"));
    var dl = el("dl");
    function row(label, value) { if (value === undefined || value === null || value === "") return; dl.appendChild(el("dt", "", label)); dl.appendChild(el("dd", "", value)); }
    if (d.call) {  // a phone call: where the caller is now, and the brief an agent hears before taking it
      row("Call", d.call.state + (d.call.agent ? " (" + d.call.agent + ")" : ""));
      row("Brief", d.call.brief.join(" "));
    }
    row("Goal", ctx.summary.goal);
    row("Already tried", ctx.summary.attempted.join("; "));
    row("Collected", Object.keys(ctx.summary.collected).map(function (k) { return k + ": " + ctx.summary.collected[k]; }).join(", "));
    row("Blocker", ctx.summary.blocker);
    if (ctx.escalation) {
      row("Why handed over", ctx.escalation.reason + " (" + ctx.escalation.trigger_rule + "), priority " + ctx.escalation.priority);
      row("Routed", ctx.escalation.queue + " by " + ctx.escalation.route_rule);
    }
    row("Intent", ctx.intent ? ctx.intent + " (" + Math.round((ctx.confidence || 0) * 100) + "%)" : "");
    row("Customer", [ctx.customer.name, ctx.customer.email, ctx.customer.tier].filter(Boolean).join(" · ") + " · " + ctx.channel);
    row("Identity", ctx.verification.verified ? "verified: " + ctx.verification.fields.join(", ") : "not verified: confirm identity before account changes");
    row("Notes", ctx.notes.map(function (n) { return n.from_agent + ": " + n.note; }).join(" | "));
    row("Tags", ctx.tags.join(", "));
    s.appendChild(dl);
    var t = $("transcript"); t.textContent = "";
    ctx.transcript.forEach(addMessage);
    $("actions").classList.toggle("hidden", c.state !== "assigned");
    follow(c.id);
  }

  function addMessage(m) {
    var t = $("transcript");
    if (m.id && t.querySelector('[data-id="' + m.id + '"]')) return;
    if (m.id && current) lastSeen[current] = m.id;
    var div = el("div", "msg " + m.sender);
    div.dataset.id = m.id || "";
    div.appendChild(el("span", "who", m.sender + (m.delivery ? " · " + m.delivery.status : "")));
    div.appendChild(document.createTextNode(m.text));
    t.appendChild(div); t.scrollTop = t.scrollHeight;
  }

  $("signin-form").onsubmit = function (e) { e.preventDefault(); signIn($("token").value.trim()); };
  $("sign-out").onclick = function () { sessionStorage.removeItem("agent-token"); location.reload(); };
  $("status").onchange = setPresence; $("capacity").onchange = setPresence;
  $("reply").onsubmit = function (e) {
    e.preventDefault();
    var text = $("reply-text").value.trim(); if (!text || !current) return;
    api("POST", "/api/conversations/" + current + "/messages", { text: text })
      .then(function () { $("reply-text").value = ""; }).catch(function (err) { toast(err.message); });
  };
  $("reply-text").oninput = function () {
    var now = Date.now();
    if (socket && socket.readyState === 1 && current && now - (onFrame.sentTyping || 0) > 2000) {
      onFrame.sentTyping = now;
      socket.send(JSON.stringify({ type: "typing", conversation_id: current }));
    }
  };
  $("reply-text").onkeydown = function (e) { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("reply").requestSubmit(); } };
  $("transfer").onsubmit = function (e) {
    e.preventDefault();
    api("POST", "/api/conversations/" + current + "/transfer", { queue: $("transfer-queue").value, note: $("transfer-note").value })
      .then(function () { toast("Transferred"); $("actions").classList.add("hidden"); refresh(); }).catch(function (err) { toast(err.message); });
  };
  $("resolve").onsubmit = function (e) {
    e.preventDefault();
    var picked = document.querySelector('input[name="context"]:checked');
    api("POST", "/api/conversations/" + current + "/resolve", {
      outcome: $("outcome").value || "resolved", back_to_bot: $("back-to-bot").checked,
      context_sufficient: picked ? picked.value === "yes" : null
    }).then(function () { toast("Resolved"); $("actions").classList.add("hidden"); refresh(); }).catch(function (err) { toast(err.message); });
  };

  if (token) signIn(token);
})();

// The review dashboard: the same figures as `handoff-gateway review`, as charts and tables, plus the desk's
// live standing. Reads GET /api/review?since= and GET /api/review/live with a supervisor's or the admin
// token; everything is drawn with textContent and uPlot (served by the gateway), never inline HTML.
(function () {
  "use strict";
  const KEY = "hg-review-token";
  const LIVE_EVERY_MS = 10000;
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(KEY) || "";
  let since = "30d";
  let charts = [];
  let liveTimer = null;

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: "Bearer " + token } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.detail || "HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function shown(key, value) {
    if (value === null || value === undefined) return "-";
    if (typeof value === "number" && /rate|share|accuracy/.test(key) && value <= 1) {
      return (value * 100).toFixed(1) + "%";
    }
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(1);
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function table(rows) {
    const columns = [];
    rows.forEach((row) => Object.keys(row).forEach((k) => { if (!columns.includes(k)) columns.push(k); }));
    const t = el("table");
    const head = t.createTHead().insertRow();
    columns.forEach((c) => head.appendChild(el("th", c.replace(/_/g, " "))));
    const body = t.createTBody();
    rows.forEach((row) => {
      const tr = body.insertRow();
      columns.forEach((c) => tr.appendChild(el("td", shown(c, row[c]), typeof row[c] === "number" ? "num" : "")));
    });
    return t;
  }

  function scalar(value) {
    return value === null || typeof value !== "object";
  }

  // A section of the review as the CLI's --json has it: scalars as a two-column table, lists of rows as
  // tables, and nested parts under their own headings.
  function section(title, value, level) {
    const box = el("div");
    box.appendChild(el(level === 2 ? "h2" : "h3", title.replace(/_/g, " ")));
    if (Array.isArray(value)) {
      box.appendChild(value.length && typeof value[0] === "object" ? table(value) : el("p", value.join(", ") || "none", "empty"));
      return box;
    }
    if (scalar(value)) {
      box.appendChild(el("p", shown(title, value)));
      return box;
    }
    const flat = Object.entries(value).filter(([, v]) => scalar(v));
    if (flat.length) box.appendChild(table(flat.map(([k, v]) => ({ figure: k.replace(/_/g, " "), value: shown(k, v) }))));
    Object.entries(value).filter(([, v]) => !scalar(v)).forEach(([k, v]) => box.appendChild(section(k, v, 3)));
    return box;
  }

  function chart(target, labels, series, percent) {
    target.replaceChildren();
    const days = series.day.map((d) => Date.parse(d + "T12:00:00Z") / 1000);
    const colours = ["#2f6fd6", "#c8423a", "#2e9d5b"];
    const opts = {
      width: Math.min(560, document.body.clientWidth - 60), height: 220,
      series: [{}].concat(labels.map(([key, label], i) => ({
        label, stroke: colours[i], width: 2, value: (u, v) => (v === null ? "-" : percent ? (v * 100).toFixed(1) + "%" : v),
      }))),
      axes: [{}, { values: (u, ticks) => ticks.map((v) => (percent ? (v * 100).toFixed(0) + "%" : v)) }],
    };
    charts.push(new uPlot(opts, [days].concat(labels.map(([key]) => series[key])), target));
  }

  function renderReview(data) {
    charts.forEach((c) => c.destroy());
    charts = [];
    const signals = $("signals");
    signals.replaceChildren();
    (data.signals || []).forEach((s) => signals.appendChild(el("li", s.text || s.signal || JSON.stringify(s))));
    if (!signals.children.length) signals.appendChild(el("li", data.empty ? data.empty : "Nothing needs a review now.", "none"));
    const daily = data.daily;
    chart($("chart-volume"), [["conversations", "Conversations"], ["escalations", "Escalations"]], daily, false);
    chart($("chart-rates"), [["escalation_rate", "Escalation rate"], ["abandonment_rate", "Abandoned while waiting"]], daily, true);
    const sections = $("sections");
    sections.replaceChildren();
    Object.entries(data.sections || {}).forEach(([title, value]) => {
      const panel = el("section", null, "panel");
      panel.appendChild(section(title, value, 2));
      sections.appendChild(panel);
    });
    $("updated").textContent = "figures for the last " + data.since;
  }

  function renderLive(data) {
    const rows = data.queues.map((q) => ({
      queue: q.name, waiting: q.depth, follow_ups: q.backlog,
      oldest_wait: q.oldest_wait_seconds === null ? "-" : q.oldest_wait_seconds + " s",
      agents_online: q.agents_online, open_now: q.open_now ? "yes" : "no",
    }));
    $("live").replaceChildren(rows.length ? table(rows) : el("p", "No queues.", "empty"));
  }

  async function refresh() {
    document.querySelectorAll("nav button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.since === since)));
    const [review, live] = await Promise.all([api("/api/review?since=" + since), api("/api/review/live")]);
    renderReview(review);
    renderLive(live);
  }

  async function start() {
    try {
      await refresh();
    } catch (error) {
      signOut(error.status === 403 ? "This token is not a supervisor's: the review is for supervisors." : error.message);
      return;
    }
    $("signin").classList.add("hidden");
    $("app").classList.remove("hidden");
    clearInterval(liveTimer);
    liveTimer = setInterval(() => api("/api/review/live").then(renderLive).catch(() => {}), LIVE_EVERY_MS);
  }

  function signOut(message) {
    token = "";
    sessionStorage.removeItem(KEY);
    clearInterval(liveTimer);
    $("app").classList.add("hidden");
    $("signin").classList.remove("hidden");
    $("signin-error").textContent = message || "";
  }

  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(KEY, token);
    start();
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => {
    since = b.dataset.since;
    refresh().catch((error) => { $("updated").textContent = error.message; });
  }));
  if (token) start();
})();

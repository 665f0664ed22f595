// httpqueue dashboard: plain JavaScript, no build step. Every call carries the bearer token
// typed in (kept in this browser's localStorage), so the page sees only what the API allows.
"use strict";

const STATES = ["scheduled", "queued", "delivering", "retrying", "failed", "succeeded", "deleted"];
const REFRESH_MS = 5000;
let token = localStorage.getItem("httpqueue-token") || "";

async function api(path, options = {}) {
  const headers = Object.assign({"Content-Type": "application/json"}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, {headers}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") node.onclick = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

const fmt = (n) => (n ?? 0).toLocaleString("en-US");
const when = (ms) => ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z" : "";

const age = (seconds) => seconds < 120 ? Math.round(seconds) + " s"
  : seconds < 7200 ? Math.round(seconds / 60) + " min" : Math.round(seconds / 3600) + " h";

function renderTotals(stats, status) {
  const box = document.getElementById("totals");
  const late = status.overdue.tasks;
  // overdue: due time passed and the attempt not started (scheduled, queued or retrying tasks nobody fired)
  const overdue = el("div", {class: "card overdue" + (late ? " late" : ""), "data-state": "overdue",
                             title: "due time passed, attempt not started" +
                                    (late ? "; the oldest by " + age(status.overdue.oldest_seconds) : "")},
    el("div", {class: "n", "data-testid": "total-overdue"}, fmt(late)), el("div", {class: "l"}, "overdue"));
  box.replaceChildren(...STATES.map((s) =>
    el("div", {class: "card " + s, "data-state": s},
       el("div", {class: "n", "data-testid": "total-" + s}, fmt(stats.totals[s])), el("div", {class: "l"}, s))),
    overdue);
}

// What /status reports above everything else: no worker (tasks will not fire), a Redis without persistence.
function renderBanner(status) {
  const box = document.getElementById("banner");
  const lines = status.problems.map((text) => {
    const extra = status.overdue.tasks
      ? ` (${fmt(status.overdue.tasks)} overdue, the oldest by ${age(status.overdue.oldest_seconds)})` : "";
    return el("p", {class: "problem"}, el("strong", {}, text), extra);
  }).concat(status.warnings.map((text) => el("p", {class: "warning"}, text)));
  box.replaceChildren(...lines);
  box.className = status.problems.length ? "" : "warning-only";
  box.hidden = !lines.length;
}

function overdueBadge(task) {
  const due = task.next_attempt_ms || task.execute_time_ms;
  if (!["scheduled", "queued", "retrying"].includes(task.state) || !due || due > Date.now()) return "";
  return el("span", {class: "badge overdue", "data-testid": "overdue-badge", title: "due time passed, not fired"},
            "overdue by " + age((Date.now() - due) / 1000));
}

function circuitBadge(topic) {
  const worst = (topic.circuits || []).find((c) => c.state !== "closed");
  if (!worst) return el("span", {class: "badge closed"}, "closed");
  return el("span", {class: "badge " + worst.state, title: worst.host + ": " + worst.failures + " failures in a row"},
            worst.state + " (" + worst.host + ")");
}

function renderTopics(stats, topics) {
  const byName = Object.fromEntries((topics.topics || []).map((t) => [t.topic, t]));
  const names = Object.keys(stats.topics).sort();
  const rows = names.map((name) => {
    const c = stats.topics[name], t = byName[name] || {};
    return el("tr", {"data-topic": name},
      el("td", {}, name),
      ...["scheduled", "queued", "delivering", "retrying", "failed", "succeeded"].map((s) =>
        el("td", {class: "num", "data-col": s}, fmt(c[s]))),
      el("td", {}, t.paused ? el("span", {class: "badge paused"}, "paused") : ""),
      el("td", {}, circuitBadge(t)));
  });
  document.querySelector("#topics tbody").replaceChildren(...rows);
}

function line(points, color) {
  return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.join(" ")}"/>`;
}

function chart(svgId, series, keys, colors) {
  const svg = document.getElementById(svgId), W = 600, H = 200, pad = 28;
  const values = series.flatMap((p) => keys.map((k) => (p[k] === Infinity ? null : p[k]) ?? 0));
  const max = Math.max(1, ...values);
  const x = (i) => pad + (i * (W - pad - 6)) / Math.max(1, series.length - 1);
  const y = (v) => H - pad + 4 - ((v ?? 0) * (H - pad - 10)) / max;
  let out = `<line x1="${pad}" y1="${H - pad + 4}" x2="${W}" y2="${H - pad + 4}" stroke="#ccc"/>`;
  out += `<text x="2" y="14" font-size="11" fill="#888">${fmt(Math.round(max))}</text>`;
  out += `<text x="${pad}" y="${H - 6}" font-size="11" fill="#888">-60 min</text>`;
  out += `<text x="${W - 30}" y="${H - 6}" font-size="11" fill="#888">now</text>`;
  keys.forEach((k, j) => { out += line(series.map((p, i) => `${x(i).toFixed(1)},${y(p[k]).toFixed(1)}`), colors[j]); });
  svg.innerHTML = out;
}

// Live API processes and workers (GET /v1/nodes): load is requests/s for an API process, attempts in flight
// for a worker. A node leaves the list when its heartbeat stops.
function renderNodes(nodes) {
  const now = Date.now() / 1000;
  const rows = nodes.nodes.map((n) => el("tr", {"data-node": n.incarnation, "data-role": n.role,
                                                "data-name": n.name},
    el("td", {}, el("span", {class: "badge " + n.role}, n.role)), el("td", {}, n.name), el("td", {}, n.host),
    el("td", {class: "num"}, n.pid), el("td", {}, n.version), el("td", {}, age(Math.max(0, now - n.started))),
    el("td", {}, age(Math.max(0, now - n.last_seen)) + " ago"),
    el("td", {class: "num", "data-col": "load"}, n.role === "api" ? n.load.toFixed(1) + " req/s"
                                                                    : fmt(n.load) + " in flight")));
  document.querySelector("#nodes tbody").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", {colspan: 8, class: "muted"}, "No live node."))]));
  document.getElementById("node-counts").textContent =
    Object.entries(nodes.counts).map(([role, n]) => `${n} ${role}`).join(", ");
}

// Event export per sink (GET /v1/export). The streams hold at most max_events per shard, so a sink whose lag
// reaches that loses events: a row turns red once anything was dropped or the lag passes half the streams' room.
function renderExport(exp) {
  const table = document.getElementById("export"), state = document.getElementById("export-state");
  const room = exp.max_events * exp.shards;
  state.textContent = exp.enabled
    ? `on, at most ${fmt(exp.max_events)} events per shard stream (${exp.shards} shard${exp.shards === 1 ? "" : "s"})` : "export is off";
  const rows = exp.sinks.map((s) => {
    const bad = s.dropped > 0 || (room > 0 && s.lag > room / 2);
    return el("tr", {"data-sink": s.sink, class: bad ? "bad" : ""},
      el("td", {}, s.sink),
      el("td", {class: "num", "data-col": "lag"}, fmt(s.lag) + (room ? ` / ${fmt(room)}` : "")),
      el("td", {class: "num", "data-col": "pending"}, fmt(s.pending)),
      el("td", {class: "num", "data-col": "dropped"}, fmt(s.dropped)),
      el("td", {"data-col": "last", title: s.last_delivered_age == null ? "nothing read yet"
                                            : "last read " + age(s.last_delivered_age) + " ago"},
         s.last_success_age == null ? "never" : age(s.last_success_age) + " ago"),
      el("td", {"data-col": "consumers", title: s.consumers.map((c) => `${c.name}: ${c.pending} pending, idle ` +
                                                                 age(c.idle_seconds)).join("\n")},
         s.consumers.length ? s.consumers.map((c) => c.name).join(", ") : "none"));
  });
  table.querySelector("tbody").replaceChildren(...rows);
  table.hidden = !rows.length;
  if (exp.enabled && !rows.length) state.textContent += "; no exporter has read yet";
}

async function refreshExport() {
  try { renderExport(await api("/v1/export")); }
  catch (e) { document.getElementById("export-state").textContent = "unknown: " + e.message; }
}

function renderFailures(page) {
  const rows = page.tasks.map((t) => el("tr", {"data-task": t.id},
    el("td", {}, el("a", {class: "id", onclick: () => showTask(t.id)}, t.id)),
    el("td", {}, t.topic), el("td", {class: "num"}, t.attempts),
    el("td", {class: "err"}, t.last_error || ""), el("td", {}, when(t.finished_time_ms)),
    el("td", {}, el("button", {class: "retry", onclick: () => act("retry", t.id)}, "Retry now"), " ",
                 el("button", {class: "delete", onclick: () => act("dismiss", t.id, t.topic)}, "Delete"))));
  document.querySelector("#failures tbody").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", {colspan: 6, class: "muted"}, "No failed tasks."))]));
}

async function act(kind, id, topic) {
  try {
    if (kind === "retry") await api(`/v1/tasks/${encodeURIComponent(id)}/retry`, {method: "POST"});
    else if (kind === "delete") await api(`/v1/tasks/${encodeURIComponent(id)}`, {method: "DELETE"});
    else await api(`/v1/topics/${encodeURIComponent(topic)}/dead-letters/delete`,
                   {method: "POST", body: JSON.stringify({ids: [id]})});
    setStatus(`${kind} ${id}: done`);
  } catch (e) { setStatus(`${kind} ${id}: ${e.message}`, true); }
  await refresh();
  if (document.getElementById("detail").dataset.task === id) await showTask(id);
}

async function showTask(id) {
  const box = document.getElementById("detail");
  try {
    const [task, history] = await Promise.all([api(`/v1/tasks/${encodeURIComponent(id)}`),
                                               api(`/v1/tasks/${encodeURIComponent(id)}/history`)]);
    box.dataset.task = id;
    const fields = ["id", "topic", "state", "callback", "attempts", "has_retry", "max_retry", "last_code",
                    "last_error"].map((k) => el("tr", {}, el("td", {}, k), el("td", {"data-field": k}, String(task[k] ?? ""))));
    fields.push(el("tr", {}, el("td", {}, "due"),
                   el("td", {}, when(task.next_attempt_ms || task.execute_time_ms), overdueBadge(task))));
    const actions = el("p", {},
      ["scheduled", "retrying", "failed"].includes(task.state)
        ? el("button", {class: "retry", onclick: () => act("retry", id)}, "Retry now") : "", " ",
      ["scheduled", "queued", "retrying"].includes(task.state)
        ? el("button", {class: "delete", onclick: () => act("delete", id)}, "Delete") : "");
    const events = el("table", {}, ...history.events.map((e) => el("tr", {},
      el("td", {}, when(e.t)), el("td", {}, e.event + (e.outcome ? ` (${e.outcome})` : "")),
      el("td", {}, [e.code != null ? "code " + e.code : "", e.ms != null ? e.ms + " ms" : "", e.error || e.reason || ""]
                   .filter(Boolean).join(" - ")))));
    box.className = "";
    box.replaceChildren(el("table", {}, ...fields), actions, el("h2", {}, "History"), events);
  } catch (e) { box.className = "muted"; box.textContent = `${id}: ${e.message}`; }
}

function setStatus(text, bad = false) {
  const s = document.getElementById("status");
  s.textContent = text; s.style.color = bad ? "#ff9c94" : "";
}

async function refresh() {
  try {
    const [stats, topics, series, failures, status, nodes] = await Promise.all([
      api("/v1/stats"), api("/v1/topics"), api("/v1/series?minutes=60"), api("/v1/tasks?state=failed&limit=20"),
      api("/status"), api("/v1/nodes")]);
    renderBanner(status); renderTotals(stats, status); renderTopics(stats, topics); renderFailures(failures);
    renderNodes(nodes);
    await refreshExport();
    const m = series.minutes.map((p) => Object.assign({}, p, {retried: p.retrying}));
    chart("chart-throughput", m, ["succeeded", "retried", "failed"], ["#2e8b57", "#d9902f", "#c8413b"]);
    chart("chart-lateness", m, ["late_p50_ms", "late_p99_ms", "late_mean_ms"], ["#3b6fd8", "#c8413b", "#2e8b57"]);
    setStatus("updated " + new Date().toLocaleTimeString());
    document.body.dataset.loaded = "1";
  } catch (e) { setStatus(e.message, true); }
}

document.getElementById("token-form").onsubmit = (ev) => {
  ev.preventDefault();
  token = document.getElementById("token").value.trim();
  localStorage.setItem("httpqueue-token", token);
  refresh();
};
document.getElementById("lookup").onsubmit = (ev) => {
  ev.preventDefault();
  const id = document.getElementById("task-id").value.trim();
  if (id) showTask(id);
};
refresh();
setInterval(refresh, REFRESH_MS);

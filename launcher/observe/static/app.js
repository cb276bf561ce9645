// The anyclaude dashboard: plain JavaScript, no build step, nothing fetched from other sites.
// Every value from the log is written with textContent (session ids and model names come from clients).
"use strict";

const KEY_STORE = "anyclaude-key";
const MAX_ROWS = 500;
const CHART_POINTS = 120;
const LOG_LINES = 400;

const ui = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  rows: [],
  lastId: 0,
  logName: "",
  stream: null,
  usageTimer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "title") node.title = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (ui.key) h["x-api-key"] = ui.key;
  return h;
}

class Unauthorized extends Error {}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const res = await fetch(path, opts);
  if (res.status === 401) {
    showKeyForm();
    throw new Unauthorized("the proxy wants its apiKey");
  }
  const body = await res.json();
  if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
  return body;
}

function showKeyForm() {
  $("keyform").classList.remove("hidden");
  setLive(false);
}

// ------------------------------------------------------------------ formatting

const secs = (v) => (v === null || v === undefined ? "-" : v < 10 ? v.toFixed(2) + " s" : v.toFixed(1) + " s");
const num = (v) => (v === null || v === undefined ? "-" : String(v));
const clock = (t) => new Date(t * 1000).toLocaleTimeString();
function size(v) {
  if (!v) return "-";
  if (v < 1024) return v + " B";
  return v < 1048576 ? Math.round(v / 1024) + " KB" : (v / 1048576).toFixed(1) + " MB";
}
const failed = (r) => r.status >= 400 || r.error_type;

// ------------------------------------------------------------------ backends

function renderBackends(state) {
  $("mode").textContent = "mode " + state.mode;
  const body = $("backends").tBodies[0];
  body.replaceChildren();
  for (const b of state.backends) {
    const breaker = (b.breaker && b.breaker.state) || "-";
    body.append(
      el("tr", {},
        el("td", {}, b.name + (b.serving ? "" : " (other)")),
        el("td", {}, b.kind),
        el("td", { class: "state-" + b.state }, b.state),
        el("td", { class: "num" }, num(b.restarts)),
        el("td", { class: "state-" + breaker }, breaker),
        el("td", { class: "num" }, num(b.pid)),
        el("td", { class: "num" }, num(b.port)),
        el("td", { title: b.model || "" }, b.model ? b.model.split("/").filter(Boolean).pop() : "-"),
        el("td", { class: "reason" }, b.reason || ""),
      ),
    );
  }
  renderPromptCache(state.backends.find((b) => b.serving));
}

// Our MLX server's prompt cache, RAM and disk tiers (absent for other kinds).
function renderPromptCache(backend) {
  const table = $("prompt-cache");
  const tiers = backend && backend.prompt_cache;
  table.hidden = !tiers;
  if (!tiers) return;
  const row = (name, t, loads, loadTime) =>
    el("tr", {},
      el("td", {}, name),
      el("td", { class: "num" }, num(t.slots)),
      el("td", { class: "num" }, size(t.bytes)),
      el("td", { class: "num" }, size(t.max_bytes)),
      el("td", { class: "num" }, num(t.hits)),
      el("td", { class: "num" }, loads),
      el("td", { class: "num" }, loadTime),
    );
  table.tBodies[0].replaceChildren(
    row("RAM", tiers.ram, "", ""),
    row("disk", tiers.disk, num(tiers.disk.loads), secs(tiers.disk.load_s)),
  );
}

// ------------------------------------------------------------------ requests

function filtered() {
  const backend = $("f-backend").value;
  const session = $("f-session").value.trim();
  const errors = $("f-errors").checked;
  const parseFailed = $("f-parse").checked;
  return ui.rows.filter(
    (r) =>
      (!backend || r.backend === backend) &&
      (!session || (r.session_id || "").startsWith(session)) &&
      (!errors || failed(r)) &&
      (!parseFailed || r.tool_parse_failed),
  );
}

function addRows(rows, fresh) {
  if (!rows.length) return;
  ui.rows = ui.rows.concat(rows).slice(-MAX_ROWS);
  ui.lastId = Math.max(ui.lastId, rows[rows.length - 1].id);
  const select = $("f-backend");
  const known = new Set(Array.from(select.options).map((o) => o.value));
  for (const r of rows) {
    if (r.backend && !known.has(r.backend)) {
      known.add(r.backend);
      select.append(el("option", { value: r.backend }, r.backend));
    }
  }
  renderRequests(fresh ? new Set(rows.map((r) => r.id)) : new Set());
}

function renderRequests(fresh) {
  const shown = filtered();
  const body = $("requests").tBodies[0];
  body.replaceChildren();
  for (const r of shown.slice().reverse()) {
    const status = r.status + (r.error_type ? " " + r.error_type : "") + (r.tool_parse_failed ? " tool_parse_failed" : "");
    const textCalls = r.text_tool_calls ? r.text_tool_calls + " from text" : "";
    const cls = (failed(r) ? "error" : "") + (fresh && fresh.has(r.id) ? " fresh" : "");
    body.append(
      el("tr", { class: cls.trim(), "data-id": r.id },
        el("td", {}, clock(r.started)),
        el("td", { title: r.session_id || "" }, (r.session_id || "-").slice(0, 8)),
        el("td", { title: r.parent_agent_id ? "parent " + r.parent_agent_id : "" }, (r.agent_id || "-").slice(0, 8)),
        el("td", {}, r.backend || "-"),
        el("td", {}, r.endpoint === "count_tokens" ? "count_tokens" : r.model_asked || "-"),
        el("td", {}, r.streamed ? "yes" : "no"),
        el("td", { class: "num" }, num(r.input_tokens)),
        el("td", { class: "num" }, num(r.cached_tokens)),
        el("td", { class: "num" }, num(r.output_tokens)),
        el("td", { class: "num" }, secs(r.ttft)),
        el("td", { class: "num" }, secs(r.duration)),
        el("td", { class: "num" }, r.decode_tps === null ? "-" : r.decode_tps.toFixed(1)),
        el("td", {}, r.stop_reason || "-"),
        el("td", { title: textCalls }, status),
        el("td", { class: "num" }, size(r.request_bytes)),
      ),
    );
  }
  renderCharts(shown.filter((r) => r.endpoint === "messages").slice(-CHART_POINTS));
}

// ------------------------------------------------------------------ charts (SVG, drawn here)

const SVG = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function chart(svg, series, options) {
  const W = 320, H = 140, L = 34, R = 6, T = 8, B = 18;
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    svg.append(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
    return;
  }
  const xs = all.map((p) => p.x), ys = all.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const y1 = options.max !== undefined ? options.max : Math.max(...ys) * 1.1 || 1;
  const sx = (x) => L + (x1 === x0 ? (W - L - R) / 2 : ((x - x0) / (x1 - x0)) * (W - L - R));
  const sy = (y) => H - B - (Math.min(y, y1) / y1) * (H - T - B);
  svg.append(svgEl("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.append(svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  svg.append(svgEl("text", { x: L - 3, y: T + 8, "text-anchor": "end" }, options.format(y1)));
  svg.append(svgEl("text", { x: L - 3, y: H - B, "text-anchor": "end" }, "0"));
  svg.append(svgEl("text", { x: L, y: H - 4 }, clock(x0)));
  svg.append(svgEl("text", { x: W - R, y: H - 4, "text-anchor": "end" }, clock(x1)));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const pts = s.points.map((p) => sx(p.x).toFixed(1) + "," + sy(p.y).toFixed(1)).join(" ");
    svg.append(svgEl("polyline", { class: "s" + i, points: pts }));
    for (const p of s.points) svg.append(svgEl("circle", { class: "s" + i, cx: sx(p.x), cy: sy(p.y), r: 2 }));
  });
}

function renderCharts(rows) {
  const pts = (f) => rows.filter((r) => f(r) !== null && f(r) !== undefined).map((r) => ({ x: r.started, y: f(r) }));
  chart($("chart-ttft"), [{ points: pts((r) => r.ttft) }], { format: (v) => (v < 1 ? v.toFixed(2) : v.toFixed(1)) });
  chart($("chart-tps"), [{ points: pts((r) => r.decode_tps) }], { format: (v) => v.toFixed(0) });
  chart(
    $("chart-tokens"),
    [{ points: pts((r) => r.input_tokens) }, { points: pts((r) => r.cached_tokens) }, { points: pts((r) => r.output_tokens) }],
    { format: (v) => (v >= 1000 ? (v / 1000).toFixed(0) + "k" : v.toFixed(0)) },
  );
  const ratio = (r) => {
    const prompt = (r.input_tokens || 0) + (r.cached_tokens || 0);
    return prompt ? (r.cached_tokens || 0) / prompt : null;
  };
  chart($("chart-cache"), [{ points: pts(ratio) }], { max: 1, format: (v) => Math.round(v * 100) + "%" });
}

// ------------------------------------------------------------------ usage

async function loadUsage() {
  const since = $("since").value;
  const body = await api("/ui/api/usage" + (since ? "?since=" + encodeURIComponent(since) : ""));
  const t = body.usage[body.usage.length - 1];
  const figures = [
    ["requests", num(t.requests)],
    ["errors", num(t.errors)],
    ["cache hit", t.cache_hit_ratio === null ? "-" : Math.round(t.cache_hit_ratio * 100) + "%"],
    ["decode tok/s (p50)", t.decode_tps_p50 === null ? "-" : t.decode_tps_p50.toFixed(1)],
    ["TTFT p50", secs(t.ttft_p50)],
    ["TTFT p95", secs(t.ttft_p95)],
    ["tokens in / cached", num(t.input_tokens) + " / " + num(t.cached_tokens)],
    ["tokens out", num(t.output_tokens)],
  ];
  $("usage").replaceChildren(...figures.map(([label, value]) => el("div", { class: "figure" }, el("b", {}, value), el("span", {}, label))));
}

function usageSoon() {
  clearTimeout(ui.usageTimer);
  ui.usageTimer = setTimeout(() => loadUsage().catch(() => {}), 200);
}

// ------------------------------------------------------------------ config history and rollback

async function loadHistory() {
  const body = await api("/ui/api/history");
  $("history-file").textContent = body.config ? "file: " + body.config : "built-in default: nothing to roll back";
  const rows = $("history").tBodies[0];
  rows.replaceChildren();
  for (const s of body.snapshots) {
    const action = s.index === 0 ? el("span", { class: "muted" }, "current") : el("button", { type: "button", "data-index": s.index }, "roll back to this");
    if (s.index !== 0) action.addEventListener("click", () => rollback(s));
    rows.append(el("tr", {}, el("td", {}, s.index), el("td", {}, new Date(s.saved_at * 1000).toLocaleString()), el("td", {}, s.digest), el("td", {}, action)));
  }
}

async function rollback(snapshot) {
  const question = "Write config #" + snapshot.index + " (" + snapshot.digest + ") back to the config file?\n" +
    "The running anyclaude applies it like an edit.";
  if (!window.confirm(question)) return;
  try {
    const body = await api("/ui/api/rollback", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ index: snapshot.index }),
    });
    $("rollback-result").textContent = "Wrote config #" + body.index + " (" + body.digest + ") to " + body.config + "; applying it.";
  } catch (err) {
    $("rollback-result").textContent = "Rollback failed: " + err.message;
  }
  for (const wait of [1500, 4000]) setTimeout(() => loadHistory().catch(() => {}), wait);
}

// ------------------------------------------------------------------ doctor

async function loadDoctor() {
  const body = $("doctor").tBodies[0];
  body.replaceChildren(el("tr", {}, el("td", { class: "muted" }, "checking …")));
  const found = await api("/ui/api/doctor");
  const symbol = { ok: "✓", warn: "!", fail: "✗" };
  body.replaceChildren(
    ...found.checks.map((c) =>
      el("tr", {},
        el("td", { class: "check-" + c.status }, symbol[c.status] || c.status),
        el("td", {}, c.name),
        el("td", { class: "finding" }, c.finding + (c.fix && c.status !== "ok" ? "  — fix: " + c.fix : "")),
      ),
    ),
  );
}

// ------------------------------------------------------------------ live updates (SSE read with fetch: it can send the key)

function setLive(on) {
  const pill = $("live");
  pill.textContent = on ? "live" : "offline";
  pill.className = "pill " + (on ? "on" : "off");
}

function appendLog(lines) {
  const pre = $("log");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const kept = (pre.textContent ? pre.textContent.split("\n") : []).concat(lines).slice(-LOG_LINES);
  pre.textContent = kept.join("\n");
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

function handle(name, data) {
  if (name === "requests") {
    addRows(data, true);
    usageSoon();
  } else if (name === "backends") {
    renderBackends(data);
  } else if (name === "log") {
    appendLog(data);
  }
}

async function listen() {
  if (ui.stream) ui.stream.abort();
  const control = new AbortController();
  ui.stream = control;
  const query = "?after=" + ui.lastId + (ui.logName ? "&log=" + encodeURIComponent(ui.logName) : "");
  try {
    const res = await fetch("/ui/events" + query, { headers: headers(), signal: control.signal });
    if (res.status === 401) return showKeyForm();
    if (!res.ok || !res.body) throw new Error(res.statusText);
    setLive(true);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trim());
        }
        if (data.length) handle(name, JSON.parse(data.join("\n")));
      }
    }
  } catch (err) {
    if (control.signal.aborted) return;
  }
  if (ui.stream === control) {
    setLive(false);
    setTimeout(listen, 2000);
  }
}

// ------------------------------------------------------------------ start

async function start() {
  $("keyform").classList.add("hidden");
  const state = await api("/ui/api/state");
  renderBackends(state);
  $("proxy").textContent = state.proxy || "";
  const log = state.request_log;
  $("log-state").textContent = log.enabled ? "log: " + log.path + " (" + size(log.bytes) + ")" + (log.bodies ? ", with bodies" : "") : "the request log is off (requestLog: false)";
  const names = $("log-name");
  names.replaceChildren(...state.logs.map((n) => el("option", { value: n }, n)));
  const serving = state.backends.find((b) => b.serving);
  ui.logName = serving && state.logs.includes(serving.name) ? serving.name : state.logs[0] || "";
  names.value = ui.logName;
  const first = await api("/ui/api/requests?limit=" + MAX_ROWS);
  ui.rows = [];
  addRows(first.requests, false);
  if (!first.requests.length) renderRequests(new Set());
  listen();
  loadUsage().catch(() => {});
  loadHistory().catch(() => {});
  loadDoctor().catch((err) => {
    $("doctor").tBodies[0].replaceChildren(el("tr", {}, el("td", {}, "doctor failed: " + err.message)));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("keyform").addEventListener("submit", (event) => {
    event.preventDefault();
    ui.key = $("key").value;
    sessionStorage.setItem(KEY_STORE, ui.key);
    start().catch(() => {});
  });
  for (const id of ["f-backend", "f-errors", "f-parse"]) $(id).addEventListener("change", () => renderRequests(new Set()));
  $("f-session").addEventListener("input", () => renderRequests(new Set()));
  $("since").addEventListener("change", () => loadUsage().catch(() => {}));
  $("doctor-run").addEventListener("click", () => loadDoctor().catch(() => {}));
  $("log-name").addEventListener("change", () => {
    ui.logName = $("log-name").value;
    $("log").textContent = "";
    listen();
  });
  start().catch(() => {});
});

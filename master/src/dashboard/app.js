// Sentinel dashboard: the fleet view (/) and the host view (/hosts/{id}).
//
// Everything an agent sends is hostile text: it reaches the page only through textContent,
// createTextNode and setAttribute on inert attributes (data-*, title, aria-*), never as markup.
// Live updates come over Server-Sent Events (/api/v1/events); when the stream fails the page
// polls /api/v1/hosts and keeps trying the stream; when the master cannot be reached at all a
// "connection lost, retrying" banner shows until it answers again.
"use strict";

const STATUSES = ["up", "stale", "down", "stopped"];
const ROW_HEIGHT = 34; // px; must match `tbody tr { height }` in style.css
const OVERSCAN = 8; // rows rendered above and below the visible ones
const POLL_MS = 2000; // fallback polling cadence
const SILENCE_MS = 5000; // no event (ticks come every second) for this long = connection lost
const DETAIL_MS = 1000; // host view refresh

// Measurements the browser test reads (time to first render, cost of each update).
const perf = { firstRenderMs: null, updates: [], renders: [] };
window.sentinelPerf = perf;

// ---------------------------------------------------------------- formatting helpers

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function isNum(v) {
  return typeof v === "number" && isFinite(v);
}

function bytes(n) {
  if (!isNum(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i === 0 || n >= 100 ? 0 : 1) + " " + units[i];
}

function rate(n) {
  return isNum(n) ? bytes(n) + "/s" : "–";
}

function fixed(v, d) {
  return isNum(v) ? v.toFixed(d) : "–";
}

function pct(v) {
  return isNum(v) ? v.toFixed(1) + " %" : "–";
}

function duration(s) {
  if (!isNum(s)) return "–";
  s = Math.max(0, Math.floor(s));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function ago(ms) {
  if (!isNum(ms)) return "never";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function statusClass(s) {
  return "st-" + (STATUSES.includes(s) ? s : "down");
}

function memPct(h) {
  return h.mem_total_bytes > 0 ? (100 * h.mem_used_bytes) / h.mem_total_bytes : NaN;
}

function bar(percent) {
  const b = el("span", "bar");
  const f = el("span", "fill");
  const p = Math.min(100, Math.max(0, Number(percent) || 0));
  f.style.width = p + "%"; // CSSOM, allowed by the CSP (no style attribute in markup)
  if (p >= 90) f.classList.add("hot");
  b.appendChild(f);
  return b;
}

const SVG = "http://www.w3.org/2000/svg";

// A sparkline of percentages (0-100) as an inline SVG polyline built with DOM APIs.
function sparkline(values, label) {
  const w = 64, h = 20;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(h));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const pts = [];
  const n = values.length;
  values.forEach((v, i) => {
    const x = n > 1 ? (i / (n - 1)) * (w - 2) + 1 : w - 1;
    const y = h - 1 - (Math.min(100, Math.max(0, Number(v) || 0)) / 100) * (h - 2);
    pts.push(x.toFixed(1) + "," + y.toFixed(1));
  });
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.appendChild(line);
  return svg;
}

// ---------------------------------------------------------------- connection state

let serverOffset = 0; // master clock minus browser clock
function serverNow() {
  return Date.now() + serverOffset;
}

const conn = { mode: "connecting", lastEvent: 0 };

function setMode(mode) {
  conn.mode = mode;
  const banner = document.getElementById("banner");
  banner.hidden = mode !== "lost";
  document.body.classList.toggle("lost", mode === "lost");
  const live = document.getElementById("live");
  live.textContent = {
    live: "live",
    polling: "live (polling)",
    lost: "connection lost, retrying",
    connecting: "connecting…",
  }[mode];
  live.className = "live " + mode;
}

// ---------------------------------------------------------------- fleet view

const fleet = {
  hosts: new Map(), // id -> HOST object (with spark)
  view: [], // sorted, filtered hosts
  sortKey: "hostname",
  sortDir: 1,
  filter: "",
  status: "",
  dirty: true, // view must be recomputed
  scheduled: false,
};

const SORT_KEYS = {
  hostname: (h) => h.hostname.toLowerCase(),
  status: (h) => STATUSES.indexOf(h.status),
  cpu: (h) => (isNum(h.cpu_percent) ? h.cpu_percent : -1),
  mem: (h) => (isNum(memPct(h)) ? memPct(h) : -1),
  load: (h) => (isNum(h.load1) ? h.load1 : -1),
  fs: (h) => (h.fs_fullest && isNum(h.fs_fullest.used_ratio) ? h.fs_fullest.used_ratio : -1),
  rx: (h) => (isNum(h.net_rx_bytes_per_s) ? h.net_rx_bytes_per_s : -1),
  tx: (h) => (isNum(h.net_tx_bytes_per_s) ? h.net_tx_bytes_per_s : -1),
  uptime: (h) => (isNum(h.uptime_s) ? h.uptime_s : -1),
  version: (h) => h.agent_version,
};

function recompute() {
  const key = SORT_KEYS[fleet.sortKey] || SORT_KEYS.hostname;
  const dir = fleet.sortDir;
  const needle = fleet.filter.toLowerCase();
  const rows = [];
  for (const h of fleet.hosts.values()) {
    if (fleet.status && h.status !== fleet.status) continue;
    if (needle && !h.hostname.toLowerCase().includes(needle)) continue;
    rows.push({ k: key(h), n: h.hostname, id: h.id, h });
  }
  rows.sort((a, b) => {
    if (a.k < b.k) return -dir;
    if (a.k > b.k) return dir;
    if (a.n < b.n) return -1;
    if (a.n > b.n) return 1;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
  fleet.view = rows.map((r) => r.h);
  fleet.dirty = false;
}

function renderCounts() {
  const counts = { up: 0, stale: 0, down: 0, stopped: 0 };
  for (const h of fleet.hosts.values()) if (h.status in counts) counts[h.status]++;
  const nav = document.getElementById("counts");
  const make = (value, text, cls) => {
    const b = el("button", "count " + cls, text);
    b.type = "button";
    b.setAttribute("aria-pressed", String(fleet.status === value));
    b.dataset.status = value;
    b.addEventListener("click", () => {
      fleet.status = fleet.status === value ? "" : value;
      document.getElementById("status-filter").value = fleet.status;
      fleet.dirty = true;
      schedule();
    });
    return b;
  };
  const parts = [make("", fleet.hosts.size + " hosts", "all")];
  for (const s of STATUSES) parts.push(make(s, counts[s] + " " + s, statusClass(s)));
  nav.replaceChildren(...parts);
}

function hostRow(h, now) {
  const tr = el("tr", statusClass(h.status));
  tr.dataset.id = h.id;
  const name = el("td", "host");
  const a = el("a", "name", h.hostname);
  a.href = "/hosts/" + encodeURIComponent(h.id);
  a.title = h.hostname + " (" + h.id + ")";
  name.appendChild(a);
  if (h.identity === "cloned") {
    // Two machines prove this host's key: say so on the row, with the other one's address.
    const c = el("span", "identity-cloned", " cloned");
    c.title = "another machine (" + h.cloned_address + ") proves this host's key";
    name.appendChild(c);
  }
  tr.appendChild(name);

  const st = el("td", "status");
  st.appendChild(el("span", "dot"));
  let text = h.status;
  if (!h.connected && h.status !== "stopped") text += ", disconnected";
  st.appendChild(el("span", "st-text", text));
  st.appendChild(el("span", "seen", "last seen " + ago(now - h.last_seen_ms)));
  tr.appendChild(st);

  const cpu = el("td", "num");
  cpu.appendChild(bar(h.cpu_percent));
  cpu.appendChild(el("span", "v cpu", pct(h.cpu_percent)));
  tr.appendChild(cpu);
  const cs = el("td", "spark-col");
  cs.appendChild(sparkline((h.spark && h.spark.cpu) || [], "CPU, last minute"));
  tr.appendChild(cs);

  const mem = el("td", "num");
  mem.appendChild(bar(memPct(h)));
  const m = el("span", "v", bytes(h.mem_used_bytes) + " / " + bytes(h.mem_total_bytes));
  m.title = pct(memPct(h));
  mem.appendChild(m);
  tr.appendChild(mem);
  const ms = el("td", "spark-col");
  ms.appendChild(sparkline((h.spark && h.spark.mem) || [], "Memory, last minute"));
  tr.appendChild(ms);

  tr.appendChild(el("td", "num", fixed(h.load1, 2) + " " + fixed(h.load5, 2) + " " + fixed(h.load15, 2)));
  const fs = el("td", "num");
  if (h.fs_fullest) {
    const ratio = Number(h.fs_fullest.used_ratio) * 100;
    fs.appendChild(bar(ratio));
    const t = el("span", "v", pct(ratio));
    t.title = h.fs_fullest.mount + ": " + bytes(h.fs_fullest.used_bytes) +
      " of " + bytes(h.fs_fullest.total_bytes);
    fs.appendChild(t);
  } else {
    fs.textContent = "–";
  }
  tr.appendChild(fs);
  tr.appendChild(el("td", "num", rate(h.net_rx_bytes_per_s)));
  tr.appendChild(el("td", "num", rate(h.net_tx_bytes_per_s)));
  tr.appendChild(el("td", "num", duration(h.uptime_s)));
  tr.appendChild(el("td", "ver", h.agent_version));
  return tr;
}

function spacer(height, cols) {
  const tr = el("tr", "spacer");
  tr.setAttribute("aria-hidden", "true");
  const td = el("td");
  td.colSpan = cols;
  tr.style.height = height + "px";
  tr.appendChild(td);
  return tr;
}

// Renders only the rows in (or near) the viewport; the rest is two spacer rows.
function renderRows() {
  const t0 = performance.now();
  if (fleet.dirty) recompute();
  const vp = document.getElementById("viewport");
  const body = document.getElementById("hosts");
  const total = fleet.view.length;
  const head = document.querySelector("#fleet thead").offsetHeight || 0;
  const top = Math.max(0, vp.scrollTop - head);
  const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
  const visible = Math.ceil((vp.clientHeight || 800) / ROW_HEIGHT) + 2 * OVERSCAN;
  const last = Math.min(total, first + visible);
  const now = serverNow();
  const rows = [spacer(first * ROW_HEIGHT, 12)];
  for (let i = first; i < last; i++) rows.push(hostRow(fleet.view[i], now));
  rows.push(spacer((total - last) * ROW_HEIGHT, 12));
  body.replaceChildren(...rows);
  document.getElementById("empty").hidden = fleet.hosts.size > 0;
  document.getElementById("shown").textContent =
    total === fleet.hosts.size ? "" : "showing " + total + " of " + fleet.hosts.size;
  renderCounts();
  for (const th of document.querySelectorAll("#fleet th[data-sort]")) {
    const on = th.dataset.sort === fleet.sortKey;
    th.setAttribute("aria-sort", on ? (fleet.sortDir > 0 ? "ascending" : "descending") : "none");
  }
  const ms = performance.now() - t0;
  perf.renders.push(ms);
  if (perf.renders.length > 1000) perf.renders.shift();
  return ms;
}

function schedule() {
  if (fleet.scheduled) return;
  fleet.scheduled = true;
  requestAnimationFrame(() => {
    fleet.scheduled = false;
    renderRows();
  });
}

// Live data re-renders at most every DATA_RENDER_MS (a fleet of 5,000 hosts changes
// continuously); the user's own actions (scroll, sort, filter) render on the next frame.
const DATA_RENDER_MS = 250;
let lastDataRender = 0;
let dataTimer = null;
function scheduleData() {
  if (dataTimer) return;
  const wait = Math.max(0, lastDataRender + DATA_RENDER_MS - performance.now());
  dataTimer = setTimeout(() => {
    dataTimer = null;
    lastDataRender = performance.now();
    schedule();
  }, wait);
}

function applySnapshot(data) {
  const t0 = performance.now();
  serverOffset = data.now_ms - Date.now();
  fleet.hosts = new Map();
  for (const h of data.hosts) fleet.hosts.set(h.id, h);
  fleet.dirty = true;
  renderRows();
  if (perf.firstRenderMs === null) perf.firstRenderMs = performance.now();
  return performance.now() - t0;
}

const SPARK_POINTS = 60;

// An update carries only the sparkline points the page lacks (`spark_add`: the points
// numbered n - len .. n); append those after the page's own count.
function mergeHost(h) {
  const add = h.spark_add;
  if (add) {
    delete h.spark_add;
    const old = fleet.hosts.get(h.id);
    const sp = old && old.spark ? old.spark : { n: add.n - add.cpu.length, cpu: [], mem: [] };
    const start = add.n - add.cpu.length;
    for (let i = Math.max(0, sp.n - start); i < add.cpu.length; i++) {
      sp.cpu.push(add.cpu[i]);
      sp.mem.push(add.mem[i]);
    }
    sp.n = Math.max(sp.n, add.n);
    if (sp.cpu.length > SPARK_POINTS) sp.cpu.splice(0, sp.cpu.length - SPARK_POINTS);
    if (sp.mem.length > SPARK_POINTS) sp.mem.splice(0, sp.mem.length - SPARK_POINTS);
    h.spark = sp;
  }
  fleet.hosts.set(h.id, h);
}

// `t0`: when the event reached the page (before its JSON was parsed).
function applyHosts(data, t0) {
  serverOffset = data.now_ms - Date.now();
  for (const h of data.hosts) mergeHost(h);
  fleet.dirty = true;
  scheduleData();
  perf.updates.push({ hosts: data.hosts.length, ms: performance.now() - t0 });
  if (perf.updates.length > 5000) perf.updates.shift();
}

let source = null;
let pollTimer = null;

function onEvent() {
  conn.lastEvent = Date.now();
}

function connectStream() {
  if (source) source.close();
  source = new EventSource("/api/v1/events");
  source.addEventListener("snapshot", (e) => {
    onEvent();
    applySnapshot(JSON.parse(e.data));
    stopPolling();
    setMode("live");
  });
  source.addEventListener("hosts", (e) => {
    const t0 = performance.now();
    onEvent();
    applyHosts(JSON.parse(e.data), t0);
  });
  // Hosts whose slot was freed (removed by an operator, or expired).
  source.addEventListener("removed", (e) => {
    onEvent();
    for (const id of JSON.parse(e.data).ids) fleet.hosts.delete(id);
    fleet.dirty = true;
    renderRows();
  });
  source.addEventListener("tick", (e) => {
    onEvent();
    serverOffset = JSON.parse(e.data).now_ms - Date.now();
    scheduleData(); // "last seen N s ago" moves on
  });
  source.onerror = () => {
    // The browser retries by itself while readyState is CONNECTING; meanwhile find out
    // whether the master answers plain requests (stream broken) or not at all (lost).
    startPolling();
    if (source.readyState === EventSource.CLOSED) setTimeout(connectStream, POLL_MS);
  };
}

async function pollOnce() {
  try {
    const r = await fetch("/api/v1/hosts", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const data = await r.json();
    if (conn.mode !== "live") {
      applySnapshot(data);
      setMode("polling");
    }
    onEvent();
  } catch (e) {
    setMode("lost");
  }
}

function startPolling() {
  if (pollTimer) return;
  pollOnce();
  pollTimer = setInterval(pollOnce, POLL_MS);
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
}

function watchdog() {
  if (conn.mode === "live" && Date.now() - conn.lastEvent > SILENCE_MS) {
    // A stream that went silent (e.g. a half-open connection): start over.
    setMode("lost");
    startPolling();
    connectStream();
  }
}

function initFleet() {
  document.getElementById("fleet-view").hidden = false;
  const filter = document.getElementById("filter");
  filter.addEventListener("input", () => {
    fleet.filter = filter.value;
    fleet.dirty = true;
    schedule();
  });
  const sel = document.getElementById("status-filter");
  sel.addEventListener("change", () => {
    fleet.status = sel.value;
    fleet.dirty = true;
    schedule();
  });
  for (const th of document.querySelectorAll("#fleet th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      if (fleet.sortKey === key) fleet.sortDir = -fleet.sortDir;
      else {
        fleet.sortKey = key;
        fleet.sortDir = key === "hostname" || key === "status" || key === "version" ? 1 : -1;
      }
      fleet.dirty = true;
      schedule();
    });
  }
  document.getElementById("viewport").addEventListener("scroll", schedule, { passive: true });
  window.addEventListener("resize", schedule);
  // "/" focuses the filter, as on many dashboards.
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement !== filter) {
      e.preventDefault();
      filter.focus();
    }
  });
  setMode("connecting");
  connectStream();
  setInterval(watchdog, 1000);
}

// ---------------------------------------------------------------- host view

const detail = {
  id: null,
  prev: null,
  rates: new Map(),
  mayWrite: false, // the session may remove hosts (GET /api/v1/session)
  known: false, // the master has this host (the last poll was not a 404)
};

// The Remove button shows for an operator on a host the master has, never on "Unknown host".
function showAdmin() {
  document.getElementById("host-admin").hidden = !(detail.mayWrite && detail.known);
}

function facts(dl, pairs) {
  const parts = [];
  for (const [k, v] of pairs) {
    parts.push(el("dt", "", k));
    parts.push(el("dd", "", v));
  }
  dl.replaceChildren(...parts);
}

function usageRow(label, used, total) {
  const p = total > 0 ? (100 * used) / total : NaN;
  const d = el("div", "usage");
  d.appendChild(el("span", "label", label));
  d.appendChild(bar(p));
  d.appendChild(el("span", "v", bytes(used) + " / " + bytes(total) + " (" + pct(p) + ")"));
  return d;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

function clock(ms) {
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
}

// A line chart with axes: y from 0 to a rounded maximum with unit labels, x by sample time.
function chart(id, points, series, fmt) {
  const c = document.getElementById(id);
  const dpr = window.devicePixelRatio || 1;
  const cssW = c.clientWidth || 560, cssH = c.clientHeight || 180;
  if (c.width !== Math.round(cssW * dpr)) c.width = Math.round(cssW * dpr);
  if (c.height !== Math.round(cssH * dpr)) c.height = Math.round(cssH * dpr);
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const left = 70, right = 10, top = 10, bottom = 24;
  const w = cssW - left - right, h = cssH - top - bottom;
  let max = 0;
  for (const p of points) for (const s of series) max = Math.max(max, Number(p[s.key]) || 0);
  if (series[0].max) max = Math.max(max, series[0].max);
  if (max <= 0) max = 1;
  const font = "11px system-ui, sans-serif";
  ctx.font = font;
  ctx.strokeStyle = cssVar("--line");
  ctx.fillStyle = cssVar("--muted");
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const y = top + h - (h * i) / 4;
    ctx.beginPath();
    ctx.moveTo(left, Math.round(y) + 0.5);
    ctx.lineTo(left + w, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillText(fmt(v), left - 6, y);
  }
  const t0 = points.length ? points[0].ts_ms : 0;
  const t1 = points.length ? points[points.length - 1].ts_ms : 1;
  const span = Math.max(1, t1 - t0);
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  if (points.length) {
    for (let i = 0; i <= 3; i++) {
      const t = t0 + (span * i) / 3;
      const x = left + (w * i) / 3;
      ctx.fillText(clock(t), Math.min(Math.max(x, left + 24), left + w - 24), top + h + 6);
    }
  } else {
    ctx.fillText("no samples yet", left + w / 2, top + h / 2);
  }
  series.forEach((s) => {
    ctx.strokeStyle = cssVar(s.color);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach((p, j) => {
      const x = left + ((p.ts_ms - t0) / span) * w;
      const y = top + h - ((Number(p[s.key]) || 0) / max) * h;
      if (j === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
  c.dataset.points = String(points.length); // for tests: the chart has data
}

function interfaceRates(sample) {
  // Per-interface rates from two consecutive samples of this page (the table keeps only
  // fleet-wide rates).
  const prev = detail.prev;
  const out = new Map();
  if (prev && sample && sample.ts_ms > prev.ts_ms) {
    const dt = (sample.ts_ms - prev.ts_ms) / 1000;
    const before = new Map((prev.interfaces || []).map((i) => [i.name, i]));
    for (const i of sample.interfaces || []) {
      const b = before.get(i.name);
      if (b && i.rx_bytes >= b.rx_bytes && i.tx_bytes >= b.tx_bytes) {
        out.set(i.name, { rx: (i.rx_bytes - b.rx_bytes) / dt, tx: (i.tx_bytes - b.tx_bytes) / dt });
      }
    }
    detail.rates = out;
  }
  if (sample && (!prev || sample.ts_ms !== prev.ts_ms)) detail.prev = sample;
  return detail.rates;
}

function identityText(h) {
  if (h.identity === "cloned") {
    return "cloned: " + h.cloned_address + " also proves this key (" + ago(serverNow() - h.cloned_ms) + ")";
  }
  if (h.identity === "pinned") return "pinned, key sha256 " + String(h.key_sha256).slice(0, 16) + "…";
  return "unpinned (the agent sends no key)";
}

function renderHost(h) {
  const now = serverNow();
  document.title = h.hostname + " – Sentinel";
  document.getElementById("host-title").textContent = h.hostname;
  const st = document.getElementById("host-status");
  st.className = "status-line " + statusClass(h.status);
  st.replaceChildren(el("span", "dot"), el("span", "st-text", h.status),
    el("span", "seen", " · last seen " + ago(now - h.last_seen_ms)));
  facts(document.getElementById("host-facts"), [
    ["Agent id", h.id],
    ["Identity", identityText(h)],
    ["Address", h.address],
    ["Agent version", h.agent_version],
    ["OS", h.os + " " + h.kernel + " (" + h.arch + ")"],
    ["CPU", h.cpu_model + " × " + h.cpu_count],
    ["Load 1/5/15", fixed(h.load1, 2) + " " + fixed(h.load5, 2) + " " + fixed(h.load15, 2)],
    ["Uptime", duration(h.uptime_s)],
    ["Processes", h.processes],
  ]);
  facts(document.getElementById("host-pipeline"), [
    ["Samples received", h.samples_received],
    ["Replayed", h.samples_replayed],
    ["Dropped (agent spool)", h.samples_dropped],
    ["Missing", h.samples_missing],
    ["Acked by an earlier master", h.samples_before_start],
    ["Duplicates", h.duplicates],
    ["Reconnects", h.reconnects],
    ["Clock offset", h.clock_offset_ms + " ms"],
    ["Interval", h.interval_ms + " ms"],
    ["Last sequence", h.last_seq],
  ]);
  const s = h.sample || {};
  document.getElementById("host-memory").replaceChildren(
    usageRow("Memory", h.mem_used_bytes, h.mem_total_bytes),
    usageRow("Swap", h.swap_used_bytes, h.swap_total_bytes));
  const cores = (s.cpu_cores_percent || []).map((v, i) => {
    const d = el("div", "core");
    d.appendChild(el("span", "label", "cpu" + i));
    d.appendChild(bar(v));
    d.appendChild(el("span", "v", pct(v)));
    return d;
  });
  document.getElementById("host-cores").replaceChildren(...cores);
  const fsRows = (s.filesystems || []).map((f) => {
    // Used and its percentage as df shows them, computed by the master (docs/CONTRACT.md).
    const used = f.used_bytes;
    const p = isNum(f.used_ratio) ? 100 * f.used_ratio : NaN;
    const tr = el("tr");
    tr.appendChild(el("td", "", f.mount));
    tr.appendChild(el("td", "", f.fs_type));
    tr.appendChild(el("td", "num", bytes(used)));
    tr.appendChild(el("td", "num", bytes(f.total_bytes)));
    const u = el("td");
    u.appendChild(bar(p));
    u.appendChild(el("span", "v", pct(p)));
    tr.appendChild(u);
    return tr;
  });
  document.getElementById("host-fs").replaceChildren(...fsRows);
  const rates = interfaceRates(h.sample);
  const ifRows = (s.interfaces || []).map((i) => {
    const r = rates.get(i.name);
    const tr = el("tr");
    tr.appendChild(el("td", "", i.name));
    tr.appendChild(el("td", "num", r ? rate(r.rx) : "–"));
    tr.appendChild(el("td", "num", r ? rate(r.tx) : "–"));
    tr.appendChild(el("td", "num", bytes(i.rx_bytes)));
    tr.appendChild(el("td", "num", bytes(i.tx_bytes)));
    return tr;
  });
  document.getElementById("host-if").replaceChildren(...ifRows);
  const pts = (h.history && h.history.points) || [];
  chart("chart-cpu", pts, [{ key: "cpu_percent", color: "--bar", max: 100 }], (v) => v.toFixed(0) + " %");
  chart("chart-mem", pts, [{ key: "mem_used_bytes", color: "--bar", max: h.mem_total_bytes }], bytes);
  chart("chart-load", pts, [{ key: "load1", color: "--bar" }], (v) => v.toFixed(2));
  chart("chart-net", pts, [{ key: "net_rx_bytes_per_s", color: "--bar" }, { key: "net_tx_bytes_per_s", color: "--alt" }], rate);
  chart("chart-disk", pts, [{ key: "disk_read_bytes_per_s", color: "--bar" }, { key: "disk_write_bytes_per_s", color: "--alt" }], rate);
}

async function pollHost() {
  try {
    const r = await fetch("/api/v1/hosts/" + encodeURIComponent(detail.id), { cache: "no-store" });
    if (r.status === 404) {
      document.getElementById("host-title").textContent = "Unknown host";
      detail.known = false;
      showAdmin();
      setMode("live");
      return;
    }
    if (!r.ok) throw new Error("HTTP " + r.status);
    const h = await r.json();
    setMode("live");
    renderHost(h);
    detail.known = true;
    showAdmin();
    if (perf.firstRenderMs === null) perf.firstRenderMs = performance.now();
  } catch (e) {
    setMode("lost");
  }
}

// Operators (GET /api/v1/session says may_write) get a button that removes the host
// (DELETE /api/v1/hosts/{id}); everyone else never sees it. The box's `data-may-write` records
// the answer once it is known (the browser test waits for it before it checks that a viewer
// has no button).
async function initAdmin() {
  const box = document.getElementById("host-admin");
  let session = null;
  try {
    const r = await fetch("/api/v1/session", { cache: "no-store" });
    if (r.ok) session = await r.json();
  } catch (e) {
    // No answer: no button.
  }
  detail.mayWrite = Boolean(session && session.may_write);
  box.dataset.mayWrite = String(detail.mayWrite);
  showAdmin();
  if (!detail.mayWrite) return;
  const result = document.getElementById("remove-result");
  document.getElementById("remove-host").addEventListener("click", async () => {
    const name = document.getElementById("host-title").textContent;
    if (!window.confirm("Remove " + name + " from the table? Its history is deleted; a running agent comes back as a new host.")) return;
    try {
      const r = await fetch("/api/v1/hosts/" + encodeURIComponent(detail.id), { method: "DELETE", cache: "no-store" });
      const body = await r.json();
      if (r.ok) {
        window.location.assign("/");
      } else {
        result.textContent = "Not removed: " + (body.error || "HTTP " + r.status);
      }
    } catch (e) {
      result.textContent = "Not removed: the master did not answer.";
    }
  });
}

function initHost(id) {
  detail.id = id;
  initAdmin();
  document.getElementById("host-view").hidden = false;
  setMode("connecting");
  pollHost();
  setInterval(pollHost, DETAIL_MS);
  // Canvas colours come from CSS variables: redraw when the colour scheme flips.
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", pollHost);
}

document.addEventListener("DOMContentLoaded", () => {
  const m = location.pathname.match(/^\/hosts\/([^/]+)$/);
  if (m) initHost(decodeURIComponent(m[1]));
  else initFleet();
});

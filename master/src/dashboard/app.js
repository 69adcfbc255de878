// Sentinel dashboard: the fleet view (/) and the host view (/hosts/{id}).
//
// Everything an agent sends (hostnames, label names and values included) is hostile text: it
// reaches the page only through textContent, createTextNode and setAttribute on inert
// attributes (data-*, title, aria-*, and href built from encodeURIComponent), never as markup.
// Live updates come over Server-Sent Events (/api/v1/events, filtered to the rows of the page);
// when the stream fails the page re-reads its page of /api/v1/hosts every 2 s and keeps trying
// the stream; when the master cannot be reached at all a "connection lost, retrying" banner
// shows until it answers again.
"use strict";

const STATUSES = ["up", "stale", "down", "stopped"];
const ROW_HEIGHT = 34; // px; must match `#fleet tbody tr { height }` in style.css
const OVERSCAN = 8; // rows rendered above and below the visible ones
const POLL_MS = 2000; // fallback polling cadence
const SILENCE_MS = 5000; // no event (ticks come every second) for this long = connection lost
const DETAIL_MS = 1000; // host view refresh

// Measurements the browser test reads (time to first render, cost of each update).
// `sseBytes`: the characters of the event stream's messages (the perf test compares them
// with what the browser's network stack received).
const perf = { firstRenderMs: null, updates: [], renders: [], sseBytes: 0 };
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

// ---------------------------------------------------------------- fleet view: state in the URL
//
// The fleet view shows one page of the hosts that match the filter: the master filters,
// counts and orders them (`/api/v1/groups`, `/api/v1/hosts?...&limit&offset`), and the event
// stream is opened with the same filter and the `ids` of the rows on the page, so a browser
// receives the updates of at most one page of hosts whatever the size of the fleet. The whole
// view (filter, status, grouping, collapsed groups, compact mode, page, sort) is the URL's
// query, so a view can be bookmarked and shared, and back/forward move between views.

const PAGE_SIZE = 100; // rows per page
const PAGE_SIZE_COMPACT = 200; // rows per page in compact mode (big screens)
const ROW_HEIGHT_COMPACT = 22; // px; must match `body.compact #fleet tbody tr` in style.css
const COLS = 13; // columns of the fleet table
const FILTER_DEBOUNCE_MS = 250; // typing in the filter box re-reads the page after this pause
const REFETCH_MIN_MS = 1000; // the page's membership is re-read at most this often on changes
const RESYNC_MS = 30000; // and this often anyway (a host replaced by another keeps the counts)
const TOTAL_POLL_MS = 2000; // ungrouped, the counts are polled (the stream sends `groups` only when grouped)
const LABELS_MS = 10000; // the group-by choices (label names) are re-read at most this often
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/; // a label name (docs/PROTOCOL.md 1.2)
const NO_IDS = "0".repeat(32); // `ids=` of a page without rows: an id no host has

const view = {
  q: "", // free text (`q`)
  labels: [], // `label` parameters, as the API takes them
  status: [], // statuses shown (empty = all)
  group: "", // label name to group by ("" = no grouping)
  compact: false,
  page: 1, // 1-based
  sortKey: "hostname",
  sortDir: 1,
  collapsed: new Set(), // group keys (the value; "" = hosts without the label) shown collapsed
};

function readUrl() {
  const p = new URLSearchParams(location.search);
  view.q = p.get("q") || "";
  view.labels = p.getAll("label").filter((l) => l !== "");
  view.status = (p.get("status") || "").split(",").filter((s) => STATUSES.includes(s));
  const g = p.get("group") || "";
  view.group = NAME_RE.test(g) ? g : "";
  view.compact = p.get("compact") === "1";
  view.page = Math.max(1, parseInt(p.get("page") || "1", 10) || 1);
  const sort = p.get("sort") || "hostname";
  const key = sort.replace(/^-/, "");
  view.sortKey = SORT_KEYS[key] ? key : "hostname";
  view.sortDir = sort.startsWith("-") ? -1 : 1;
  view.collapsed = new Set(view.group ? p.getAll("collapsed") : []);
}

function viewUrl() {
  const p = new URLSearchParams();
  if (view.q) p.set("q", view.q);
  for (const l of view.labels) p.append("label", l);
  if (view.status.length) p.set("status", view.status.join(","));
  if (view.group) p.set("group", view.group);
  for (const c of view.collapsed) p.append("collapsed", c);
  if (view.compact) p.set("compact", "1");
  if (view.sortKey !== "hostname" || view.sortDir !== 1) p.set("sort", (view.sortDir < 0 ? "-" : "") + view.sortKey);
  if (view.page > 1) p.set("page", String(view.page));
  const q = p.toString();
  return "/" + (q ? "?" + q : "");
}

// Records the view in the URL: a new history entry (`push`) or the current one replaced.
function commitUrl(push) {
  const url = viewUrl();
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

// ---------------------------------------------------------------- the filter box
//
// Words separated by blanks; "..." quotes (with \" and \\ inside). A word `name=value`,
// `name!=value`, `name=*` (has the label) or `!name` (lacks it) is a label filter; every
// other word is free text, and the free words joined by one space are `q`. A bare `name` is
// free text (a search for "db" finds hostnames and label values containing db), and a whole
// word in quotes is always free text.

function words(text) {
  const out = [];
  let i = 0;
  while (i < text.length) {
    while (i < text.length && /\s/.test(text[i])) i++;
    if (i >= text.length) break;
    let w = "", quoted = false;
    const literal = text[i] === '"';
    while (i < text.length && (quoted || !/\s/.test(text[i]))) {
      const c = text[i];
      if (c === '"') { quoted = !quoted; i++; continue; }
      if (c === "\\" && quoted && i + 1 < text.length) { w += text[i + 1]; i += 2; continue; }
      w += c;
      i++;
    }
    out.push({ w, literal });
  }
  return out;
}

// A word as a `label` parameter, or null for free text.
function labelOf(word) {
  if (word.literal) return null;
  const w = word.w;
  if (w.startsWith("!") && NAME_RE.test(w.slice(1))) return w;
  const m = /^([A-Za-z_][A-Za-z0-9_]*)(!=|=)(.+)$/s.exec(w);
  if (!m) return null;
  if (m[2] === "=" && m[3] === "*") return m[1];
  return w;
}

function parseFilter(text) {
  const labels = [], free = [];
  for (const word of words(text)) {
    const l = labelOf(word);
    if (l === null) free.push(word.w);
    else labels.push(l);
  }
  return { q: free.join(" "), labels };
}

function quote(s) {
  return '"' + s.replace(/[\\"]/g, (c) => "\\" + c) + '"';
}

// A value as the box writes it: quoted when it would not read back as itself.
function boxValue(v) {
  return /[\s"\\]/.test(v) || v === "*" || v === "" ? quote(v) : v;
}

function labelText(l) {
  if (NAME_RE.test(l)) return l + "=*";
  if (l.startsWith("!")) return l;
  const m = /^([A-Za-z_][A-Za-z0-9_]*)(!=|=)(.*)$/s.exec(l);
  return m ? m[1] + m[2] + boxValue(m[3]) : quote(l);
}

// The box's text for the view (labels first, then the free text).
function filterText() {
  const parts = view.labels.map(labelText);
  if (view.q) {
    const back = parseFilter(view.q);
    parts.push(back.labels.length === 0 && back.q === view.q ? view.q : quote(view.q));
  }
  return parts.join(" ");
}

// ---------------------------------------------------------------- fleet view: data

const fleet = {
  rows: new Map(), // id -> HOST object (with spark) of the rows on the page
  parts: [], // the page's groups (one part without a header when ungrouped), see loadPage
  total: null, // {hosts, up, stale, down, stopped}: the filter's hosts whatever their status
  groups: null, // the `groups` of /api/v1/groups?by=view.group
  matching: 0, // rows of the view (status filter applied, collapsed groups excluded)
  pages: 1,
  signature: "", // the counts the page was loaded with (a change re-reads the page)
  refused: false, // the master refused the filter (400): nothing to show or stream
  loadSeq: 0, // loads started; an answer to an older one is ignored
  loading: null, // the load in progress (a Promise)
  again: false, // another load was asked for while one ran
  lastLoad: 0,
  refetchTimer: null,
  view: [], // display items: {part} (group header) or {h} (host row)
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

function pageSize() {
  return view.compact ? PAGE_SIZE_COMPACT : PAGE_SIZE;
}

function rowHeight() {
  return view.compact ? ROW_HEIGHT_COMPACT : ROW_HEIGHT;
}

// The filter as query parameters; `withStatus` adds the status filter.
function filterParams(withStatus) {
  const p = new URLSearchParams();
  if (view.q) p.set("q", view.q);
  for (const l of view.labels) p.append("label", l);
  if (withStatus && view.status.length) p.set("status", view.status.join(","));
  return p;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(url) {
  const r = await fetch(url, { cache: "no-store" });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new ApiError(r.status, body && typeof body.error === "string" ? body.error : "HTTP " + r.status);
  return { r, body };
}

function groupKey(value) {
  return value === null || value === undefined ? "" : String(value);
}

// How many of a group's (or the total's) hosts the status filter keeps.
function matching(c) {
  if (!c) return 0;
  if (!view.status.length) return Number(c.hosts) || 0;
  return view.status.reduce((n, s) => n + (Number(c[s]) || 0), 0);
}

// The parts of the view, in order: each group (or the one ungrouped part) with the rows it
// has under the status filter and where they start in the view's sequence of rows.
function planParts() {
  const parts = view.group
    ? (fleet.groups || []).map((g) => ({ key: groupKey(g.value), value: g.value, counts: g, n: matching(g) }))
      .filter((p) => p.n > 0)
    : [{ key: null, value: null, counts: fleet.total, n: matching(fleet.total) }];
  let start = 0;
  for (const p of parts) {
    p.collapsed = p.key !== null && view.collapsed.has(p.key);
    p.start = start;
    if (!p.collapsed) start += p.n;
  }
  return { parts, rows: start };
}

function signatureOf(parts) {
  return JSON.stringify(parts.map((p) => [p.key, p.n]));
}

function applyCounts(body) {
  if (!body) return;
  if (body.total) fleet.total = body.total;
  if (view.group && body.by === view.group && Array.isArray(body.groups)) fleet.groups = body.groups;
}

// New counts (a `groups` event or the polled total): the page is re-read if the rows it
// should hold moved.
function countsChanged(body) {
  applyCounts(body);
  // The headers on the page show the new counts at once.
  const byKey = new Map((fleet.groups || []).map((g) => [groupKey(g.value), g]));
  for (const p of fleet.parts) {
    const c = p.key === null ? fleet.total : byKey.get(p.key);
    if (c) p.counts = c;
  }
  if (signatureOf(planParts().parts) !== fleet.signature) scheduleRefetch();
  schedule();
}

function groupFilter(p) {
  if (p.key === null) return null;
  return p.value === null ? "!" + view.group : view.group + "=" + p.value;
}

// Reads the page: the counts, then the rows of each group part on it.
async function loadPage() {
  const seq = ++fleet.loadSeq;
  const counts = filterParams(false);
  if (view.group) counts.set("by", view.group);
  const c = await api("/api/v1/groups?" + counts);
  if (seq !== fleet.loadSeq) return false;
  applyCounts(c.body);
  if (view.group && !fleet.groups) fleet.groups = [];
  const P = pageSize();
  const { parts, rows } = planParts();
  const pages = Math.max(1, Math.ceil(rows / P));
  if (view.page > pages) {
    view.page = pages;
    commitUrl(false);
  }
  const lo = (view.page - 1) * P, hi = lo + P;
  const onPage = [];
  for (const p of parts) {
    const a = Math.max(lo, p.start), b = Math.min(hi, p.start + p.n);
    p.offset = a - p.start;
    p.limit = p.collapsed ? 0 : Math.max(0, b - a);
    // A group's header is on every page its rows are on; a collapsed one on the page where
    // its rows would start.
    const here = p.collapsed
      ? Math.min(pages, Math.floor(p.start / P) + 1) === view.page
      : p.limit > 0 || (rows === 0 && view.page === 1);
    if (here) onPage.push(p);
  }
  const answers = await Promise.all(onPage.map(async (p) => {
    if (p.limit === 0) return { hosts: [] };
    const q = filterParams(true);
    const g = groupFilter(p);
    if (g !== null) q.append("label", g);
    q.set("limit", String(p.limit));
    q.set("offset", String(p.offset));
    const r = await api("/api/v1/hosts?" + q);
    const body = r.body;
    const hosts = Array.isArray(body) ? body : body.hosts || [];
    if (body && isNum(body.now_ms)) serverOffset = body.now_ms - Date.now();
    return { hosts, total: Number(r.r.headers.get("X-Total-Count")) };
  }));
  if (seq !== fleet.loadSeq) return false;
  const prev = fleet.rows;
  fleet.rows = new Map();
  onPage.forEach((p, i) => {
    p.ids = [];
    for (const h of answers[i].hosts) {
      const old = prev.get(h.id);
      // Keep the sparkline the stream extended if it is newer than the answer's.
      if (old && old.spark && h.spark && old.spark.n > h.spark.n) h.spark = old.spark;
      fleet.rows.set(h.id, h);
      p.ids.push(h.id);
    }
  });
  fleet.parts = onPage;
  pruneCaches();
  fleet.matching = rows;
  fleet.pages = pages;
  fleet.signature = signatureOf(parts);
  fleet.refused = false;
  fleet.lastLoad = Date.now();
  showFilterError(null);
  recompute();
  if (conn.mode !== "connecting") renderRows();
  return true;
}

// Runs loadPage, one at a time; asked again while one runs, it runs once more after it.
function reload() {
  if (fleet.loading) {
    fleet.again = true;
    return fleet.loading;
  }
  fleet.loading = (async () => {
    try {
      do {
        fleet.again = false;
        try {
          await loadPage();
          onLoaded();
        } catch (e) {
          onLoadError(e);
        }
      } while (fleet.again);
    } finally {
      fleet.loading = null;
    }
  })();
  return fleet.loading;
}

// The page was read: while the stream is down (polling) the page says so; the first view is
// shown once the stream's snapshot or the first poll confirmed it.
function onLoaded() {
  if (pollTimer && conn.mode !== "live") setMode("polling");
  schedule();
  ensureStream();
}

function onLoadError(e) {
  if (e instanceof ApiError && e.status === 400) {
    // A filter the master refuses (docs/CONTRACT.md): say why, show nothing.
    showFilterError(e.message);
    fleet.rows = new Map();
    fleet.parts = [];
    fleet.total = null;
    fleet.groups = null;
    fleet.matching = 0;
    fleet.pages = 1;
    fleet.signature = "";
    fleet.refused = true;
    pruneCaches();
    recompute();
    renderRows();
    ensureStream();
    return;
  }
  setMode("lost");
}

function showFilterError(message) {
  const p = document.getElementById("filter-error");
  p.hidden = message === null;
  p.textContent = message === null ? "" : "The master refused this filter: " + message;
}

// The page's membership may have changed: re-read it, at most every REFETCH_MIN_MS.
function scheduleRefetch() {
  if (fleet.refetchTimer) return;
  const wait = Math.max(0, fleet.lastLoad + REFETCH_MIN_MS - Date.now());
  fleet.refetchTimer = setTimeout(() => {
    fleet.refetchTimer = null;
    reload();
  }, wait);
}

// Typing in the filter box applies after a pause (FILTER_DEBOUNCE_MS).
let typing = null;

// Applies the filter box's text to the view now; true if that changed the filter.
function takeFilterBox() {
  clearTimeout(typing);
  typing = null;
  const f = parseFilter(document.getElementById("filter").value);
  if (f.q === view.q && JSON.stringify(f.labels) === JSON.stringify(view.labels)) return false;
  view.q = f.q;
  view.labels = f.labels;
  view.page = 1;
  return true;
}

// The user changed the view: record it (`push`: a new history entry) and read the page.
// Text still pending in the filter box is part of the change.
function viewChanged(push) {
  if (typing) takeFilterBox();
  commitUrl(push);
  syncControls();
  reload();
}

// ---------------------------------------------------------------- fleet view: rendering

function recompute() {
  const key = SORT_KEYS[view.sortKey] || SORT_KEYS.hostname;
  const dir = view.sortDir;
  const items = [];
  for (const p of fleet.parts) {
    if (p.key !== null) items.push({ part: p });
    const rows = [];
    for (const id of p.ids || []) {
      const h = fleet.rows.get(id);
      if (h) rows.push({ k: key(h), n: h.hostname, id: h.id, h });
    }
    rows.sort((a, b) => {
      if (a.k < b.k) return -dir;
      if (a.k > b.k) return dir;
      if (a.n < b.n) return -1;
      if (a.n > b.n) return 1;
      return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    });
    for (const r of rows) items.push({ h: r.h });
  }
  fleet.view = items;
  fleet.dirty = false;
}

function countButton(value, text, cls) {
  const b = el("button", "count " + cls, text);
  b.type = "button";
  const pressed = value === "" ? view.status.length === 0 : view.status.includes(value);
  b.setAttribute("aria-pressed", String(pressed));
  b.dataset.status = value;
  return b;
}

let countsKey = "";
function renderCounts() {
  const t = fleet.total || { hosts: 0, up: 0, stale: 0, down: 0, stopped: 0 };
  const key = JSON.stringify([t, view.status]);
  if (key === countsKey) return;
  countsKey = key;
  const parts = [countButton("", (Number(t.hosts) || 0) + " hosts", "all")];
  for (const s of STATUSES) parts.push(countButton(s, (Number(t[s]) || 0) + " " + s, statusClass(s)));
  document.getElementById("counts").replaceChildren(...parts);
}

// The label chips of a host: buttons that add the label to the filter.
function labelChips(labels) {
  const out = [];
  for (const [k, v] of Object.entries(labels || {})) {
    const b = el("button", "chip", k + "=" + v);
    b.type = "button";
    b.title = "Filter by " + k + "=" + v;
    b.dataset.label = k + "=" + v;
    out.push(b);
  }
  return out;
}

function groupRow(p) {
  const tr = el("tr", "group" + (p.collapsed ? " collapsed" : ""));
  tr.dataset.group = p.key;
  const td = el("td", "group-head");
  td.colSpan = COLS;
  const toggle = el("button", "toggle");
  toggle.type = "button";
  toggle.setAttribute("aria-expanded", String(!p.collapsed));
  toggle.appendChild(el("span", "caret", p.collapsed ? "▸" : "▾"));
  toggle.appendChild(el("span", "gname", p.value === null ? "no " + view.group : view.group + "=" + p.value));
  td.appendChild(toggle);
  const c = p.counts || {};
  td.appendChild(el("span", "gcount", (Number(c.hosts) || 0) + " hosts"));
  for (const s of STATUSES) {
    const n = el("span", "gst " + statusClass(s), (Number(c[s]) || 0) + " " + s);
    n.dataset.status = s;
    td.appendChild(n);
  }
  const b = c.busiest;
  if (b && typeof b.hostname === "string") {
    const busy = el("span", "busiest", "busiest ");
    const a = el("a", "", b.hostname);
    a.href = "/hosts/" + encodeURIComponent(String(b.id));
    busy.appendChild(a);
    busy.appendChild(document.createTextNode(" " + pct(b.cpu_percent)));
    td.appendChild(busy);
  }
  tr.appendChild(td);
  return tr;
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
  const labels = el("td", "labels");
  labels.replaceChildren(...labelChips(h.labels));
  // Chips beyond the cell's width are cut off: the cell's title lists them all.
  labels.title = Object.entries(h.labels || {}).map(([k, v]) => k + "=" + v).join("\n");
  tr.appendChild(labels);

  const st = el("td", "status");
  st.appendChild(el("span", "dot"));
  let text = h.status;
  if (!h.connected && h.status !== "stopped") text += ", disconnected";
  st.appendChild(el("span", "st-text", text));
  st.appendChild(el("span", "seen", seenText(h, now)));
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

// The two spacer rows standing for the rows above and below the rendered ones (kept, only
// their height changes).
const spacers = { top: null, bottom: null };
function spacer(which, height) {
  let tr = spacers[which];
  if (!tr) {
    tr = el("tr", "spacer");
    tr.setAttribute("aria-hidden", "true");
    const td = el("td");
    td.colSpan = COLS;
    tr.appendChild(td);
    spacers[which] = tr;
  }
  const h = height + "px";
  if (tr.style.height !== h) tr.style.height = h;
  return tr;
}

// Rendered rows kept between renders: a host's row is rebuilt only when its object changed
// (an update or a re-read replaces it), else only its "last seen" text moves; a group header
// only when what it shows changed. An update renders the few rows that changed, not the page.
const rowCache = new Map(); // id -> {h, tr, seen, seenText}
const headCache = new Map(); // group key -> {sig, tr}

function seenText(h, now) {
  return "last seen " + ago(now - h.last_seen_ms);
}

// Rows on screen whose host changed are rebuilt at most this many per render (a frame); the
// others keep their previous row until the next frame, so one render stays well inside a frame
// however many of the page's hosts an update changed (a compact page streams 200 hosts).
// Rows new to the screen (a scroll, a new page) are always built at once.
const REFRESH_PER_RENDER = 8;
const refresh = { done: 0, left: false };

function cachedHostRow(h, now) {
  const text = seenText(h, now);
  const c = rowCache.get(h.id);
  const stale = c && c.h !== h;
  if (c && (!stale || refresh.done >= REFRESH_PER_RENDER)) {
    if (stale) refresh.left = true;
    if (c.seenText !== text) {
      c.seen.textContent = text;
      c.seenText = text;
    }
    return c.tr;
  }
  if (stale) refresh.done++;
  const tr = hostRow(h, now);
  rowCache.set(h.id, { h, tr, seen: tr.querySelector(".seen"), seenText: text });
  return tr;
}

function cachedGroupRow(p) {
  const sig = JSON.stringify([view.group, p.value, p.collapsed, p.counts]);
  const c = headCache.get(p.key);
  if (c && c.sig === sig) return c.tr;
  const tr = groupRow(p);
  headCache.set(p.key, { sig, tr });
  return tr;
}

// Drops kept rows of hosts and groups no longer on the page.
function pruneCaches() {
  for (const id of rowCache.keys()) if (!fleet.rows.has(id)) rowCache.delete(id);
  const keys = new Set(fleet.parts.map((p) => p.key));
  for (const k of headCache.keys()) if (!keys.has(k)) headCache.delete(k);
}

// Makes `body`'s children `want`: rows that stayed in place are left alone, new rows replace
// old ones one by one; anything else (a scroll moved rows) is one replaceChildren.
function reconcile(body, want) {
  const have = body.children;
  if (have.length === want.length) {
    const swaps = [];
    for (let i = 0; i < want.length; i++) {
      if (have[i] === want[i]) continue;
      if (want[i].isConnected) {
        body.replaceChildren(...want);
        return;
      }
      swaps.push(i);
    }
    for (const i of swaps) have[i].replaceWith(want[i]);
    return;
  }
  body.replaceChildren(...want);
}

function renderPager() {
  const P = pageSize();
  const first = fleet.matching === 0 ? 0 : (view.page - 1) * P + 1;
  const last = Math.min(fleet.matching, view.page * P);
  document.getElementById("page-info").textContent =
    "page " + view.page + " of " + fleet.pages + " (" + first + "–" + last + " of " + fleet.matching + ")";
  document.getElementById("page-prev").disabled = view.page <= 1;
  document.getElementById("page-next").disabled = view.page >= fleet.pages;
  document.getElementById("pager").hidden = fleet.pages <= 1;
}

// Renders only the rows in (or near) the viewport; the rest is two spacer rows.
function renderRows() {
  const t0 = performance.now();
  if (fleet.dirty) recompute();
  const vp = document.getElementById("viewport");
  const body = document.getElementById("hosts");
  const total = fleet.view.length;
  const rh = rowHeight();
  const head = document.querySelector("#fleet thead").offsetHeight || 0;
  const top = Math.max(0, vp.scrollTop - head);
  const first = Math.max(0, Math.floor(top / rh) - OVERSCAN);
  const visible = Math.ceil((vp.clientHeight || 800) / rh) + 2 * OVERSCAN;
  const last = Math.min(total, first + visible);
  const now = serverNow();
  refresh.done = 0;
  refresh.left = false;
  const rows = [spacer("top", first * rh)];
  for (let i = first; i < last; i++) {
    const it = fleet.view[i];
    rows.push(it.part ? cachedGroupRow(it.part) : cachedHostRow(it.h, now));
  }
  rows.push(spacer("bottom", (total - last) * rh));
  reconcile(body, rows);
  if (refresh.left) schedule(); // the rest of the changed rows, next frame
  const filtered = view.q || view.labels.length || view.status.length;
  const empty = document.getElementById("empty");
  empty.hidden = total > 0 || fleet.total === null;
  empty.textContent = filtered ? "No host matches the filter." : "No agents have reported yet.";
  const n = fleet.total ? matching(fleet.total) : 0;
  document.getElementById("shown").textContent = filtered ? n + (n === 1 ? " host matches" : " hosts match") : "";
  renderCounts();
  renderPager();
  for (const th of document.querySelectorAll("#fleet th[data-sort]")) {
    const on = th.dataset.sort === view.sortKey;
    th.setAttribute("aria-sort", on ? (view.sortDir > 0 ? "ascending" : "descending") : "none");
  }
  if (perf.firstRenderMs === null && fleet.lastLoad > 0 && conn.mode !== "connecting") perf.firstRenderMs = performance.now();
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

// Live data re-renders at most every DATA_RENDER_MS; the user's own actions (scroll, sort,
// filter) render on the next frame.
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

const SPARK_POINTS = 60;

// An update carries only the sparkline points the page lacks (`spark_add`: the points
// numbered n - len .. n); append those after the page's own count.
function mergeHost(h) {
  const old = fleet.rows.get(h.id);
  if (!old) return false; // not on this page (any more)
  const add = h.spark_add;
  if (add) {
    delete h.spark_add;
    const sp = old.spark ? old.spark : { n: add.n - add.cpu.length, cpu: [], mem: [] };
    const start = add.n - add.cpu.length;
    for (let i = Math.max(0, sp.n - start); i < add.cpu.length; i++) {
      sp.cpu.push(add.cpu[i]);
      sp.mem.push(add.mem[i]);
    }
    sp.n = Math.max(sp.n, add.n);
    if (sp.cpu.length > SPARK_POINTS) sp.cpu.splice(0, sp.cpu.length - SPARK_POINTS);
    if (sp.mem.length > SPARK_POINTS) sp.mem.splice(0, sp.mem.length - SPARK_POINTS);
    h.spark = sp;
  } else if (!h.spark) {
    h.spark = old.spark;
  }
  fleet.rows.set(h.id, h);
  // A row whose status left the status filter is no longer one of the page's.
  if (view.status.length && !view.status.includes(h.status)) scheduleRefetch();
  return true;
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

// The stream's snapshot holds the page's hosts that still match: take their newest rows; a
// page host it lacks stopped matching (or was removed) meanwhile.
function applySnapshot(data) {
  serverOffset = data.now_ms - Date.now();
  let missing = false;
  const got = new Set();
  for (const h of data.hosts) {
    if (!fleet.rows.has(h.id)) continue;
    fleet.rows.set(h.id, h);
    got.add(h.id);
  }
  for (const id of fleet.rows.keys()) if (!got.has(id)) missing = true;
  if (missing) scheduleRefetch();
  fleet.dirty = true;
  schedule();
}

// ---------------------------------------------------------------- fleet view: the stream

let source = null;
let sourceUrl = "";
let pollTimer = null;
let totalTimer = null;

function onEvent() {
  conn.lastEvent = Date.now();
}

function streamUrl() {
  // A refused filter: a stream of no host, for the ticks (the master is still there).
  if (fleet.refused) return "/api/v1/events?ids=" + NO_IDS;
  const p = filterParams(false);
  const ids = [...fleet.rows.keys()].sort();
  p.set("ids", ids.length ? ids.join(",") : NO_IDS);
  if (view.group) p.set("group_by", view.group);
  return "/api/v1/events?" + p;
}

function closeStream() {
  if (source) source.close();
  source = null;
  sourceUrl = "";
}

// (Re)opens the event stream when the page's hosts or the filter changed.
function ensureStream(force) {
  const url = streamUrl();
  if (!force && source && url === sourceUrl && source.readyState !== EventSource.CLOSED) return;
  connectStream(url);
}

function connectStream(url) {
  closeStream();
  sourceUrl = url;
  const es = new EventSource(url);
  source = es;
  const mine = (fn) => (e) => { if (source === es) fn(e); };
  es.addEventListener("snapshot", mine((e) => {
    onEvent();
    perf.sseBytes += e.data.length;
    applySnapshot(JSON.parse(e.data));
    stopPolling();
    setMode("live");
  }));
  es.addEventListener("hosts", mine((e) => {
    const t0 = performance.now();
    onEvent();
    perf.sseBytes += e.data.length;
    applyHosts(JSON.parse(e.data), t0);
  }));
  es.addEventListener("groups", mine((e) => {
    onEvent();
    perf.sseBytes += e.data.length;
    countsChanged(JSON.parse(e.data));
  }));
  // Hosts whose slot was freed (removed by an operator, or expired), or that stopped
  // matching the filter (`"reason":"filter"`): drop them and re-read the page.
  es.addEventListener("removed", mine((e) => {
    onEvent();
    perf.sseBytes += e.data.length;
    let gone = false;
    for (const id of JSON.parse(e.data).ids) gone = fleet.rows.delete(id) || gone;
    if (gone) {
      fleet.dirty = true;
      renderRows();
    }
    scheduleRefetch();
  }));
  es.addEventListener("tick", mine((e) => {
    onEvent();
    perf.sseBytes += e.data.length;
    serverOffset = JSON.parse(e.data).now_ms - Date.now();
    scheduleData(); // "last seen N s ago" moves on
  }));
  es.onerror = mine(() => {
    // The browser retries by itself while readyState is CONNECTING; meanwhile find out
    // whether the master answers plain requests (stream broken) or not at all (lost).
    startPolling();
    if (es.readyState === EventSource.CLOSED) setTimeout(() => { if (source === es) ensureStream(true); }, POLL_MS);
  });
}

async function pollOnce() {
  await reload();
  if (conn.mode !== "lost") onEvent();
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

// Ungrouped, the stream sends no `groups` event: the counts are read every TOTAL_POLL_MS
// (a few hundred bytes) while the stream is live.
async function pollTotal() {
  if (view.group || conn.mode !== "live" || fleet.loading) return;
  try {
    const c = await api("/api/v1/groups?" + filterParams(false));
    if (!view.group) countsChanged(c.body);
  } catch (e) {
    // The stream's own error handling reports a lost master.
  }
}

function watchdog() {
  if (conn.mode === "live" && Date.now() - conn.lastEvent > SILENCE_MS) {
    // A stream that went silent (e.g. a half-open connection): start over.
    setMode("lost");
    startPolling();
    ensureStream(true);
  }
  if (Date.now() - fleet.lastLoad > RESYNC_MS && conn.mode === "live") reload();
}

// ---------------------------------------------------------------- fleet view: controls

let labelsRead = 0;

// The group-by choices: the label names the fleet has (plus the one in the URL).
async function readLabelNames() {
  if (Date.now() - labelsRead < LABELS_MS) return;
  labelsRead = Date.now();
  let names = [];
  try {
    const r = await api("/api/v1/labels");
    names = ((r.body && r.body.labels) || []).map((l) => l.name).filter((n) => typeof n === "string");
  } catch (e) {
    labelsRead = 0;
  }
  fillGroupBy(names);
}

let knownNames = [];
function fillGroupBy(names) {
  if (names) knownNames = names;
  const sel = document.getElementById("group-by");
  const all = [...new Set([...knownNames, ...(view.group ? [view.group] : [])])].sort();
  const opts = [el("option", "", "none")];
  opts[0].value = "";
  for (const n of all) {
    const o = el("option", "", n);
    o.value = n;
    opts.push(o);
  }
  sel.replaceChildren(...opts);
  sel.value = view.group;
}

// The controls show the view (after a load from the URL, back/forward, or a change).
function syncControls() {
  const filter = document.getElementById("filter");
  if (parseFilterKey(filter.value) !== parseFilterKey(filterText())) filter.value = filterText();
  const sel = document.getElementById("status-filter");
  sel.value = view.status.length === 0 ? "" : view.status.length === 1 ? view.status[0] : "several";
  if (!knownNames.includes(view.group) && view.group) fillGroupBy(null);
  document.getElementById("group-by").value = view.group;
  document.getElementById("compact").checked = view.compact;
  document.body.classList.toggle("compact", view.compact);
}

// What the box's text means (two texts with the same meaning are left as the user typed).
function parseFilterKey(text) {
  const f = parseFilter(text);
  return JSON.stringify([f.q, f.labels]);
}

function setStatus(list) {
  view.status = STATUSES.filter((s) => list.includes(s));
  view.page = 1;
  viewChanged(true);
}

function initFleet() {
  readUrl();
  document.getElementById("fleet-view").hidden = false;
  const filter = document.getElementById("filter");
  filter.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      if (!takeFilterBox()) return;
      commitUrl(true);
      reload();
    }, FILTER_DEBOUNCE_MS);
  });
  const sel = document.getElementById("status-filter");
  sel.addEventListener("change", () => setStatus(sel.value ? [sel.value] : []));
  document.getElementById("counts").addEventListener("click", (e) => {
    const b = e.target.closest("button.count");
    if (!b) return;
    const s = b.dataset.status;
    if (s === "") setStatus([]);
    else setStatus(view.status.includes(s) ? view.status.filter((x) => x !== s) : [...view.status, s]);
  });
  const group = document.getElementById("group-by");
  group.addEventListener("focus", readLabelNames);
  group.addEventListener("pointerdown", readLabelNames);
  group.addEventListener("change", () => {
    view.group = group.value;
    view.collapsed = new Set();
    view.page = 1;
    fleet.groups = null;
    viewChanged(true);
  });
  document.getElementById("compact").addEventListener("change", (e) => {
    // The first row of the page stays on the page shown.
    const first = (view.page - 1) * pageSize();
    view.compact = e.target.checked;
    view.page = Math.floor(first / pageSize()) + 1;
    viewChanged(true);
  });
  document.getElementById("page-prev").addEventListener("click", () => {
    if (view.page > 1) { view.page--; viewChanged(true); }
  });
  document.getElementById("page-next").addEventListener("click", () => {
    if (view.page < fleet.pages) { view.page++; viewChanged(true); }
  });
  // Group headers collapse/expand; label chips add their label to the filter.
  document.getElementById("hosts").addEventListener("click", (e) => {
    const toggle = e.target.closest("button.toggle");
    if (toggle) {
      const key = toggle.closest("tr").dataset.group;
      if (view.collapsed.has(key)) view.collapsed.delete(key);
      else view.collapsed.add(key);
      viewChanged(true);
      return;
    }
    const chip = e.target.closest("button.chip");
    if (chip && typing) takeFilterBox();
    if (chip && !view.labels.includes(chip.dataset.label)) {
      view.labels = [...view.labels, chip.dataset.label];
      view.page = 1;
      viewChanged(true);
    }
  });
  for (const th of document.querySelectorAll("#fleet th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      if (view.sortKey === key) view.sortDir = -view.sortDir;
      else {
        view.sortKey = key;
        view.sortDir = key === "hostname" || key === "status" || key === "version" ? 1 : -1;
      }
      commitUrl(false);
      fleet.dirty = true;
      schedule();
    });
  }
  document.getElementById("viewport").addEventListener("scroll", schedule, { passive: true });
  window.addEventListener("resize", schedule);
  window.addEventListener("popstate", () => {
    readUrl();
    syncControls();
    reload();
  });
  // "/" focuses the filter, as on many dashboards.
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement !== filter) {
      e.preventDefault();
      filter.focus();
    }
  });
  syncControls();
  readLabelNames();
  setMode("connecting");
  reload();
  setInterval(watchdog, 1000);
  totalTimer = setInterval(pollTotal, TOTAL_POLL_MS);
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
  // Each label links to the fleet view filtered by it.
  document.getElementById("host-labels").replaceChildren(...Object.entries(h.labels || {}).map(([k, v]) => {
    const a = el("a", "chip", k + "=" + v);
    a.href = "/?label=" + encodeURIComponent(k + "=" + v);
    a.title = "Hosts with " + k + "=" + v;
    return a;
  }));
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

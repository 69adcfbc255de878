// Sentinel dashboard. Everything an agent sends is hostile text: it is only ever put into
// the page with textContent, never parsed as markup.
"use strict";

const POLL_MS = 1000;
const STATUSES = ["up", "stale", "down", "stopped"];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function bytes(n) {
  if (typeof n !== "number" || !isFinite(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i === 0 ? 0 : 1) + " " + units[i];
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function fixed(v, d) {
  return typeof v === "number" && isFinite(v) ? v.toFixed(d) : "–";
}

let selected = null; // id of the host whose detail is shown

function row(h, now) {
  const tr = el("tr", "st-" + (STATUSES.includes(h.status) ? h.status : "down"));
  if (h.id === selected) tr.classList.add("selected");
  tr.addEventListener("click", () => { selected = h.id; pollDetail(); });
  const name = el("td", "host");
  name.appendChild(el("span", "name", h.hostname));
  name.title = h.id;
  tr.appendChild(name);
  const st = el("td", "status");
  st.appendChild(el("span", "dot"));
  const note = h.connected || h.status === "stopped" ? "" : " (disconnected)";
  st.appendChild(el("span", "", h.status + note));
  tr.appendChild(st);
  tr.appendChild(el("td", "", ago(now - h.last_seen_ms)));
  const cpu = el("td", "num");
  const bar = el("span", "bar");
  const fill = el("span", "fill");
  const pct = Math.min(100, Math.max(0, Number(h.cpu_percent) || 0));
  fill.style.width = pct + "%";
  bar.appendChild(fill);
  cpu.appendChild(bar);
  cpu.appendChild(el("span", "", fixed(h.cpu_percent, 1) + " %"));
  tr.appendChild(cpu);
  const used = h.mem_total_bytes - h.mem_available_bytes;
  tr.appendChild(el("td", "num", bytes(used) + " / " + bytes(h.mem_total_bytes)));
  tr.appendChild(el("td", "num", fixed(h.load1, 2) + " " + fixed(h.load5, 2) + " " + fixed(h.load15, 2)));
  tr.appendChild(el("td", "", h.address));
  const os = el("td", "os", h.os + " " + h.kernel);
  os.title = h.os + " " + h.kernel + " " + h.arch;
  tr.appendChild(os);
  return tr;
}

function render(data) {
  const now = data.now_ms;
  const body = document.getElementById("hosts");
  const rows = document.createDocumentFragment();
  const counts = { up: 0, stale: 0, down: 0, stopped: 0 };
  for (const h of data.hosts) {
    if (h.status in counts) counts[h.status]++;
    rows.appendChild(row(h, now));
  }
  body.replaceChildren(rows);
  document.getElementById("empty").hidden = data.hosts.length > 0;
  const c = document.getElementById("counts");
  c.replaceChildren();
  c.appendChild(el("span", "count", data.hosts.length + " hosts"));
  for (const s of STATUSES) c.appendChild(el("span", "count st-" + s, counts[s] + " " + s));
}

async function poll() {
  const banner = document.getElementById("banner");
  try {
    const r = await fetch("/api/v1/hosts", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    banner.hidden = true;
  } catch (e) {
    banner.hidden = false;
  }
  setTimeout(poll, POLL_MS);
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

// Draws one or two series of history points on a canvas, scaled to their maximum.
function chart(id, points, keys, colors) {
  const c = document.getElementById(id);
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  let max = 0;
  for (const p of points) for (const k of keys) max = Math.max(max, Number(p[k]) || 0);
  if (max <= 0) max = 1;
  keys.forEach((k, i) => {
    ctx.strokeStyle = cssVar(colors[i]);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach((p, j) => {
      const x = points.length > 1 ? (j / (points.length - 1)) * (c.width - 2) + 1 : 1;
      const y = c.height - 2 - ((Number(p[k]) || 0) / max) * (c.height - 4);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
  ctx.fillStyle = cssVar("--muted");
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText("max " + (keys[0].indexOf("bytes") >= 0 ? bytes(max) : fixed(max, 1)), 4, 12);
}

function renderDetail(h) {
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-title").textContent = h.hostname + " (" + h.status + ")";
  const facts = document.getElementById("detail-facts");
  facts.replaceChildren();
  const add = (k, v) => { facts.appendChild(el("dt", "", k)); facts.appendChild(el("dd", "", v)); };
  add("Agent id", h.id);
  add("Agent version", h.agent_version);
  add("CPU", h.cpu_model + " (" + h.cpu_count + ")");
  add("Uptime", Math.round((h.uptime_s || 0) / 3600) + " h");
  add("Samples", h.samples_received + " received, " + h.samples_replayed + " replayed, " +
      h.samples_dropped + " dropped, " + h.samples_missing + " missing, " + h.duplicates + " duplicates");
  add("Reconnects", h.reconnects);
  add("Clock offset", h.clock_offset_ms + " ms");
  const pts = (h.history && h.history.points) || [];
  chart("chart-cpu", pts, ["cpu_percent"], ["--bar"]);
  chart("chart-mem", pts, ["mem_used_bytes"], ["--bar"]);
  chart("chart-net", pts, ["net_rx_bytes_per_s", "net_tx_bytes_per_s"], ["--bar", "--stale"]);
  chart("chart-disk", pts, ["disk_read_bytes_per_s", "disk_write_bytes_per_s"], ["--bar", "--stale"]);
}

async function pollDetail() {
  if (!selected) return;
  try {
    const r = await fetch("/api/v1/hosts/" + encodeURIComponent(selected), { cache: "no-store" });
    if (r.ok) renderDetail(await r.json());
  } catch (e) {
    // the fleet poll shows the banner
  }
}

document.addEventListener("DOMContentLoaded", () => {
  poll();
  setInterval(pollDetail, 2 * POLL_MS);
});

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

function row(h, now) {
  const tr = el("tr", "st-" + (STATUSES.includes(h.status) ? h.status : "down"));
  const name = el("td", "host");
  name.appendChild(el("span", "name", h.hostname));
  name.title = h.id;
  tr.appendChild(name);
  const st = el("td", "status");
  st.appendChild(el("span", "dot"));
  st.appendChild(el("span", "", h.status + (h.connected ? "" : " (disconnected)")));
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
  tr.appendChild(el("td", "", h.os + " " + h.kernel));
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

document.addEventListener("DOMContentLoaded", poll);

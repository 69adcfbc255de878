// The fleet view at 10,000 hosts (issue 13): sentinel-loadgen streams 10,000 simulated agents
// at 1 s over the real protocol, with labels (`--label-cycle role=web,db,cache
// --label-index shard=100`), into a release-built master; one Chromium page shows the fleet.
// For each view measured (the default page of 100 rows; compact and grouped by role, 200
// rows), over PERF_MEASURE_MS (>= 30 s) it records:
// - bytes the page received, from the DevTools protocol (Network.dataReceived, per request:
//   the event stream, the API reads, everything), and the event stream's message sizes as
//   the page saw them (EventSource data);
// - the page's own timings: each `hosts` event's parse and merge (update handling) and each
//   render of the table (render, performance.now() around it: wall time; live data renders
//   at most 4 times a second, at most 8 changed rows per frame, the rest the next frame);
// - from a Chromium trace (devtools.timeline), each animation frame callback (the page's
//   only one is the render) with its wall time (`dur`) and the main thread's CPU time in it
//   (`tdur`): the render's own cost, without the time the thread waited for a core.
// Fails unless every view receives at most 200 KB/s (all requests, 1 KB = 1000 bytes), its
// render frames' CPU time p95 is under 16 ms, its wall-clock render p95 under 50 ms (a guard:
// this 2-core machine runs the 10,000 simulated agents, the master and the browser at once,
// and other jobs; the wall figures are printed with the load average), and updates keep
// arriving. Writes artifacts/perf10k.json and prints it (the figures go to docs/BENCHMARKS.md).
"use strict";

const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const L = require("./lib");

const HOSTS = Number(process.env.PERF_HOSTS || 10000);
const MEASURE_MS = Math.max(30000, Number(process.env.PERF_MEASURE_MS || 30000));
const BUDGET_BYTES_PER_S = 200 * 1000;
const BUDGET_RENDER_P95_MS = 16; // CPU time of a render frame
const GUARD_RENDER_WALL_P95_MS = 50; // wall time of a render (a starved machine inflates it)

function pct(a, p) {
  if (!a.length) return null;
  const s = a.slice().sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function round(v) {
  return v === null || v === undefined ? v : Math.round(v * 10) / 10;
}

// Byte counts per request from the DevTools protocol, summed while `on`.
class Traffic {
  constructor() {
    this.urls = new Map(); // requestId -> url
    this.on = false;
    this.reset();
  }

  reset() {
    this.bytes = { events: 0, api: 0, other: 0 };
    this.encoded = { events: 0, api: 0, other: 0 };
    this.sseMessages = 0;
    this.sseMessageBytes = 0;
  }

  kind(id) {
    const u = this.urls.get(id) || "";
    if (u.includes("/api/v1/events")) return "events";
    if (u.includes("/api/v1/")) return "api";
    return "other";
  }

  async attach(page) {
    const cdp = await page.context().newCDPSession(page);
    cdp.on("Network.requestWillBeSent", (e) => this.urls.set(e.requestId, e.request.url));
    cdp.on("Network.dataReceived", (e) => {
      if (!this.on) return;
      const k = this.kind(e.requestId);
      this.bytes[k] += e.dataLength;
      this.encoded[k] += e.encodedDataLength;
    });
    cdp.on("Network.eventSourceMessageReceived", (e) => {
      if (!this.on) return;
      this.sseMessages++;
      this.sseMessageBytes += Buffer.byteLength(e.data) + Buffer.byteLength(e.eventName || "");
    });
    await cdp.send("Network.enable");
    this.cdp = cdp;
    this.trace = [];
    cdp.on("Tracing.dataCollected", (e) => {
      for (const ev of e.value) if (ev.name === "FireAnimationFrame" && ev.ph === "X") this.trace.push(ev);
    });
    return cdp;
  }

  async startTrace() {
    this.trace = [];
    await this.cdp.send("Tracing.start", { categories: "devtools.timeline", transferMode: "ReportEvents" });
  }

  // The animation frames traced: [{wall, cpu}] in ms.
  async endTrace() {
    const done = new Promise((r) => this.cdp.once("Tracing.tracingComplete", r));
    await this.cdp.send("Tracing.end");
    await done;
    return this.trace.map((e) => ({ wall: e.dur / 1000, cpu: (e.tdur === undefined ? e.dur : e.tdur) / 1000 }));
  }
}

async function measureView(page, traffic, name, url, ready) {
  await page.goto(url);
  await page.waitForFunction(ready.fn, ready.arg, { timeout: 60000 });
  await page.waitForFunction(() => document.getElementById("live").textContent === "live", null, { timeout: 30000 });
  // Settle (the opening snapshot and reads are not the steady state), then measure.
  await new Promise((r) => setTimeout(r, 3000));
  await page.evaluate(() => { window.sentinelPerf.updates.length = 0; window.sentinelPerf.renders.length = 0; window.__longtasks.length = 0; });
  traffic.reset();
  await traffic.startTrace();
  traffic.on = true;
  const t0 = Date.now();
  const load0 = os.loadavg()[0];
  await new Promise((r) => setTimeout(r, MEASURE_MS));
  traffic.on = false;
  const secs = (Date.now() - t0) / 1000;
  const frames = await traffic.endTrace();
  const load1 = os.loadavg()[0];
  const m = await page.evaluate(() => ({
    updates: window.sentinelPerf.updates.slice(),
    renders: window.sentinelPerf.renders.slice(),
    longtasks: window.__longtasks.slice(),
    rowsInDom: document.querySelectorAll("#hosts tr[data-id]").length,
    headers: document.querySelectorAll("#hosts tr.group").length,
    counts: document.querySelector("#counts button").textContent,
    heapMB: performance.memory ? performance.memory.usedJSHeapSize / 1048576 : null,
  }));
  await page.screenshot({ path: path.join(L.ARTIFACTS, "fleet-10k-" + name + ".png") });
  const upd = m.updates.map((u) => u.ms);
  const all = traffic.bytes.events + traffic.bytes.api + traffic.bytes.other;
  const allEncoded = traffic.encoded.events + traffic.encoded.api + traffic.encoded.other;
  return {
    view: name,
    url: new URL(url).search || "/",
    measure_s: round(secs),
    rows_in_dom: m.rowsInDom,
    group_headers: m.headers,
    counts_button: m.counts,
    // Bytes per second the page received (DevTools: decoded body bytes; encoded = on the wire).
    bytes_per_s: {
      all: Math.round(Math.max(all, allEncoded) / secs),
      event_stream: Math.round(Math.max(traffic.bytes.events, traffic.encoded.events) / secs),
      api_reads: Math.round(Math.max(traffic.bytes.api, traffic.encoded.api) / secs),
      event_stream_messages: Math.round(traffic.sseMessageBytes / secs),
    },
    sse_messages_per_s: round(traffic.sseMessages / secs),
    sse_updates: m.updates.length,
    hosts_per_update_median: pct(m.updates.map((u) => u.hosts), 50),
    update_handling_ms: { p50: round(pct(upd, 50)), p95: round(pct(upd, 95)), max: round(Math.max(0, ...upd)) },
    render_ms: { count: m.renders.length, p50: round(pct(m.renders, 50)), p95: round(pct(m.renders, 95)), max: round(Math.max(0, ...m.renders)) },
    render_frames_traced: {
      count: frames.length,
      cpu_ms: { p50: round(pct(frames.map((f) => f.cpu), 50)), p95: round(pct(frames.map((f) => f.cpu), 95)), max: round(Math.max(0, ...frames.map((f) => f.cpu))) },
      wall_ms: { p50: round(pct(frames.map((f) => f.wall), 50)), p95: round(pct(frames.map((f) => f.wall), 95)), max: round(Math.max(0, ...frames.map((f) => f.wall))) },
    },
    loadavg_1m: [round(load0), round(load1)],
    longtasks: { count: m.longtasks.length, max_ms: round(Math.max(0, ...m.longtasks.map((t) => t.ms))) },
    js_heap_mb: round(m.heapMB),
  };
}

async function main() {
  const dir = L.tempDir("perf10k");
  fs.mkdirSync(L.ARTIFACTS, { recursive: true });
  const master = new L.Master(dir, { capacity: HOSTS + 100, historyPoints: 120 });
  let browser;
  try {
    await master.start();
    // In chunks, as perf5000.test.js (a burst of thousands of connects overflows the backlog).
    const CHUNK = Number(process.env.PERF_CHUNK || 250);
    const t0 = Date.now();
    for (let base = 0; base < HOSTS; base += CHUNK) {
      const n = Math.min(CHUNK, HOSTS - base);
      const log = path.join(dir, "loadgen-" + base + ".log");
      const load = L.start(L.BIN("sentinel-loadgen"), [
        "run", "--master", "127.0.0.1:" + master.agentPort, "--agents", String(n), "--id-base", String(base),
        "--interval", "1s", "--duration", "900s", "--token-file", path.join(master.dir, "token"),
        "--label-cycle", "role=web,db,cache", "--label-index", "shard=100",
      ], "loadgen", log);
      await L.waitFor((base + n) + " hosts in the table", 60000, async () => {
        if (!L.alive(load)) throw new Error("loadgen exited: " + fs.readFileSync(log, "utf8").slice(-2000));
        const h = await L.getJson(master.httpPort, "/healthz");
        return h.body.hosts >= base + n;
      }, 250);
    }
    L.log(HOSTS + " hosts in the table after " + (Date.now() - t0) + " ms");
    await L.waitFor("every host up", 120000, async () => {
      const g = (await L.getJson(master.httpPort, "/api/v1/groups")).body;
      return g.total.hosts >= HOSTS && g.total.up === g.total.hosts;
    }, 1000);

    browser = await L.launchBrowser();
    const page = await browser.newPage();
    await page.addInitScript(() => {
      window.__longtasks = [];
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__longtasks.push({ start: e.startTime, ms: e.duration });
      }).observe({ type: "longtask", buffered: true });
    });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    const traffic = new Traffic();
    await traffic.attach(page);

    const views = [];
    views.push(await measureView(page, traffic, "default", master.url("/"), {
      fn: (n) => document.querySelector("#counts button") && document.querySelector("#counts button").textContent === n + " hosts" &&
        document.querySelectorAll("#hosts tr[data-id]").length > 0, arg: HOSTS,
    }));
    L.log("default view: " + JSON.stringify(views[0]));
    views.push(await measureView(page, traffic, "compact-grouped", master.url("/?group=role&compact=1"), {
      fn: () => document.querySelectorAll("#hosts tr.group").length > 0 && document.querySelectorAll("#hosts tr[data-id]").length > 0,
      arg: null,
    }));
    L.log("compact grouped view: " + JSON.stringify(views[1]));

    const result = {
      date: new Date().toISOString(),
      hosts: HOSTS,
      chromium: (await browser.browser()?.version()) || "chromium",
      budget: { bytes_per_s: BUDGET_BYTES_PER_S, render_frame_cpu_p95_ms: BUDGET_RENDER_P95_MS, render_wall_p95_guard_ms: GUARD_RENDER_WALL_P95_MS },
      views,
      // The machine's load while measuring (2 cores shared with other jobs inflate every figure).
      loadavg_1m: round(os.loadavg()[0]),
      cpus: os.cpus().length,
    };
    fs.writeFileSync(path.join(L.ARTIFACTS, "perf10k.json"), JSON.stringify(result, null, 2) + "\n");
    console.log(JSON.stringify(result, null, 2));

    assert.deepEqual(errors, []);
    for (const v of views) {
      assert.ok(v.sse_updates >= MEASURE_MS / 1000, v.view + ": live updates kept arriving (" + v.sse_updates + ")");
      assert.ok(v.bytes_per_s.all <= BUDGET_BYTES_PER_S, v.view + ": " + v.bytes_per_s.all + " B/s received");
      assert.ok(v.bytes_per_s.event_stream_messages <= BUDGET_BYTES_PER_S, v.view + ": " + v.bytes_per_s.event_stream_messages + " B/s of event messages");
      assert.ok(v.render_frames_traced.count >= MEASURE_MS / 1000, v.view + ": render frames traced (" + v.render_frames_traced.count + ")");
      assert.ok(v.render_frames_traced.cpu_ms.p95 < BUDGET_RENDER_P95_MS, v.view + ": render frame CPU p95 " + v.render_frames_traced.cpu_ms.p95 + " ms");
      assert.ok(v.render_ms.p95 < GUARD_RENDER_WALL_P95_MS, v.view + ": render wall p95 " + v.render_ms.p95 + " ms");
      assert.ok(v.rows_in_dom < 250, v.view + ": only visible rows are in the DOM (" + v.rows_in_dom + ")");
    }
    L.log("PASS perf10k.test.js");
  } finally {
    await L.closeBrowser(browser);
    await L.cleanup(master);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error("FAIL perf10k.test.js:", e && e.stack ? e.stack : e);
  process.exitCode = 1;
});

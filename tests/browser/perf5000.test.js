// The fleet view with 5,000 hosts in the table (sentinel-loadgen: 5,000 simulated agents at
// 1 s over the real protocol): time to first render, cost of each live update, long tasks,
// and the latency of filtering, sorting and scrolling while updates stream in. Writes
// artifacts/perf5000.json; fails if the page stops being interactive.
"use strict";

const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const L = require("./lib");

const HOSTS = Number(process.env.PERF_HOSTS || 5000);
const MEASURE_MS = Number(process.env.PERF_MEASURE_MS || 30000);

function pct(a, p) {
  if (!a.length) return null;
  const s = a.slice().sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function round(v) {
  return v === null || v === undefined ? v : Math.round(v * 10) / 10;
}

async function main() {
  const dir = L.tempDir("perf");
  fs.mkdirSync(L.ARTIFACTS, { recursive: true });
  const master = new L.Master(dir, { capacity: HOSTS + 100, historyPoints: 120 });
  let browser;
  try {
    await master.start();
    // The simulated fleet connects in chunks (as a real fleet does not all reconnect in one
    // instant): a burst of more than a few hundred connects overflows the listen backlog and
    // those clients hang in the handshake (the master speaks first), see docs/BENCHMARKS.md.
    const CHUNK = Number(process.env.PERF_CHUNK || 125);
    const t0 = Date.now();
    for (let base = 0; base < HOSTS; base += CHUNK) {
      const n = Math.min(CHUNK, HOSTS - base);
      const log = path.join(dir, "loadgen-" + base + ".log");
      const load = L.start(L.BIN("sentinel-loadgen"), [
        "run", "--master", "127.0.0.1:" + master.agentPort, "--agents", String(n), "--id-base", String(base),
        "--interval", "1s", "--duration", "600s", "--token-file", path.join(master.dir, "token"),
      ], "loadgen", log);
      await L.waitFor((base + n) + " hosts in the table", 30000, async () => {
        if (!L.alive(load)) throw new Error("loadgen exited: " + fs.readFileSync(log, "utf8").slice(-2000));
        const h = await L.getJson(master.httpPort, "/healthz");
        return h.body.hosts >= base + n;
      }, 250);
    }
    L.log(HOSTS + " hosts in the table after " + (Date.now() - t0) + " ms");
    await L.waitFor("every host up", 60000, async () => {
      const hosts = await master.hosts();
      return hosts.length >= HOSTS && hosts.every((h) => h.status === "up");
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
    await page.goto(master.url("/"));
    await page.waitForFunction((n) => window.sentinelPerf && window.sentinelPerf.firstRenderMs !== null &&
      document.querySelector("#counts button").textContent === n + " hosts", HOSTS, { timeout: 60000 });
    const first = await page.evaluate(() => ({
      firstRenderMs: window.sentinelPerf.firstRenderMs,
      domContentLoaded: performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd,
      rowsInDom: document.querySelectorAll("#hosts tr[data-id]").length,
      longtasks: window.__longtasks.slice(),
    }));
    L.log("first render " + first.firstRenderMs.toFixed(0) + " ms after navigation; rows in DOM " + first.rowsInDom);

    // Live updates plus user actions for MEASURE_MS.
    await page.evaluate(() => { window.sentinelPerf.updates.length = 0; window.sentinelPerf.renders.length = 0; window.__longtasks.length = 0; });
    const measureStart = Date.now();
    const interactions = [];
    const actions = [
      ["filter", () => page.evaluate(async () => {
        const t = performance.now();
        const f = document.getElementById("filter");
        f.value = "load-0" + Math.floor(Math.random() * 5);
        f.dispatchEvent(new Event("input"));
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
        return performance.now() - t;
      })],
      ["clear filter", () => page.evaluate(async () => {
        const t = performance.now();
        const f = document.getElementById("filter");
        f.value = "";
        f.dispatchEvent(new Event("input"));
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
        return performance.now() - t;
      })],
      ["sort by cpu", () => page.evaluate(async () => {
        const t = performance.now();
        document.querySelector('#fleet th[data-sort="cpu"] button').click();
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
        return performance.now() - t;
      })],
      ["scroll", () => page.evaluate(async () => {
        const t = performance.now();
        const vp = document.getElementById("viewport");
        vp.scrollTop = Math.random() * (vp.scrollHeight - vp.clientHeight);
        vp.dispatchEvent(new Event("scroll"));
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
        return performance.now() - t;
      })],
    ];
    let k = 0;
    while (Date.now() - measureStart < MEASURE_MS) {
      const [name, act] = actions[k++ % actions.length];
      interactions.push({ name, ms: await act() });
      await new Promise((r) => setTimeout(r, 500));
    }
    const m = await page.evaluate(() => ({
      updates: window.sentinelPerf.updates.slice(),
      renders: window.sentinelPerf.renders.slice(),
      longtasks: window.__longtasks.slice(),
      rowsInDom: document.querySelectorAll("#hosts tr[data-id]").length,
      heapMB: performance.memory ? performance.memory.usedJSHeapSize / 1048576 : null,
    }));
    await page.screenshot({ path: path.join(L.ARTIFACTS, "fleet-5000.png") });
    const upd = m.updates.map((u) => u.ms);
    const hostsPerUpdate = m.updates.map((u) => u.hosts);
    const ren = m.renders;
    const inter = interactions.map((i) => i.ms);
    const lt = m.longtasks.map((t) => t.ms);
    const result = {
      date: new Date().toISOString(),
      hosts: HOSTS,
      measure_s: MEASURE_MS / 1000,
      chromium: (await browser.browser()?.version()) || "chromium",
      first_render_ms: round(first.firstRenderMs),
      dom_content_loaded_ms: round(first.domContentLoaded),
      first_load_longtasks: first.longtasks.length,
      first_load_longest_task_ms: round(Math.max(0, ...first.longtasks.map((t) => t.ms))),
      rows_in_dom: m.rowsInDom,
      sse_updates: m.updates.length,
      hosts_per_update_median: pct(hostsPerUpdate, 50),
      update_handling_ms: { p50: round(pct(upd, 50)), p95: round(pct(upd, 95)), max: round(Math.max(0, ...upd)) },
      render_ms: { count: ren.length, p50: round(pct(ren, 50)), p95: round(pct(ren, 95)), max: round(Math.max(0, ...ren)) },
      interaction_to_next_frame_ms: { count: inter.length, p50: round(pct(inter, 50)), p95: round(pct(inter, 95)), max: round(Math.max(0, ...inter)) },
      longtasks: { count: lt.length, total_ms: round(lt.reduce((a, b) => a + b, 0)), max_ms: round(Math.max(0, ...lt)) },
      js_heap_mb: round(m.heapMB),
      // The machine's load while measuring (2 cores; other jobs inflate every figure).
      loadavg_1m: round(require("node:os").loadavg()[0]),
      cpus: require("node:os").cpus().length,
    };
    fs.writeFileSync(path.join(L.ARTIFACTS, "perf5000.json"), JSON.stringify(result, null, 2) + "\n");
    console.log(JSON.stringify(result, null, 2));

    // Interactive: a first render within seconds, updates arriving, and every user action
    // answered well within a second even on a busy 2-core CI machine (loadgen, master and
    // the browser share it). The typical figures are in docs/BENCHMARKS.md.
    assert.deepEqual(errors, []);
    assert.ok(result.first_render_ms < 10000, "first render " + result.first_render_ms + " ms");
    assert.ok(m.rowsInDom < 200, "only visible rows are in the DOM (" + m.rowsInDom + ")");
    assert.ok(m.updates.length >= MEASURE_MS / 1000, "live updates kept arriving (" + m.updates.length + ")");
    assert.ok(result.update_handling_ms.p95 < 250, "update handling p95 " + result.update_handling_ms.p95 + " ms");
    assert.ok(result.render_ms.p95 < 250, "render p95 " + result.render_ms.p95 + " ms");
    assert.ok(result.interaction_to_next_frame_ms.p95 < 1000, "interaction p95 " + result.interaction_to_next_frame_ms.p95 + " ms");
    L.log("PASS perf5000.test.js");
  } finally {
    await L.closeBrowser(browser);
    await L.cleanup(master);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error("FAIL perf5000.test.js:", e && e.stack ? e.stack : e);
  process.exitCode = 1;
});

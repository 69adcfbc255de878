// The dashboard in headless Chromium against a real master fed by real agents:
// every host row appears; values change without a reload; sorting and filtering work; hostile
// host texts (agent version, OS, kernel, CPU model, mount point: hostnames are limited to
// A-Z a-z 0-9 - . _, docs/PROTOCOL.md) are literal text and run no script; an odd but allowed
// hostname is shown as it is; the host view draws non-empty charts; the
// "connection lost" state appears when the master is stopped and clears when it is back on
// the same ports. Screenshots go to artifacts/ (and docs/img/ with UPDATE_DOCS_IMG=1).
"use strict";

const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const L = require("./lib");

const HOSTILE = ["<img src=x onerror=alert(1)>", "\"><script>alert(2)</script>"];
// Real agents; the last is a hostname as odd as the allowed characters get.
const ODD = "x--_..0dd.-host_";
const NAMES = ["web-1", "web-2", "db-1", "cache-1", ODD];
// Simulated hosts (loadgen, --id-base i) reporting HOSTILE[i] in every free-text field.
const EVIL = HOSTILE.map((_, i) => "load-" + String(i).padStart(5, "0"));
const ALL = [...NAMES, ...EVIL];

async function rowNames(page) {
  return page.$$eval("#hosts tr[data-id] td.host a", (as) => as.map((a) => a.textContent));
}

async function main() {
  const dir = L.tempDir("browser");
  fs.mkdirSync(L.ARTIFACTS, { recursive: true });
  const master = new L.Master(dir);
  let browser;
  const t0 = Date.now();
  const steps = [];
  const step = (name) => { steps.push(name); L.log("ok: " + name); };
  try {
    await master.start();
    const agents = NAMES.map((n, i) => L.startAgent(master, dir, n, i));
    HOSTILE.forEach((text, i) => L.startHostileHost(master, dir, i, text));
    let seen = [];
    await L.waitFor("every agent in the table", 20000, async () => {
      const hosts = await master.hosts();
      seen = hosts.map((h) => h.hostname + ":" + h.samples_received);
      return hosts.length === ALL.length && hosts.every((h) => h.samples_received >= 2);
    }).catch((e) => { throw new Error(e.message + " (table: " + seen.join(", ") + ")"); });

    browser = await L.launchBrowser();
    const page = await browser.newPage();
    const dialogs = [];
    const errors = [];
    page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
    page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));

    // 1. Every host row appears.
    await page.goto(master.url("/"));
    await page.waitForFunction((n) => document.querySelectorAll("#hosts tr[data-id]").length === n,
      ALL.length, { timeout: 15000 });
    assert.deepEqual([...(await rowNames(page))].sort(), [...ALL].sort());
    assert.equal(await page.textContent("#live"), "live");
    const seenText = await page.$eval("#hosts tr[data-id] .seen", (e) => e.textContent);
    assert.match(seenText, /^last seen \d+ s ago$/);
    step("every host row appears (" + ALL.length + " rows), live over SSE");

    // 2. Hostile texts are literal text and no script of theirs ran (the fleet row shows the
    // agent version); the odd hostname is shown as it is.
    for (const h of HOSTILE) {
      const n = await page.$$eval("#hosts td.ver", (ts, h) => ts.filter((t) => t.textContent === h).length, h);
      assert.equal(n, 1, "literal agent version shown: " + h);
    }
    const odd = await page.$$eval("#hosts td.host a", (as, n) => as.filter((a) => a.textContent === n).length, ODD);
    assert.equal(odd, 1, "odd hostname shown as it is: " + ODD);
    assert.equal(await page.$$eval("#hosts img, #hosts script", (e) => e.length), 0, "no element from a host's text");
    assert.equal(await page.$$eval("script", (s) => s.length), 1, "only app.js");
    assert.ok(requests.every((u) => u.startsWith(master.url("/"))), "no request leaves the master: " + requests.filter((u) => !u.startsWith(master.url("/"))));
    step("hostile host texts shown literally; no dialog, no injected element");

    // 3. Values change over time without a reload.
    await page.evaluate(() => { window.__noReload = true; });
    const id = (await master.hosts()).find((h) => h.hostname === "web-1").id;
    const snap = () => page.$eval(`#hosts tr[data-id="${id}"]`, (tr) => ({
      spark: tr.querySelector("svg.spark polyline").getAttribute("points"),
      seen: tr.querySelector(".seen").textContent,
    }));
    const before = await snap();
    await L.waitFor("web-1's sparkline to move", 10000, async () => (await snap()).spark !== before.spark);
    const updates = await page.evaluate(() => window.sentinelPerf.updates.length);
    assert.ok(updates > 0, "SSE host updates arrived");
    assert.equal(await page.evaluate(() => window.__noReload), true, "no reload happened");
    step("values change without a reload (" + updates + " SSE updates)");

    // 4. Sorting by any column.
    const clickSort = (key) => page.click(`#fleet th[data-sort="${key}"] button`);
    await clickSort("hostname"); // already ascending -> descending
    await page.waitForFunction(() => document.querySelector('#fleet th[data-sort="hostname"]').getAttribute("aria-sort") === "descending");
    const desc = await rowNames(page);
    const lower = (a) => a.map((s) => s.toLowerCase());
    assert.deepEqual(lower(desc), lower(desc).slice().sort().reverse(), "hostname descending");
    await clickSort("hostname");
    await page.waitForFunction(() => document.querySelector('#fleet th[data-sort="hostname"]').getAttribute("aria-sort") === "ascending");
    const asc = await rowNames(page);
    assert.deepEqual(lower(asc), lower(asc).slice().sort(), "hostname ascending");
    await clickSort("cpu");
    await page.waitForFunction(() => document.querySelector('#fleet th[data-sort="cpu"]').getAttribute("aria-sort") === "descending");
    const cpus = await page.$$eval("#hosts tr[data-id] .v.cpu", (s) => s.map((e) => parseFloat(e.textContent)));
    assert.deepEqual(cpus, cpus.slice().sort((a, b) => b - a), "cpu descending: " + cpus);
    for (const key of ["status", "mem", "load", "fs", "rx", "tx", "uptime", "version"]) {
      await clickSort(key);
      await page.waitForFunction((k) => document.querySelector(`#fleet th[data-sort="${k}"]`).getAttribute("aria-sort") !== "none", key);
      assert.equal((await rowNames(page)).length, ALL.length, "all rows after sorting by " + key);
    }
    await clickSort("hostname");
    step("sorting by hostname (both ways), CPU and every other column");

    // 5. Filtering by name and by status, with counts per status.
    await page.fill("#filter", "web");
    await page.waitForFunction(() => document.querySelectorAll("#hosts tr[data-id]").length === 2);
    assert.deepEqual((await rowNames(page)).sort(), ["web-1", "web-2"]);
    // `q` also matches ids (32 hex, issue 13): "0DD." cannot be part of one, "0DD" could.
    await page.fill("#filter", "0DD.");
    await page.waitForFunction(() => document.querySelectorAll("#hosts tr[data-id]").length === 1);
    assert.deepEqual(await rowNames(page), [ODD]);
    await page.fill("#filter", "");
    await L.stop(agents[NAMES.indexOf("cache-1")]); // goodbye -> "stopped"
    await page.selectOption("#status-filter", "stopped");
    await page.waitForFunction(() => {
      const rows = document.querySelectorAll("#hosts tr[data-id]");
      return rows.length === 1 && rows[0].querySelector("td.host a").textContent === "cache-1";
    }, null, { timeout: 10000 });
    const counts = await page.textContent("#counts");
    assert.match(counts, /1 stopped/);
    assert.match(counts, new RegExp((ALL.length - 1) + " up"));
    await page.selectOption("#status-filter", "");
    await page.waitForFunction((n) => document.querySelectorAll("#hosts tr[data-id]").length === n, ALL.length);
    step("filter by name and by status; counts per status (" + counts.trim() + ")");
    await page.screenshot({ path: path.join(L.ARTIFACTS, "fleet.png") });

    // 6. Host view, reached with the keyboard: per-core CPU, filesystems, charts with data.
    await page.focus(`#hosts tr[data-id="${id}"] td.host a`);
    await Promise.all([page.waitForURL("**/hosts/" + id), page.keyboard.press("Enter")]);
    await page.waitForFunction(() => Number(document.getElementById("chart-cpu").dataset.points || 0) >= 3, null, { timeout: 15000 });
    assert.equal(await page.textContent("#host-title"), "web-1");
    const drawn = await page.evaluate(() => {
      const out = {};
      for (const id of ["chart-cpu", "chart-mem", "chart-load", "chart-net", "chart-disk"]) {
        const c = document.getElementById(id);
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let painted = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++;
        out[id] = painted;
      }
      return out;
    });
    for (const [k, v] of Object.entries(drawn)) assert.ok(v > 500, k + " is drawn (" + v + " pixels)");
    assert.ok(await page.$$eval("#host-cores .core", (e) => e.length) >= 1, "per-core CPU");
    assert.ok(await page.$$eval("#host-fs tr", (e) => e.length) >= 1, "filesystems");
    assert.ok(await page.$$eval("#host-if tr", (e) => e.length) >= 1, "interfaces");
    assert.match(await page.textContent("#host-pipeline"), /Samples received\d+/);
    await L.waitFor("interface rates", 5000, async () =>
      (await page.$$eval("#host-if tr td:nth-child(2)", (t) => t.map((x) => x.textContent))).some((t) => t.endsWith("/s")));
    await page.screenshot({ path: path.join(L.ARTIFACTS, "host.png"), fullPage: true });
    step("host view: charts drawn " + JSON.stringify(drawn));

    // The hostile hosts' views show their texts literally too (OS, kernel, CPU, mount point).
    for (const [i, name] of EVIL.entries()) {
      const evil = (await master.hosts()).find((h) => h.hostname === name).id;
      await page.goto(master.url("/hosts/" + evil));
      await page.waitForFunction((n) => document.getElementById("host-title").textContent === n, name);
      await page.waitForFunction(() => document.querySelectorAll("#host-fs tr").length >= 1);
      const body = await page.textContent("main");
      assert.ok(body.includes(HOSTILE[i] + " " + HOSTILE[i]), "literal OS and kernel: " + HOSTILE[i]);
      const mounts = await page.$$eval("#host-fs tr td:first-child", (t) => t.map((x) => x.textContent));
      assert.ok(mounts.includes(HOSTILE[i]), "literal mount point: " + mounts);
      assert.equal(await page.$$eval("main script, main img", (e) => e.length), 0);
    }
    step("hostile hosts' views: OS, kernel, CPU model and mount point shown literally");

    // 7. Without the event stream (a proxy that breaks it, say) the page polls and stays live.
    const polled = await browser.newPage();
    // The fleet view's stream URL carries its filter and the page's ids (issue 13): match any query.
    await polled.route(/\/api\/v1\/events(\?|$)/, (r) => r.abort());
    await polled.goto(master.url("/"));
    await polled.waitForFunction(() => document.getElementById("live").textContent === "live (polling)", null, { timeout: 10000 });
    await polled.waitForFunction((n) => document.querySelectorAll("#hosts tr[data-id]").length >= n, NAMES.length - 1);
    assert.equal(await polled.isHidden("#banner"), true);
    const pollSnap = () => polled.$eval(`#hosts tr[data-id="${id}"] svg.spark polyline`, (p) => p.getAttribute("points"));
    const p0 = await pollSnap();
    await L.waitFor("web-1 to move while polling", 10000, async () => (await pollSnap()) !== p0);
    await polled.close();
    step("EventSource blocked: falls back to polling, values still move");

    // 8. Light and dark follow prefers-color-scheme.
    const bg = async (scheme) => {
      await page.emulateMedia({ colorScheme: scheme });
      return page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    };
    const light = await bg("light");
    const dark = await bg("dark");
    assert.notEqual(light, dark, "dark scheme changes the page");
    await page.screenshot({ path: path.join(L.ARTIFACTS, "fleet-dark.png") });
    await page.emulateMedia({ colorScheme: "light" });
    step("prefers-color-scheme: light " + light + ", dark " + dark);

    // 9. Connection lost when the master stops; recovery without reload when it is back.
    await page.goto(master.url("/"));
    await page.waitForFunction(() => document.getElementById("live").textContent === "live");
    await page.evaluate(() => { window.__noReload = true; });
    const stoppedAt = Date.now();
    await master.stop();
    await page.waitForSelector("#banner:not([hidden])", { timeout: 10000 });
    assert.match(await page.textContent("#banner"), /Connection to the master lost, retrying/);
    const lostAfter = Date.now() - stoppedAt;
    await page.screenshot({ path: path.join(L.ARTIFACTS, "fleet-lost.png") });
    await master.start(); // same ports, same segment name
    const back = Date.now();
    await page.waitForSelector("#banner", { state: "hidden", timeout: 20000 });
    await page.waitForFunction(() => document.getElementById("live").textContent === "live", null, { timeout: 20000 });
    // Every running agent is back (the stopped one too if the table was restored from the
    // master's snapshot), and its values move again.
    const running = NAMES.filter((n) => n !== "cache-1");
    await page.waitForFunction((names) => {
      const shown = new Set([...document.querySelectorAll("#hosts tr[data-id]")].map((tr) => tr.querySelector("td.host a").textContent));
      return names.every((n) => shown.has(n));
    }, running, { timeout: 20000 });
    const again = await snap();
    await L.waitFor("web-1's sparkline to move after the restart", 10000, async () => (await snap()).spark !== again.spark);
    assert.equal(await page.evaluate(() => window.__noReload), true, "recovered without a reload");
    step("connection lost shown " + lostAfter + " ms after SIGTERM; cleared " + (Date.now() - back) + " ms after restart");

    assert.deepEqual(dialogs, [], "no dialog opened");
    const csp = errors.filter((e) => /Content Security Policy|Refused/i.test(e));
    assert.deepEqual(csp, [], "no CSP violation");
    assert.deepEqual(errors.filter((e) => e.startsWith("pageerror")), [], "no script error");
    step("no dialog, no CSP violation, no script error over the whole run");

    if (process.env.UPDATE_DOCS_IMG === "1") {
      const img = path.join(L.ROOT, "docs", "img");
      fs.mkdirSync(img, { recursive: true });
      for (const f of ["fleet.png", "host.png"]) fs.copyFileSync(path.join(L.ARTIFACTS, f), path.join(img, f));
    }
    L.log("PASS dashboard.test.js: " + steps.length + " checks in " + ((Date.now() - t0) / 1000).toFixed(1) + " s");
  } finally {
    await L.closeBrowser(browser);
    await L.cleanup(master);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error("FAIL dashboard.test.js:", e && e.stack ? e.stack : e);
  process.exitCode = 1;
});

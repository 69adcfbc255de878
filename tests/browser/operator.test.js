// The dashboard's operator and identity features in headless Chromium, against a real master
// with a viewer (http_basic_auth_*) and an operator (http_operator_*), fed by real agents, a
// loadgen host (no key, as a 0.1.0 agent) and a clone (a second agent with a copy of one
// agent's state directory). Checks, in order:
// - the API: without credentials 401; the real agents `pinned` with a 64-hex `key_sha256`,
//   the loadgen host `unpinned` with none, the cloned host `cloned` with the other
//   machine's address (another port than its own connection's).
// - as the viewer (browser with httpCredentials): the fleet shows every host, the "cloned"
//   badge on the cloned host's row only; the host pages show Identity as "pinned, key sha256
//   <the key's first 16 hex digits>…", "unpinned (the agent sends no key)" and "cloned:
//   127.0.0.1:PORT also proves this key" with the other address; /api/v1/session says
//   may_write false and the host page has no visible "Remove host" button; a DELETE from the
//   viewer's page is refused 403 and logged (`refused an operator write user="viewer"`),
//   the host stays.
// - as the operator: /login lands on the fleet view; the host page shows "Remove host";
//   clicking it (the confirm dialog names the host, accepted) removes the stopped host: the
//   page goes to the fleet view, the API no longer lists the host, a fleet page opened before
//   drops the row live (no reload) and the host's page says "Unknown host" with no Remove
//   button (the dashboard offered it there before this test); the master logs
//   `operator write user="ops" ... action="remove_host" host_id=ID ... status=200`.
// - no script error and no CSP violation in either browser.
// Hostile host texts are dashboard.test.js's.
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const L = require("./lib");

const VIEWER = { username: "viewer", password: "viewer-secret-1" };
const OPERATOR = { username: "ops", password: "operator-secret-2" };
const sha256 = (s) => crypto.createHash("sha256").update(s).digest("hex");
const TOML =
  "http_basic_auth_user = " + JSON.stringify(VIEWER.username) + "\n" +
  "http_basic_auth_sha256 = " + JSON.stringify(sha256(VIEWER.password)) + "\n" +
  "http_operator_user = " + JSON.stringify(OPERATOR.username) + "\n" +
  "http_operator_sha256 = " + JSON.stringify(sha256(OPERATOR.password)) + "\n";

// Real agents (state directory agent-<index>); CLONE_OF's identity is copied to a second
// agent (index NAMES.length) once it is pinned. GONE is the host the operator removes.
const NAMES = ["web-1", "db-1", "dup-1"];
const GONE = "db-1";
const CLONE_OF = "dup-1";
const UNPINNED = "load-00000"; // sentinel-loadgen --id-base 0: hellos without a key
const ALL = [...NAMES, UNPINNED];

async function rowNames(page) {
  return page.$$eval("#hosts tr[data-id] td.host a", (as) => as.map((a) => a.textContent));
}

// The text of the host page's fact `term` (a dt/dd pair of #host-facts).
async function fact(page, term) {
  return page.$$eval("#host-facts dt", (dts, t) => {
    const dt = dts.find((d) => d.textContent === t);
    return dt ? dt.nextElementSibling.textContent : null;
  }, term);
}

// Opens host `h`'s page and waits until it is rendered and the session is known.
async function openHost(page, master, h) {
  await page.goto(master.url("/hosts/" + h.id));
  await page.waitForFunction((n) => document.getElementById("host-title").textContent === n, h.hostname, { timeout: 10000 });
  await page.waitForFunction(() => document.getElementById("host-admin").dataset.mayWrite !== undefined, null, { timeout: 10000 });
}

function watchErrors(page, errors) {
  page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
}

async function main() {
  const dir = L.tempDir("operator");
  fs.mkdirSync(L.ARTIFACTS, { recursive: true });
  const master = new L.Master(dir, { extraToml: TOML, auth: VIEWER.username + ":" + VIEWER.password });
  let viewer, operator;
  const t0 = Date.now();
  const steps = [];
  const step = (name) => { steps.push(name); L.log("ok: " + name); };
  const errors = [];
  try {
    await master.start();
    const agents = NAMES.map((n, i) => L.startAgent(master, dir, n, i));
    L.startHostileHost(master, dir, 0, null);
    let seen = [];
    const byName = async () => new Map((await master.hosts()).map((h) => [h.hostname, h]));
    await L.waitFor("every host streaming, the agents pinned", 20000, async () => {
      const hosts = await master.hosts();
      seen = hosts.map((h) => h.hostname + ":" + h.samples_received + ":" + h.identity);
      return hosts.length === ALL.length && hosts.every((h) => h.samples_received >= 2) &&
        hosts.filter((h) => h.identity === "pinned").length === NAMES.length;
    }).catch((e) => { throw new Error(e.message + " (table: " + seen.join(", ") + ")"); });

    // A copy of CLONE_OF's machine: same agent-id and agent-key, same hostname, its own
    // connection. Refused `conflict` while the first streams; its second try marks the host.
    L.copyAgentIdentity(dir, NAMES.indexOf(CLONE_OF), NAMES.length);
    L.startAgent(master, dir, CLONE_OF, NAMES.length);
    await L.waitFor(CLONE_OF + " reported cloned", 20000, async () => (await byName()).get(CLONE_OF).identity === "cloned");

    // 1. The API: who is pinned, unpinned, cloned.
    assert.equal((await L.getJson(master.httpPort, "/api/v1/hosts")).status, 401, "no credentials: 401");
    const hosts = await byName();
    assert.deepEqual([...hosts.keys()].sort(), [...ALL].sort(), "the clone is no host of its own");
    for (const n of NAMES.filter((n) => n !== CLONE_OF)) {
      assert.equal(hosts.get(n).identity, "pinned", n);
      assert.match(hosts.get(n).key_sha256, /^[0-9a-f]{64}$/, n);
      assert.equal(hosts.get(n).cloned_address, null, n);
    }
    const un = hosts.get(UNPINNED);
    assert.equal(un.identity, "unpinned");
    assert.equal(un.key_sha256, null);
    const dup = hosts.get(CLONE_OF);
    assert.match(dup.key_sha256, /^[0-9a-f]{64}$/);
    assert.match(dup.cloned_address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(dup.cloned_address, dup.address, "the other machine's address");
    step("API: " + NAMES.length + " agents keyed (" + CLONE_OF + " cloned from " + dup.cloned_address +
      "), " + UNPINNED + " unpinned; 401 without credentials");

    // 2. The viewer: identities shown, no Remove button, a DELETE refused.
    viewer = await L.launchBrowser({ httpCredentials: VIEWER });
    const vpage = await viewer.newPage();
    watchErrors(vpage, errors);
    await vpage.goto(master.url("/"));
    await vpage.waitForFunction((n) => document.querySelectorAll("#hosts tr[data-id]").length === n,
      ALL.length, { timeout: 15000 });
    assert.deepEqual((await rowNames(vpage)).sort(), [...ALL].sort());
    const badges = await vpage.$$eval("#hosts tr[data-id]", (trs) => trs
      .filter((tr) => tr.querySelector(".identity-cloned"))
      .map((tr) => [tr.querySelector("td.host a").textContent, tr.querySelector(".identity-cloned").textContent.trim()]));
    assert.deepEqual(badges, [[CLONE_OF, "cloned"]], "the cloned badge on " + CLONE_OF + "'s row only");
    step("viewer: fleet shows " + ALL.length + " rows, the \"cloned\" badge on " + CLONE_OF + " only");

    const web = hosts.get("web-1");
    await openHost(vpage, master, web);
    assert.equal(await fact(vpage, "Identity"), "pinned, key sha256 " + web.key_sha256.slice(0, 16) + "…");
    assert.equal(await vpage.$eval("#host-admin", (b) => b.dataset.mayWrite), "false");
    assert.equal(await vpage.isVisible("#remove-host"), false, "no Remove button for the viewer");
    assert.equal(await vpage.getByRole("button", { name: "Remove host" }).count(), 0, "no Remove button in the accessibility tree");
    const session = await vpage.evaluate(async () => (await fetch("/api/v1/session")).json());
    assert.deepEqual(session, { user: "viewer", may_write: false, writes_enabled: true });
    const refused = await vpage.evaluate(async (id) => {
      const r = await fetch("/api/v1/hosts/" + id, { method: "DELETE" });
      return { status: r.status, body: await r.json() };
    }, web.id);
    assert.equal(refused.status, 403, JSON.stringify(refused));
    assert.ok((await master.hosts()).some((h) => h.id === web.id), "the viewer removed nothing");
    await L.waitFor("the refused write in the master's log", 5000, async () =>
      master.logText().split("\n").some((l) => l.includes("refused an operator write") &&
        l.includes('user="viewer"') && l.includes('action="remove_host"') && l.includes("status=403")));
    await vpage.screenshot({ path: path.join(L.ARTIFACTS, "host-viewer.png"), fullPage: true });
    step("viewer: web-1 Identity pinned with its key's fingerprint; no Remove button; DELETE refused 403 and logged");

    await openHost(vpage, master, un);
    assert.equal(await fact(vpage, "Identity"), "unpinned (the agent sends no key)");
    await openHost(vpage, master, dup);
    const clonedText = await fact(vpage, "Identity");
    const m = /^cloned: (127\.0\.0\.1:\d+) also proves this key \(\d+ s ago\)$/.exec(clonedText);
    assert.ok(m, "cloned identity text: " + clonedText);
    assert.notEqual(m[1], await fact(vpage, "Address"), "the other machine's address, not the host's own");
    step("viewer: " + UNPINNED + " Identity unpinned; " + CLONE_OF + " \"" + clonedText + "\"");
    await L.closeBrowser(viewer);
    viewer = null;

    // 3. The operator removes a stopped host from its page.
    operator = await L.launchBrowser({ httpCredentials: OPERATOR });
    const fleetPage = await operator.newPage();
    watchErrors(fleetPage, errors);
    await fleetPage.goto(master.url("/login"));
    assert.equal(fleetPage.url(), master.url("/"), "/login lands on the fleet view");
    await fleetPage.waitForFunction((n) => document.querySelectorAll("#hosts tr[data-id]").length === n,
      ALL.length, { timeout: 15000 });
    await fleetPage.evaluate(() => { window.__noReload = true; });
    step("operator: /login redirects to the fleet view");

    const gone = hosts.get(GONE);
    await L.stop(agents[NAMES.indexOf(GONE)]); // stop the agent first, as OPERATIONS.md says
    await L.waitFor(GONE + " stopped", 10000, async () => (await byName()).get(GONE).status === "stopped");
    const page = await operator.newPage();
    watchErrors(page, errors);
    const dialogs = [];
    page.on("dialog", (d) => { dialogs.push(d.type() + ": " + d.message()); d.accept().catch(() => {}); });
    await openHost(page, master, gone);
    assert.equal(await page.$eval("#host-admin", (b) => b.dataset.mayWrite), "true");
    await page.waitForSelector("#remove-host", { state: "visible", timeout: 5000 });
    await page.screenshot({ path: path.join(L.ARTIFACTS, "host-operator.png"), fullPage: true });
    const clicked = Date.now();
    await Promise.all([page.waitForURL(master.url("/"), { timeout: 10000 }), page.click("#remove-host")]);
    assert.equal(dialogs.length, 1, "one confirm dialog: " + dialogs);
    assert.match(dialogs[0], new RegExp("^confirm: Remove " + GONE + " from the table\\?"));
    assert.ok(!(await master.hosts()).some((h) => h.id === gone.id), "the API no longer lists " + GONE);
    await fleetPage.waitForFunction((id) => !document.querySelector(`#hosts tr[data-id="${id}"]`), gone.id, { timeout: 5000 });
    const dropped = Date.now() - clicked;
    assert.deepEqual((await rowNames(fleetPage)).sort(), ALL.filter((n) => n !== GONE).sort());
    assert.equal(await fleetPage.evaluate(() => window.__noReload), true, "the row went without a reload");
    await page.waitForFunction((n) => document.querySelectorAll("#hosts tr[data-id]").length === n, ALL.length - 1, { timeout: 10000 });
    assert.ok(!(await rowNames(page)).includes(GONE), "the fleet view the page went to has no " + GONE);
    step("operator: Remove host (confirm accepted) removed " + GONE + ": gone from the API, and from an open fleet view " + dropped + " ms after the click, live");

    await page.goto(master.url("/hosts/" + gone.id));
    await page.waitForFunction(() => document.getElementById("host-title").textContent === "Unknown host" &&
      document.getElementById("host-admin").dataset.mayWrite === "true", null, { timeout: 10000 });
    assert.equal(await page.isVisible("#remove-host"), false, "no Remove button on an unknown host");
    const audit = await L.waitFor("the operator write in the master's log", 5000, async () =>
      master.logText().split("\n").find((l) => l.includes("operator write") && !l.includes("refused") &&
        l.includes('user="ops"') && l.includes('action="remove_host"') &&
        l.includes("host_id=" + gone.id) && l.includes("status=200")));
    assert.match(audit, new RegExp('host="' + GONE + '"'));
    step("operator: the removed host's page says Unknown host, without a Remove button; audit line: " + audit.slice(audit.indexOf("operator write")));

    const csp = errors.filter((e) => /Content Security Policy|Refused to/i.test(e));
    assert.deepEqual(csp, [], "no CSP violation");
    assert.deepEqual(errors.filter((e) => e.startsWith("pageerror")), [], "no script error");
    step("no script error, no CSP violation for the viewer or the operator");

    L.log("PASS operator.test.js: " + steps.length + " checks in " + ((Date.now() - t0) / 1000).toFixed(1) + " s");
  } finally {
    await L.closeBrowser(viewer);
    await L.closeBrowser(operator);
    await L.cleanup(master);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error("FAIL operator.test.js:", e && e.stack ? e.stack : e);
  process.exitCode = 1;
});

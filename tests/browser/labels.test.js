// Labels in the dashboard (issue 13), in headless Chromium against a real master fed by real
// agents started with `--label` flags and 250 simulated hosts (sentinel-loadgen
// `--label-cycle role=web,db,cache --label-index shard=20`: host i has role
// ["web","db","cache"][i % 3] and shard i / 20). Every expectation is computed from that
// model, never read back from the page. Checks, in order:
// - the API holds the labels (so a failure below is the dashboard's);
// - the first page shows the first 100 hosts in the master's order, each with its label
//   chips, and the page's event stream names exactly those ids; Next shows the next 100 and
//   re-opens the stream with their ids;
// - filters typed in the box (label =, !=, =*, !, free text, both) show exactly the matching
//   hosts and are in the URL; a filter the master refuses shows its reason and no rows;
// - grouping by a label: one header per value in order (hosts without it last, "no NAME"),
//   each with its host counts by status and a busiest host of that group, the rows under it
//   being that group's; the stream carries `group_by`;
// - collapsing a group hides exactly its rows (header kept), expanding shows them again;
// - the filtered, grouped, collapsed URL opened in a new page restores the same view, and
//   back/forward in one page move between views;
// - hostile label values (markup, quotes) are text in chips, group headers, the filter box
//   and the host page: no element created, no dialog; clicking such a chip filters by it;
// - the host page shows the labels, each linking to the fleet filtered by it;
// - the status chips at the top toggle statuses (several at once), the counts and a group's
//   header count every status;
// - compact mode shows 200 rows per page and streams those 200.
"use strict";

const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const L = require("./lib");

const HOSTILE = ["<img src=x onerror=alert(1)>", "\"><script>alert(2)</script>"];
const SIMULATED = 250;
const ROLES = ["web", "db", "cache"];
const SHARD = 20;
// Real agents and their labels.
const REAL = [
  { name: "web-1", labels: { role: "web", dc: "eu1" } },
  { name: "web-2", labels: { role: "web", dc: "us1" } },
  { name: "db-1", labels: { role: "db", dc: "eu1" } },
  { name: "plain-1", labels: {} },
  { name: "evil-1", labels: { note: HOSTILE[0], quote: HOSTILE[1] } },
];
const SIM = Array.from({ length: SIMULATED }, (_, i) => ({
  name: "load-" + String(i).padStart(5, "0"),
  labels: { role: ROLES[i % 3], shard: String(Math.floor(i / SHARD)) },
}));
const MODEL = [...REAL, ...SIM];

// The contract's label conditions (docs/CONTRACT.md "Filters") over the model.
function matches(h, labels, q) {
  for (const l of labels) {
    let m;
    if (l.startsWith("!")) {
      if (l.slice(1) in h.labels) return false;
    } else if ((m = /^([^!=]+)!=(.*)$/.exec(l))) {
      if (h.labels[m[1]] === m[2]) return false;
    } else if ((m = /^([^=]+)=(.*)$/.exec(l))) {
      if (h.labels[m[1]] !== m[2]) return false;
    } else if (!(l in h.labels)) {
      return false;
    }
  }
  if (q) {
    // The test's texts contain a character no id (32 hex) has, so ids never match them.
    const n = q.toLowerCase();
    if (!h.name.toLowerCase().includes(n) && !Object.values(h.labels).some((v) => v.toLowerCase().includes(n))) return false;
  }
  return true;
}

function expected(labels, q) {
  return MODEL.filter((h) => matches(h, labels, q)).map((h) => h.name).sort();
}

// What the fleet table shows, in order: group headers and host rows.
function shown(page) {
  return page.$$eval("#hosts tr:not(.spacer)", (trs) => trs.map((t) => t.dataset.id
    ? {
      id: t.dataset.id,
      host: t.querySelector("td.host a").textContent,
      labels: [...t.querySelectorAll("td.labels .chip")].map((c) => c.textContent),
    }
    : {
      group: t.dataset.group,
      name: t.querySelector(".gname").textContent,
      expanded: t.querySelector(".toggle").getAttribute("aria-expanded"),
      counts: Object.fromEntries([...t.querySelectorAll(".gst")].map((s) => [s.dataset.status, parseInt(s.textContent, 10)])),
      hosts: parseInt(t.querySelector(".gcount").textContent, 10),
      busiest: t.querySelector(".busiest a") ? t.querySelector(".busiest a").textContent : null,
    }));
}

async function hostNames(page) {
  return (await shown(page)).filter((i) => i.host !== undefined).map((i) => i.host);
}

// Waits until the rows shown are exactly `want` (in this order if `ordered`).
async function expectRows(page, what, want, ordered = false, ms = 15000) {
  const key = (a) => JSON.stringify(ordered ? a : [...a].sort());
  let last = [];
  await L.waitFor(what, ms, async () => {
    last = await hostNames(page);
    return key(last) === key(want);
  }).catch((e) => {
    throw new Error(e.message + "\n  want (" + want.length + ") " + want.slice(0, 12).join(" ") +
      "\n  got  (" + last.length + ") " + last.slice(0, 12).join(" "));
  });
}

// The ids= and group_by of the last event stream the page opened.
function lastStream(streams) {
  const u = new URL(streams[streams.length - 1]);
  const ids = (u.searchParams.get("ids") || "").split(",").filter(Boolean).sort();
  return { ids, group: u.searchParams.get("group_by"), url: u };
}

async function main() {
  const dir = L.tempDir("labels");
  fs.mkdirSync(L.ARTIFACTS, { recursive: true });
  const master = new L.Master(dir, { capacity: 400 });
  let browser;
  const t0 = Date.now();
  const steps = [];
  const step = (name) => { steps.push(name); L.log("ok: " + name); };
  try {
    await master.start();
    const agents = REAL.map((h, i) => L.startAgent(master, dir, h.name, i, "500ms",
      Object.entries(h.labels).flatMap(([k, v]) => ["--label", k + "=" + v])));
    const loadLog = path.join(dir, "loadgen.log");
    const load = L.start(L.BIN("sentinel-loadgen"), [
      "run", "--master", "127.0.0.1:" + master.agentPort, "--agents", String(SIMULATED), "--id-base", "0",
      "--interval", "1s", "--duration", "600s", "--token-file", path.join(master.dir, "token"),
      "--label-cycle", "role=" + ROLES.join(","), "--label-index", "shard=" + SHARD,
    ], "loadgen", loadLog);

    // 0. The master holds every host with the model's labels.
    let api = [];
    await L.waitFor("every host up with its labels", 60000, async () => {
      if (!L.alive(load)) throw new Error("loadgen exited: " + fs.readFileSync(loadLog, "utf8").slice(-2000));
      api = await master.hosts();
      return api.length === MODEL.length && api.every((h) => h.status === "up");
    }, 500);
    for (const m of MODEL) {
      const h = api.find((x) => x.hostname === m.name);
      assert.ok(h, "host " + m.name + " in the API");
      assert.deepEqual(h.labels, m.labels, "labels of " + m.name + " in /api/v1/hosts");
    }
    const idOf = Object.fromEntries(api.map((h) => [h.hostname, h.id]));
    const order = api.map((h) => h.hostname); // the master's order (hostname, then id)
    step("the API lists " + MODEL.length + " hosts with the model's labels");

    browser = await L.launchBrowser({ viewport: { width: 1600, height: 5200 } });
    const page = await browser.newPage();
    const dialogs = [];
    const errors = [];
    const streams = [];
    page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
    page.on("console", (m) => {
      // Failed loads are the refused filter (400, step 4) and the favicon (404).
      if (m.type() === "error" && !/^Failed to load resource/.test(m.text())) errors.push("console: " + m.text());
    });
    page.on("request", (r) => { if (r.url().includes("/api/v1/events")) streams.push(r.url()); });

    // 1. The first page, chips, and the stream of exactly its rows.
    await page.goto(master.url("/"));
    await expectRows(page, "page 1", order.slice(0, 100), true);
    await page.waitForFunction(() => document.getElementById("live").textContent === "live");
    const rows1 = await shown(page);
    assert.deepEqual(rows1.find((r) => r.host === "db-1").labels, ["dc=eu1", "role=db"], "db-1's chips");
    assert.deepEqual(rows1.find((r) => r.host === "load-00004").labels, ["role=db", "shard=0"], "load-00004's chips");
    assert.match(await page.textContent("#page-info"), /^page 1 of 3 \(1–100 of 255\)$/);
    assert.deepEqual(lastStream(streams).ids, order.slice(0, 100).map((n) => idOf[n]).sort(), "stream ids = page 1");
    step("page 1: the first 100 hosts in the master's order, chips, a stream of those 100 ids");

    // 2. Next page: the next 100, a stream of theirs, page=2 in the URL.
    await page.click("#page-next");
    await expectRows(page, "page 2", order.slice(100, 200), true);
    assert.equal(new URL(page.url()).searchParams.get("page"), "2");
    await L.waitFor("the stream of page 2", 5000, async () =>
      JSON.stringify(lastStream(streams).ids) === JSON.stringify(order.slice(100, 200).map((n) => idOf[n]).sort()));
    step("page 2: hosts 101-200, stream re-opened with their ids");

    // 3. Filters typed in the box.
    const cases = [
      ["role=db", ["role=db"], ""],
      ["role=web dc=eu1", ["role=web", "dc=eu1"], ""],
      ["role=web eu", ["role=web"], "eu"],
      ["shard=3 role!=web", ["shard=3", "role!=web"], ""],
      ["!role", ["!role"], ""],
      ["dc=*", ["dc"], ""],
      ["load-0012", [], "load-0012"],
      ["LOAD-0012 role=cache", ["role=cache"], "LOAD-0012"],
    ];
    for (const [text, labels, q] of cases) {
      await page.fill("#filter", text);
      const want = expected(labels, q);
      assert.ok(want.length > 0 && want.length <= 100, "case " + text + " has one page of hosts");
      // The URL says the filter once the box's text is taken (after a pause in typing).
      await L.waitFor("the URL of " + JSON.stringify(text), 5000, async () => {
        const u = new URL(page.url()).searchParams;
        return JSON.stringify(u.getAll("label")) === JSON.stringify(labels) && (u.get("q") || "") === q;
      });
      assert.equal(new URL(page.url()).searchParams.get("page"), null, "a new filter starts at page 1");
      await expectRows(page, "filter " + JSON.stringify(text), want);
    }
    step("filters " + cases.map((c) => JSON.stringify(c[0])).join(", ") + " show exactly the matching hosts");

    // 4. A filter the master refuses: its reason, no rows.
    await page.fill("#filter", "a=" + "x".repeat(300));
    await page.waitForSelector("#filter-error:not([hidden])", { timeout: 10000 });
    assert.match(await page.textContent("#filter-error"), /label/);
    assert.equal((await hostNames(page)).length, 0);
    // The master is still there: past the 5 s silence limit the page is live, no banner.
    await new Promise((r) => setTimeout(r, 6500));
    assert.equal(await page.textContent("#live"), "live", "still live after a refused filter");
    assert.equal(await page.isHidden("#banner"), true, "no connection-lost banner after a refused filter");
    step("a refused filter shows the master's reason (" + (await page.textContent("#filter-error")).slice(0, 80) + "…)");

    // 5. Grouping by role within shard 0: cache, db, web, with counts and a busiest host each.
    await page.fill("#filter", "shard=0");
    await expectRows(page, "shard 0", expected(["shard=0"], ""));
    await page.selectOption("#group-by", "role");
    const groupsOf = (labels) => {
      const hosts = MODEL.filter((h) => matches(h, labels, ""));
      const values = [...new Set(hosts.map((h) => h.labels.role).filter((v) => v !== undefined))].sort();
      const out = values.map((v) => ({ value: v, names: hosts.filter((h) => h.labels.role === v).map((h) => h.name).sort() }));
      const none = hosts.filter((h) => h.labels.role === undefined).map((h) => h.name).sort();
      if (none.length) out.push({ value: null, names: none });
      return out;
    };
    const want5 = groupsOf(["shard=0"]);
    let items = [];
    await L.waitFor("role groups of shard 0", 15000, async () => {
      items = await shown(page);
      const heads = items.filter((i) => i.group !== undefined);
      return heads.length === want5.length && heads.every((h, k) => h.name === "role=" + want5[k].value &&
        h.hosts === want5[k].names.length && h.counts.up === want5[k].names.length && h.busiest !== null);
    }).catch((e) => { throw new Error(e.message + ": " + JSON.stringify(items.filter((i) => i.group !== undefined))); });
    // The rows under each header are that group's, and its busiest host is one of them.
    let current = null;
    const under = {};
    for (const it of items) {
      if (it.group !== undefined) { current = it.group; under[current] = []; continue; }
      under[current].push(it.host);
    }
    for (const g of want5) {
      assert.deepEqual(under[g.value].slice().sort(), g.names, "rows under role=" + g.value);
      const head = items.find((i) => i.group === g.value);
      assert.ok(g.names.includes(head.busiest), "busiest of role=" + g.value + " (" + head.busiest + ") is in the group");
      for (const s of ["stale", "down", "stopped"]) assert.equal(head.counts[s], 0, s + " count of role=" + g.value);
    }
    assert.equal(lastStream(streams).group, "role", "the stream carries group_by=role");
    assert.equal(new URL(page.url()).searchParams.get("group"), "role");
    step("grouped by role: " + want5.map((g) => g.value + " " + g.names.length).join(", ") + " with counts and busiest hosts");

    // 6. Collapse db: its rows go, its header stays; expand: they are back.
    const db = want5.find((g) => g.value === "db").names;
    const all5 = want5.flatMap((g) => g.names);
    await page.click('#hosts tr.group[data-group="db"] button.toggle');
    await expectRows(page, "db collapsed", all5.filter((n) => !db.includes(n)));
    let head = (await shown(page)).find((i) => i.group === "db");
    assert.equal(head.expanded, "false");
    assert.equal(head.hosts, db.length, "a collapsed header still counts its hosts");
    assert.deepEqual(new URL(page.url()).searchParams.getAll("collapsed"), ["db"]);
    await page.click('#hosts tr.group[data-group="db"] button.toggle');
    await expectRows(page, "db expanded", all5);
    head = (await shown(page)).find((i) => i.group === "db");
    assert.equal(head.expanded, "true");
    await page.click('#hosts tr.group[data-group="db"] button.toggle');
    await expectRows(page, "db collapsed again", all5.filter((n) => !db.includes(n)));
    step("collapse hides exactly db's " + db.length + " rows, expand shows them");

    // 7. The bookmarked URL restores the same view in a new page.
    const bookmark = page.url();
    const view = await shown(page);
    const other = await browser.newPage();
    other.on("pageerror", (e) => errors.push("pageerror: " + e.message));
    other.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    await other.goto(bookmark);
    await L.waitFor("the bookmarked view", 15000, async () =>
      JSON.stringify((await shown(other)).map((i) => [i.group, i.host, i.expanded])) ===
      JSON.stringify(view.map((i) => [i.group, i.host, i.expanded])));
    assert.equal(await other.inputValue("#filter"), "shard=0");
    assert.equal(await other.inputValue("#group-by"), "role");
    await other.close();
    step("bookmark " + new URL(bookmark).search + " restores the same view in a new page");

    // 8. Back and forward.
    await page.goBack();
    await expectRows(page, "back: db expanded", all5);
    await page.goBack();
    await expectRows(page, "back: db collapsed", all5.filter((n) => !db.includes(n)));
    await page.goForward();
    await expectRows(page, "forward: db expanded", all5);
    step("back/forward restore the previous views");

    // 9. Hosts without the label form the last group, "no dc".
    await page.fill("#filter", "");
    await page.selectOption("#group-by", "dc");
    await L.waitFor("dc groups", 15000, async () => {
      const heads = (await shown(page)).filter((i) => i.group !== undefined);
      return JSON.stringify(heads.map((h) => [h.name, h.hosts])) ===
        JSON.stringify([["dc=eu1", 2], ["dc=us1", 1], ["no dc", MODEL.length - 3]]);
    });
    const dcItems = await shown(page);
    assert.deepEqual(dcItems.slice(0, 6).map((i) => i.name || i.host), ["dc=eu1", "db-1", "web-1", "dc=us1", "web-2", "no dc"]);
    assert.equal(dcItems.filter((i) => i.host).length, 100, "a page of 100 rows across the groups");
    assert.equal(dcItems.find((i) => i.name === "no dc").group, "");
    step("grouped by dc: eu1 2, us1 1, then \"no dc\" " + (MODEL.length - 3));

    // 10. Hostile label values stay text: chips, group headers, the filter box, the host page.
    await page.selectOption("#group-by", "note");
    await L.waitFor("the note group", 15000, async () =>
      (await shown(page)).some((i) => i.name === "note=" + HOSTILE[0]));
    const evil = (await shown(page)).find((i) => i.host === "evil-1");
    assert.deepEqual(evil.labels, ["note=" + HOSTILE[0], "quote=" + HOSTILE[1]]);
    assert.equal(await page.$$eval("img, iframe", (e) => e.length), 0, "no element from a label");
    assert.equal(await page.$$eval("script", (s) => s.length), 1, "only app.js");
    await page.click('#hosts tr[data-id="' + idOf["evil-1"] + '"] button.chip:nth-child(2)');
    await expectRows(page, "filtered by the hostile quote value", ["evil-1"]);
    assert.deepEqual(new URL(page.url()).searchParams.getAll("label"), ["quote=" + HOSTILE[1]]);
    const box = await page.inputValue("#filter");
    assert.equal(box, 'quote="\\"><script>alert(2)</script>"', "the box quotes the value");
    // The box's text reads back as the same filter.
    await page.fill("#filter", box + " ");
    await expectRows(page, "the box's text typed back", ["evil-1"]);
    await page.goto(master.url("/hosts/" + idOf["evil-1"]));
    await page.waitForFunction(() => document.getElementById("host-title").textContent === "evil-1");
    const chips = await page.$$eval("#host-labels a.chip", (as) => as.map((a) => [a.textContent, a.getAttribute("href")]));
    assert.deepEqual(chips, [
      ["note=" + HOSTILE[0], "/?label=" + encodeURIComponent("note=" + HOSTILE[0])],
      ["quote=" + HOSTILE[1], "/?label=" + encodeURIComponent("quote=" + HOSTILE[1])],
    ]);
    assert.equal(await page.$$eval("img, iframe", (e) => e.length), 0, "no element from a label on the host page");
    assert.equal(await page.$$eval("script", (s) => s.length), 1, "only app.js on the host page");
    await page.click("#host-labels a.chip:first-child");
    await expectRows(page, "the host page's chip filters the fleet", ["evil-1"]);
    step("hostile label values are text in chips, headers, the box and the host page; no dialog");

    // 11. The host page's labels link to the fleet filtered by them.
    await page.goto(master.url("/hosts/" + idOf["web-1"]));
    await page.waitForFunction(() => document.querySelectorAll("#host-labels a.chip").length === 2);
    assert.deepEqual(await page.$$eval("#host-labels a.chip", (as) => as.map((a) => a.textContent)), ["dc=eu1", "role=web"]);
    await page.click('#host-labels a.chip:nth-child(2)');
    await expectRows(page, "the fleet of role=web", expected(["role=web"], ""));
    step("host page shows web-1's labels; its role=web chip opens the fleet filtered by it");

    // 12. Status chips toggle (several at once); a stopped host is counted in its group.
    await L.stop(agents[REAL.findIndex((h) => h.name === "plain-1")]); // goodbye -> "stopped"
    await page.goto(master.url("/?label=!role&group=dc"));
    await expectRows(page, "hosts without a role", ["evil-1", "plain-1"]);
    const chip = (s) => page.click('#counts button[data-status="' + s + '"]');
    await chip("stopped");
    await expectRows(page, "stopped only", ["plain-1"], false, 20000);
    assert.equal(new URL(page.url()).searchParams.get("status"), "stopped");
    await chip("up");
    await expectRows(page, "up and stopped", ["evil-1", "plain-1"]);
    assert.equal(new URL(page.url()).searchParams.get("status"), "up,stopped");
    assert.equal(await page.inputValue("#status-filter"), "several");
    let noDc = null;
    await L.waitFor("the no-dc header counting 1 up, 1 stopped", 5000, async () => {
      noDc = (await shown(page)).find((i) => i.name === "no dc");
      return noDc && noDc.hosts === 2 && noDc.counts.up === 1 && noDc.counts.stopped === 1;
    }).catch(async (e) => {
      const api = await L.getJson(master.httpPort, "/api/v1/groups?label=!role&by=dc");
      throw new Error(e.message + ": shown " + JSON.stringify(noDc) + ", API " + JSON.stringify(api.body));
    });
    assert.match(await page.textContent("#counts"), /^2 hosts1 up0 stale0 down1 stopped$/);
    await chip("stopped");
    await expectRows(page, "up only", ["evil-1"]);
    await page.click('#counts button[data-status=""]');
    await expectRows(page, "every status again", ["evil-1", "plain-1"]);
    assert.equal(new URL(page.url()).searchParams.get("status"), null);
    step("status chips: stopped, up+stopped, up, all; the group counts 1 up 1 stopped");

    // 13. Compact: 200 rows per page, a stream of those 200.
    await page.goto(master.url("/"));
    await expectRows(page, "page 1 again", order.slice(0, 100), true);
    await page.check("#compact");
    await expectRows(page, "compact page 1", order.slice(0, 200), true);
    assert.equal(await page.evaluate(() => document.body.classList.contains("compact")), true);
    assert.equal(new URL(page.url()).searchParams.get("compact"), "1");
    await L.waitFor("the compact stream", 5000, async () => lastStream(streams).ids.length === 200);
    assert.deepEqual(lastStream(streams).ids, order.slice(0, 200).map((n) => idOf[n]).sort());
    await page.screenshot({ path: path.join(L.ARTIFACTS, "fleet-compact.png") });
    step("compact: 200 rows per page, streamed by id");

    await page.goto(master.url("/?group=role&label=shard%3D1"));
    await L.waitFor("grouped view for the screenshot", 15000, async () => (await shown(page)).some((i) => i.group === "web"));
    await page.setViewportSize({ width: 1440, height: 900 });
    await page.screenshot({ path: path.join(L.ARTIFACTS, "fleet-grouped.png") });

    assert.deepEqual(dialogs, [], "no dialog opened");
    assert.deepEqual(errors, [], "no script error, no console error");
    step("no dialog, no script error over the whole run");
    L.log("PASS labels.test.js: " + steps.length + " checks in " + ((Date.now() - t0) / 1000).toFixed(1) + " s");
  } finally {
    await L.closeBrowser(browser);
    await L.cleanup(master);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error("FAIL labels.test.js:", e && e.stack ? e.stack : e);
  process.exitCode = 1;
});

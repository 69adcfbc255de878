// Process and browser helpers for the dashboard tests: real sentinel-master and
// sentinel-agent processes on 127.0.0.1 (masters on port 0, read back), each tracked by PID and always cleaned
// up; Debian's /usr/bin/chromium driven by playwright-core. Every wait is a condition with a
// deadline.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const http = require("node:http");

const ROOT = path.resolve(__dirname, "..", "..");
// target/debug unless SENTINEL_PROFILE says otherwise (the 5,000-host figures use release).
const BIN = (name) => path.join(ROOT, "target", process.env.SENTINEL_PROFILE || "debug", name);
const TOKEN = "browser-test-token";
const ARTIFACTS = path.join(__dirname, "artifacts");

// The flags Chromium needs on these machines (docs: machines/rust.md): as root, no sandbox;
// no background networking, which the closed network would refuse.
const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const children = new Set(); // every process we started, until it is reaped

function log(...args) {
  console.log(new Date().toISOString().slice(11, 23), ...args);
}

// The `agents=ADDR` and `http=ADDR` lines a master started with `--addr-file` writes once
// it is bound (docs/CONTRACT.md): [agentPort, httpPort], or null while incomplete.
function readAddrFile(file) {
  let text;
  try { text = fs.readFileSync(file, "utf8"); } catch (e) { return null; }
  const port = (key) => {
    const line = text.split("\n").find((l) => l.startsWith(key + "="));
    const m = line && /:(\d+)$/.exec(line.trim());
    return m ? Number(m[1]) : null;
  };
  const [agents, http] = [port("agents"), port("http")];
  return agents && http ? [agents, http] : null;
}

function tempDir(tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), "sentinel-" + tag + "-"));
}

function start(bin, args, name, logFile) {
  const out = fs.openSync(logFile, "a");
  const child = spawn(bin, args, { stdio: ["ignore", out, out] });
  fs.closeSync(out);
  child.label = name;
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

function alive(child) {
  return child && child.exitCode === null && child.signalCode === null;
}

async function waitFor(what, limitMs, fn, everyMs = 100) {
  const deadline = Date.now() + limitMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error("timed out after " + limitMs + " ms waiting for " + what + (last ? ": " + last.message : ""));
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// Sends `sig` to one child by PID and waits for it to exit (SIGKILL after `graceMs`).
async function stop(child, sig = "SIGTERM", graceMs = 8000) {
  if (!alive(child)) return;
  const exited = new Promise((r) => child.once("exit", r));
  process.kill(child.pid, sig);
  const t = setTimeout(() => { if (alive(child)) process.kill(child.pid, "SIGKILL"); }, graceMs);
  await exited;
  clearTimeout(t);
}

// `auth`: "user:password" for a master with http_basic_auth_* (docs/CONTRACT.md), else none.
function getJson(port, p, auth) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: p, auth, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => { body += c; });
      res.on("end", () => {
        try { resolve({ status: res.statusCode, body: JSON.parse(body) }); } catch (e) { reject(e); }
      });
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

class Master {
  constructor(dir, opts = {}) {
    this.dir = dir;
    this.shm = "sentinel-browser-" + process.pid + "-" + Math.floor(Math.random() * 1e6);
    this.opts = opts;
    fs.writeFileSync(path.join(dir, "token"), TOKEN + "\n");
    fs.writeFileSync(path.join(dir, "master.toml"),
      "capacity = " + (opts.capacity || 64) + "\nhistory_points = " + (opts.historyPoints || 600) +
      "\nstate_dir = " + JSON.stringify(dir) +
      // Every simulated host connects from 127.0.0.1: no bound on new identities per address.
      "\nnew_hosts_per_minute = 0\n" + (opts.extraToml || ""));
  }

  // The first start binds 127.0.0.1:0 for both ports and reads the bound ports back from
  // the master's --addr-file; a restart binds those same ports again.
  async start() {
    const addrFile = path.join(this.dir, "addr");
    fs.rmSync(addrFile, { force: true });
    this.child = start(BIN("sentinel-master"), [
      "--config", path.join(this.dir, "master.toml"),
      "--listen", "127.0.0.1:" + (this.agentPort || 0),
      "--http", "127.0.0.1:" + (this.httpPort || 0),
      "--addr-file", addrFile,
      "--shm-name", this.shm,
      "--token-file", path.join(this.dir, "token"),
    ], "master", path.join(this.dir, "master.log"));
    [this.agentPort, this.httpPort] = await waitFor("master --addr-file", 15000, async () => {
      if (!alive(this.child)) throw new Error("master exited; see " + path.join(this.dir, "master.log"));
      return readAddrFile(addrFile);
    }, 20);
    await waitFor("master /healthz", 15000, async () => {
      if (!alive(this.child)) throw new Error("master exited; see " + path.join(this.dir, "master.log"));
      const r = await getJson(this.httpPort, "/healthz");
      return r.status === 200;
    });
    log("master up pid=" + this.child.pid + " http=127.0.0.1:" + this.httpPort);
  }

  url(p = "/") {
    return "http://127.0.0.1:" + this.httpPort + p;
  }

  // With `opts.auth` ("user:password") the API is read with those credentials.
  async hosts() {
    return (await getJson(this.httpPort, "/api/v1/hosts", this.opts.auth)).body.hosts;
  }

  // Everything the master's processes logged so far (supervisor, collector, http).
  logText() {
    return fs.readFileSync(path.join(this.dir, "master.log"), "utf8");
  }

  // SIGTERM to the supervisor by PID: it stops its children and removes the segment.
  async stop() {
    await stop(this.child, "SIGTERM", 10000);
    this.removeSegment();
  }

  removeSegment() {
    for (const f of [this.shm, this.shm + ".flink"]) {
      try { fs.unlinkSync(path.join("/dev/shm", f)); } catch (_) { /* already gone */ }
    }
  }
}

function agentStateDir(dir, i) {
  return path.join(dir, "agent-" + i);
}

// `extra`: more agent flags, e.g. ["--label", "role=db"].
function startAgent(master, dir, hostname, i, interval = "500ms", extra = []) {
  const state = agentStateDir(dir, i);
  fs.mkdirSync(state, { recursive: true });
  return start(BIN("sentinel-agent"), [
    "--master", "127.0.0.1:" + master.agentPort,
    "--hostname", hostname,
    "--interval", interval,
    "--token-file", path.join(master.dir, "token"),
    "--state-dir", state,
    "--reconnect-max", "1s",
    ...extra,
  ], "agent " + i, path.join(dir, "agent-" + i + ".log"));
}

// Agent `to`'s state directory gets agent `from`'s identity (`agent-id` and `agent-key`): a
// machine cloned with its /var/lib/sentinel, as tests/src/lib.rs Agent::start_with_state_of.
function copyAgentIdentity(dir, from, to) {
  fs.mkdirSync(agentStateDir(dir, to), { recursive: true });
  for (const f of ["agent-id", "agent-key"]) {
    fs.copyFileSync(path.join(agentStateDir(dir, from), f), path.join(agentStateDir(dir, to), f));
  }
}

// One simulated host (sentinel-loadgen, the real protocol) named load-<idBase, 5 digits>
// whose agent_version, os, kernel, cpu_model and first mount point are `text`: hostnames
// are limited to A-Z a-z 0-9 - . _, so hostile text reaches the dashboard through these.
// The loadgen's hellos carry no key: its hosts are unpinned, as a 0.1.0 agent's. With `text`
// null the host reports the loadgen's own texts.
function startHostileHost(master, dir, idBase, text, interval = "500ms") {
  const hostText = text === null || text === undefined ? [] : ["--host-text", text];
  return start(BIN("sentinel-loadgen"), [
    "run",
    "--master", "127.0.0.1:" + master.agentPort,
    "--agents", "1",
    "--interval", interval,
    "--duration", "600s",
    "--token-file", path.join(master.dir, "token"),
    "--id-base", String(idBase),
    ...hostText,
  ], "loadgen " + idBase, path.join(dir, "loadgen-" + idBase + ".log"));
}

async function cleanup(master) {
  for (const c of [...children]) {
    try { await stop(c, "SIGTERM", 5000); } catch (_) { /* gone */ }
  }
  if (master) master.removeSegment();
}

// `options`: more options of the browser context, e.g. `httpCredentials` for a master with
// basic auth (one browser per user: a persistent context holds one set of credentials).
async function launchBrowser(options = {}) {
  const { chromium } = require("playwright-core");
  const userDataDir = tempDir("chromium");
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1440, height: 900 },
    ...options,
  });
  context.userDataDir = userDataDir;
  return context;
}

async function closeBrowser(context) {
  if (!context) return;
  await context.close().catch(() => {});
  fs.rmSync(context.userDataDir, { recursive: true, force: true });
}

module.exports = {
  ROOT, ARTIFACTS, TOKEN, BIN, log, readAddrFile, tempDir, start, stop, alive, waitFor, getJson,
  Master, agentStateDir, startAgent, copyAgentIdentity, startHostileHost, cleanup, launchBrowser, closeBrowser, children,
};

#!/usr/bin/env python3
"""Ask a Sentinel master's HTTP API about the fleet, polling with deadlines.

Runs inside the e2e client network namespace (run.sh: `ip netns exec ... fleet.py ...`).
Standard library only. Every wait has a deadline; on timeout the last answer is printed
and the exit status is 1.

  fleet.py URL hosts                         print /api/v1/hosts
  fleet.py URL wait NAME=STATUS... [--exact] [--timeout S] [--where FIELD=VALUE]
                                             until each NAME has STATUS (and FIELD==VALUE);
                                             --exact: and no other host is listed
                                             --seen-after MS: and last_seen_ms > MS
                                             --min FIELD=N: and FIELD >= N
  fleet.py URL sequence NAME STATUS... [--timeout S]
                                             until NAME has gone through the statuses in order
  fleet.py URL field NAME FIELD              print one field of host NAME
  fleet.py URL now                           print the master's now_ms
  fleet.py URL table FIELD...                print FIELDs of every host, one line each
  fleet.py URL get PATH                      print status code, content type, body size
  fleet.py URL labels JSON [--timeout S] [--seen-after MS]
                                             until each host named in JSON (an object
                                             hostname -> labels object) shows exactly those
                                             labels (and last_seen_ms > MS)
"""
import json
import sys
import time
import urllib.error
import urllib.request


def fetch(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def hosts(base):
    _, _, body = fetch(base + "/api/v1/hosts")
    return {h["hostname"]: h for h in json.loads(body)["hosts"]}


def brief(hs):
    return ", ".join(f"{n}={h.get('status')}" for n, h in sorted(hs.items())) or "(no hosts)"


def parse_opts(args):
    opts = {"--timeout": "30", "--exact": False, "--where": [], "--seen-after": "0", "--min": []}
    rest = []
    it = iter(args)
    for a in it:
        if a == "--exact":
            opts["--exact"] = True
        elif a in ("--where", "--min"):
            opts[a].append(next(it))
        elif a in opts:
            opts[a] = next(it)
        else:
            rest.append(a)
    return opts, rest


def wait(base, args):
    opts, pairs = parse_opts(args)
    want = dict(p.split("=", 1) for p in pairs)
    where = [w.split("=", 1) for w in opts["--where"]]
    mins = [(f, int(v)) for f, v in (m.split("=", 1) for m in opts["--min"])]
    deadline = time.monotonic() + float(opts["--timeout"])
    start = time.monotonic()
    last = "no answer"
    while True:
        try:
            hs = hosts(base)
            ok = all(n in hs and hs[n]["status"] == s for n, s in want.items())
            ok = ok and all(str(hs[n].get(f)).lower() == v.lower() for n in want for f, v in where)
            ok = ok and all(hs[n]["last_seen_ms"] > int(opts["--seen-after"]) for n in want)
            ok = ok and all(int(hs[n][f]) >= v for n in want for f, v in mins)
            if opts["--exact"]:
                ok = ok and set(hs) == set(want)
            last = brief(hs)
            if ok:
                print(f"after {time.monotonic() - start:.1f}s: {last}")
                return 0
        except (OSError, ValueError, KeyError) as e:
            last = f"error: {e}"
        if time.monotonic() >= deadline:
            print(f"timeout after {opts['--timeout']}s; last: {last}")
            return 1
        time.sleep(0.1)


def sequence(base, args):
    opts, rest = parse_opts(args)
    name, statuses = rest[0], rest[1:]
    deadline = time.monotonic() + float(opts["--timeout"])
    start = time.monotonic()
    seen, i = [], 0
    while i < len(statuses):
        try:
            s = hosts(base).get(name, {}).get("status")
        except (OSError, ValueError) as e:
            s = f"error: {e}"
        if not seen or seen[-1][0] != s:
            seen.append((s, time.monotonic() - start))
        if s == statuses[i]:
            i += 1
            continue
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    trail = " -> ".join(f"{s}@{t:.1f}s" for s, t in seen)
    print(("reached" if i == len(statuses) else "timeout; trail") + f": {trail}")
    return 0 if i == len(statuses) else 1


def labels(base, args):
    opts, rest = parse_opts(args)
    want = json.loads(rest[0])
    deadline = time.monotonic() + float(opts["--timeout"])
    seen_after = int(opts["--seen-after"])
    last = "no answer"
    while True:
        try:
            hs = hosts(base)
            got = {n: hs[n].get("labels") if n in hs else "(not listed)" for n in want}
            fresh = all(n in hs and hs[n].get("last_seen_ms", 0) > seen_after for n in want)
            last = got
            if got == want and fresh:
                for n in sorted(want):
                    print(f"    {n}: {json.dumps(got[n], ensure_ascii=False, sort_keys=True)}")
                return 0
        except (OSError, ValueError) as e:
            last = e
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print("    timeout; last labels seen:")
    for n in sorted(want):
        g = last.get(n) if isinstance(last, dict) else last
        print(f"    {n}: got {json.dumps(g, ensure_ascii=False, sort_keys=True)}")
        print(f"    {' ' * len(n)}  want {json.dumps(want[n], ensure_ascii=False, sort_keys=True)}")
    return 1


def main(argv):
    base, cmd, args = argv[1].rstrip("/"), argv[2], argv[3:]
    if cmd == "hosts":
        print(json.dumps(json.loads(fetch(base + "/api/v1/hosts")[2]), indent=1))
        return 0
    if cmd == "wait":
        return wait(base, args)
    if cmd == "sequence":
        return sequence(base, args)
    if cmd == "now":
        print(json.loads(fetch(base + "/api/v1/hosts")[2])["now_ms"])
        return 0
    if cmd == "table":
        for n, h in sorted(hosts(base).items()):
            print("    " + n + " " + " ".join(f"{f}={h.get(f)}" for f in args))
        return 0
    if cmd == "field":
        print(hosts(base)[args[0]][args[1]])
        return 0
    if cmd == "labels":
        return labels(base, args)
    if cmd == "get":
        try:
            code, ctype, body = fetch(base + args[0])
        except urllib.error.HTTPError as e:
            code, ctype, body = e.code, e.headers.get("Content-Type", ""), e.read()
        print(code, ctype, len(body))
        print(body[:4000].decode("utf-8", "replace"), file=sys.stderr)
        return 0 if code == 200 else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

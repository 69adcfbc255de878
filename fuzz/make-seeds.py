#!/usr/bin/env python3
"""Writes the seed corpus: every test vector of docs/PROTOCOL.md plus hand-made hostile inputs.

frame/      whole frames (prefix + body), alone and concatenated as a conversation
decode/     frame bodies (one CBOR item)
router/     a method selector byte (0-2 GET, 3 HEAD, 4 POST, ...) then a path
handshake/  first-frame bodies (the hello vector carries a valid proof for the fuzz target's
            token and nonce, so the welcome path is reachable from the first run)
Run from anywhere: python3 fuzz/make-seeds.py
"""
import os
import re
import struct

here = os.path.dirname(os.path.abspath(__file__))
spec = open(os.path.join(here, "..", "docs", "PROTOCOL.md")).read()
vectors = {
    name: bytes.fromhex("".join(hexes.split()))
    for name, hexes in re.findall(r"<!-- vector: (\w+) -->\s*```hex\n(.*?)```", spec, re.S)
}
assert {"challenge", "hello", "welcome", "sample", "batch", "ack", "goodbye", "refused"} <= set(vectors), vectors.keys()
frames = {k: v for k, v in vectors.items() if k != "proof"}
bodies = {k: v[4:] for k, v in frames.items()}


def frame(body):
    return struct.pack(">I", len(body)) + body


def text(s):
    b = s.encode()
    if len(b) < 24:
        return bytes([0x60 + len(b)]) + b
    if len(b) < 256:
        return bytes([0x78, len(b)]) + b
    return bytes([0x79]) + struct.pack(">H", len(b)) + b


def swap(body, old, new):
    assert old in body, (old, body)
    return body.replace(old, new, 1)


hostile_bodies = {
    "nested-arrays": b"\x81" * 1000 + b"\x00",
    "nested-maps": b"\xa1\x61a" * 500 + b"\x00",
    "indefinite-nesting": b"\x9f" * 200 + b"\xff" * 200,
    "huge-text-claim": b"\xa1" + text("hello") + b"\xa1" + text("hostname") + b"\x7a\xff\xff\xff\xff" + b"x" * 16,
    "huge-array-claim": b"\xa1" + text("batch") + b"\xa1" + text("samples") + b"\x9b" + b"\xff" * 8,
    "nan-cpu": swap(bodies["sample"], b"\xf9\x4a\x40", b"\xf9\x7e\x00"),
    "inf-cpu": swap(bodies["sample"], b"\xf9\x4a\x40", b"\xf9\x7c\x00"),
    "double-cpu": swap(bodies["sample"], b"\xf9\x4a\x40", b"\xfb\x40\x29\x00\x00\x00\x00\x00\x00"),
    "seq-as-text": swap(bodies["sample"], b"\x63seq\x01", b"\x63seq\x61\x31"),
    "wrong-kind": b"\xa1" + text("welcome") + b"\xa0",
    "tag": b"\xc1\x1a\x00\x00\x00\x01",
    "trailing": bodies["ack"] + b"\x00",
}
hostile_frames = {
    "4gib-prefix": b"\xff\xff\xff\xff" + b"\xa0",
    "over-limit-prefix": struct.pack(">I", 262145) + b"\xa0",
    "zero-length": b"\x00\x00\x00\x00",
    "truncated": struct.pack(">I", 1000) + b"\xa1" * 10,
    "conversation": frame(bodies["hello"]) + frame(bodies["batch"]) + frame(bodies["sample"]) + frame(bodies["goodbye"]),
}


def write(target, items):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in items.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


write("frame", {**frames, **hostile_frames, **{k: frame(v) for k, v in hostile_bodies.items()}})
write("decode", {**bodies, **hostile_bodies})
write("handshake", {"hello": bodies["hello"], **{k: v for k, v in bodies.items() if k != "hello"},
                    "nested-arrays": hostile_bodies["nested-arrays"], "huge-text-claim": hostile_bodies["huge-text-claim"]})
router_paths = ["/", "/index.html", "/app.js", "/style.css", "/healthz", "/metrics", "/api/v1/hosts",
                "/api/v1/hosts/0123456789abcdef0123456789abcdef", "/api/v1/hosts/zzzz", "/hosts/0123456789abcdef0123456789abcdef",
                "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/v1/hosts/../../etc/passwd", "/api/v1/events",
                "/app.js/../../etc/passwd", "/api/v1/hosts/" + "a" * 300,
                # The filters (docs/CONTRACT.md "Filters"): good and refused.
                "/api/v1/hosts?label=role=db&label=dc!=eu1&q=Web&status=up,down&limit=5&offset=1",
                "/api/v1/labels?label=!role", "/api/v1/groups?by=role&q=%C3%A9", "/api/v1/events?ids=" + "ab" * 16 + "&group_by=dc",
                "/api/v1/hosts?label=%zz&q=%00", "/api/v1/hosts?" + "&label=a" * 17]
write("router", {**{"get-%02d" % i: b"\x00" + p.encode() for i, p in enumerate(router_paths)},
                 "post-hosts": b"\x04/api/v1/hosts", "head-healthz": b"\x03/healthz", "brew": b"\x07/"})
print({t: len(os.listdir(os.path.join(here, "corpus", t))) for t in ("frame", "decode", "handshake", "router")})

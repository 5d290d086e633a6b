"""Self-test of the interop peers' JSON-lines protocol: py<->py, and py<->js when available.

Stdlib only, so any Python 3.11 runs it::

    python3 tests/interop/py/selftest.py            # py<->py
    python3 tests/interop/py/selftest.py --js       # also py<->js (needs tests/interop/js)

Exits non-zero on the first failed check and prints ``N passed, N failed`` at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
PY_PEER = [str(ROOT / ".venv-pylibp2p/bin/python"), str(ROOT / "tests/interop/py/peer.py")]
JS_PEER = ["node", str(ROOT / "tests/interop/js/peer.mjs")]
READY_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 40.0
# Seed 0x01*32 -> a fixed Ed25519 peer id; compared between two runs below.
FIXED_SEED = "01" * 32
# Peer id of seed 0x02*32; no process runs with it, so dialing it must fail.
ABSENT_PEER_ID = "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq"


class Peer:
    """One peer process; a reader thread turns its stdout lines into a queue."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.pending: dict[int, dict[str, Any]] = {}
        self.next_id = 1
        threading.Thread(target=self._pump, daemon=True).start()
        first = self.lines.get(timeout=READY_TIMEOUT_S)
        if first is None or first.get("event") != "ready":
            raise RuntimeError(f"{name}: bad ready line {first!r}")
        self.peer_id: str = first["peerId"]
        self.addrs: list[str] = first["addrs"]
        tcp = [a for a in self.addrs if "/tcp/" in a and "/ws" not in a]
        self.addr = tcp[0] if tcp else self.addrs[0]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, cmd: str, **kw: Any) -> int:
        req_id = self.next_id
        self.next_id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": req_id, "cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        return req_id

    def wait(self, req_id: int) -> dict[str, Any]:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while req_id not in self.pending:
            msg = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise RuntimeError(f"{self.name}: exited before answering {req_id}")
            self.pending[msg.get("id")] = msg
        return self.pending.pop(req_id)

    def call(self, cmd: str, **kw: Any) -> dict[str, Any]:
        return self.wait(self.send(cmd, **kw))

    def quit(self) -> int:
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.send("quit")
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, label: str, cond: bool, detail: Any = "") -> None:
        if cond:
            self.passed += 1
            print(f"ok   {label} {detail}")
        else:
            self.failed += 1
            print(f"FAIL {label} {detail}")


def exercise(res: Results, a: Peer, b: Peer) -> None:
    """Ping, echo (small, empty, 1 MiB, 32 concurrent) and identify from ``a`` to ``b``."""
    tag = f"{a.name}->{b.name}"
    t0 = time.perf_counter()
    r = a.call("ping", addr=b.addr)
    res.check(f"{tag} ping (first dial)", r.get("ok") is True, r)
    res.check(
        f"{tag} first ping wall time < 200 ms",
        time.perf_counter() - t0 < 0.2,
        f"{(time.perf_counter() - t0) * 1000:.1f} ms",
    )
    r = a.call("ping", addr=b.addr)
    res.check(f"{tag} ping (reused conn)", r.get("ok") is True, r)

    for label, payload in (
        ("small", b"hello interop"),
        ("empty", b""),
        ("1 MiB", os.urandom(1 << 20)),
    ):
        r = a.call("echo", addr=b.addr, data_b64=base64.b64encode(payload).decode())
        got = base64.b64decode(r.get("data_b64", "")) if r.get("ok") else None
        res.check(
            f"{tag} echo {label}", got == payload, r if got is None else f"{len(payload)} bytes"
        )

    payloads = [os.urandom(64) for _ in range(32)]
    ids = [a.send("echo", addr=b.addr, data_b64=base64.b64encode(p).decode()) for p in payloads]
    good = sum(
        1
        for i, p in zip(ids, payloads, strict=True)
        if base64.b64decode(a.wait(i).get("data_b64", "")) == p
    )
    res.check(f"{tag} 32 concurrent echoes", good == 32, f"{good}/32")

    r = a.call("identify", addr=b.addr)
    ok = r.get("ok") is True and r.get("peerId") == b.peer_id
    res.check(f"{tag} identify", ok, {k: r.get(k) for k in ("peerId", "agentVersion", "error")})
    if ok:
        protos = set(r.get("protocols") or [])
        want = {"/ipfs/ping/1.0.0", "/ipfs/id/1.0.0", "/p2p/1.0.0"}
        res.check(f"{tag} identify protocols", want <= protos, sorted(protos))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--js", action="store_true", help="also test against tests/interop/js")
    args = ap.parse_args()
    res = Results()

    t0 = time.perf_counter()
    p1 = Peer([*PY_PEER, "--seed", FIXED_SEED], "py1")
    print(f"py peer ready in {(time.perf_counter() - t0) * 1000:.0f} ms")
    p2 = Peer(PY_PEER, "py2")
    try:
        exercise(res, p1, p2)
        exercise(res, p2, p1)
        r = p1.call("nonsense")
        res.check("unknown command -> ok:false", r.get("ok") is False, r)
        r = p1.call("ping", addr="/ip4/127.0.0.1/tcp/1/p2p/" + ABSENT_PEER_ID)
        res.check("ping to closed port -> ok:false", r.get("ok") is False, r.get("error"))
        if args.js:
            js = Peer(JS_PEER, "js")
            try:
                exercise(res, p1, js)
                exercise(res, js, p1)
            finally:
                res.check("js quit exit code 0", js.quit() == 0)
    finally:
        first_id = p1.peer_id
        res.check("py1 quit exit code 0", p1.quit() == 0)
        # EOF on stdin must also end the peer.
        assert p2.proc.stdin is not None
        p2.proc.stdin.close()
        res.check("py2 EOF exit code 0", p2.proc.wait(timeout=10) == 0)

    again = Peer([*PY_PEER, "--seed", FIXED_SEED], "py1-again")
    res.check("--seed gives a deterministic peer id", again.peer_id == first_id, first_id)
    again.quit()

    print(f"{res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())

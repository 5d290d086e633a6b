"""js<->js self-test of peer.mjs: starts two peers and drives every command from one to the other.

Dev tool, not a pytest module: ``.venv/bin/python tests/interop/js/selftest.py [--quick]``.
Prints each reply (sample lists shortened) and exits non-zero on the first failed check.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "peer.mjs"
READY_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 300.0
MIB = 1024 * 1024


class JsPeer:
    """One peer.mjs process; replies are routed to callers by command id."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            ["node", str(PEER_SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr if os.environ.get("PEER_STDERR") else subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        self._ready: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read_loop, daemon=True).start()
        ready = self._ready.get(timeout=READY_TIMEOUT_S)
        self.peer_id: str = ready["peerId"]
        self.addrs: list[str] = ready["addrs"]

    def _read_loop(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg.get("event") == "ready":
                self._ready.put(msg)
                continue
            with self._lock:
                box = self._replies.get(msg["id"])
            if box is not None:
                box.put(msg)

    def send(self, cmd: str, **fields: Any) -> queue.Queue[dict[str, Any]]:
        """Send a command without waiting; returns the queue its reply arrives on."""
        with self._lock:
            self._next_id += 1
            cid = self._next_id
            box: queue.Queue[dict[str, Any]] = queue.Queue()
            self._replies[cid] = box
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": cid, "cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        return box

    def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        return self.send(cmd, **fields).get(timeout=REPLY_TIMEOUT_S)

    def quit(self) -> int:
        self.call("quit")
        return self.proc.wait(timeout=10)


def show(name: str, reply: dict[str, Any]) -> None:
    shown = dict(reply)
    if "samples_ms" in shown:
        shown["samples_ms"] = f"<{len(shown['samples_ms'])} samples>"
    print(f"{name}: {json.dumps(shown)}", flush=True)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def main() -> None:
    quick = "--quick" in sys.argv
    seed = "00" * 31 + "01"
    a = JsPeer()
    b = JsPeer("--seed", seed)
    b2 = JsPeer("--seed", seed, "--listen", "/ip4/127.0.0.1/tcp/0")
    try:
        check(b.peer_id == b2.peer_id, "a seed gives a deterministic peer id")
        b2.quit()
        target = b.addrs[0]
        check(target.endswith("/p2p/" + b.peer_id), "ready addrs carry /p2p")

        r = a.call("ping", addr=target)
        show("ping", r)
        check(r["ok"] and r["rtt_ms"] > 0, "ping")

        data = os.urandom(1000)
        r = a.call("echo", addr=target, data_b64=base64.b64encode(data).decode())
        show("echo", {**r, "data_b64": f"<{len(r.get('data_b64', ''))} chars>"})
        check(r["ok"] and base64.b64decode(r["data_b64"]) == data, "echo round trip")
        r = a.call("echo", addr=target, data_b64="")
        check(r["ok"] and r["data_b64"] == "", "empty echo")

        r = a.call("identify", addr=target)
        show("identify", r)
        check(r["ok"] and r["peerId"] == b.peer_id, "identify peer id")
        check("/perf/1.0.0" in r["protocols"] and "/p2p/1.0.0" in r["protocols"], "protocols")
        check(r["agentVersion"] == "aiop2p-interop-js/1", "agent version")

        for _ in range(100):
            r = b.call("peer_info", peerId=a.peer_id)
            if r["ok"]:
                break
            check(r["error"] == "unknown", "peer_info error is 'unknown'")
            time.sleep(0.05)
        show("peer_info (on b, about a)", r)
        check(r["ok"] and r["agentVersion"] == "aiop2p-interop-js/1", "peer_info")
        r = b.call("peer_info", peerId="12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB")
        check(not r["ok"] and r["error"] == "unknown", "peer_info of a stranger")

        r = a.call("ping", addr="/ip4/127.0.0.1/tcp/1")
        show("ping to a closed port", r)
        check(not r["ok"], "failed command reports ok:false")
        r = a.call("rss")
        check(r["ok"], "the peer survives a failed command")

        size = 8 * MIB if quick else 256 * MIB
        for up, down in ((size, 0), (0, size), (MIB, MIB)):
            r = a.call("perf", addr=target, upload=up, download=down)
            secs = r.get("upload_seconds") if up else r.get("download_seconds")
            rate = (up or down) / MIB / secs if secs else 0.0
            show(f"perf up={up} down={down} ({rate:.0f} MiB/s)", r)
            check(r["ok"], "perf")

        r = a.call("bench_dial", addr=target, count=50)
        show("bench_dial", r)
        check(r["ok"] and len(r["samples_ms"]) == 50, "bench_dial")

        for conc in (1, 32):
            r = a.call("bench_echo", addr=target, count=1000, concurrency=conc, size=64)
            show(f"bench_echo concurrency={conc}", r)
            check(r["ok"], "bench_echo")

        # concurrent commands are answered in completion order
        boxes = [a.send("echo", addr=target, data_b64="aGk=") for _ in range(20)]
        check(all(box.get(timeout=30)["ok"] for box in boxes), "concurrent echo commands")

        count = 100 if quick else 1000
        before = b.call("connections")
        r = a.call("bench_conns", addr=target, count=count)
        show("bench_conns", r)
        check(r["ok"] and r["opened"] == count, "bench_conns opened all")
        after = b.call("connections")
        show("target connections before/after", {"before": before, "after": after})
        check(after["connections"] - before["connections"] >= count, "distinct connections")
        show("target rss", b.call("rss", gc=True))
        r = a.call("close_all")
        show("close_all", r)
        check(r["ok"] and r["closed"] == count, "close_all")

        check(a.quit() == 0, "a exits 0 on quit")
        assert b.proc.stdin is not None
        b.proc.stdin.close()  # EOF also exits
        check(b.proc.wait(timeout=10) == 0, "b exits 0 on EOF")
        print("selftest OK")
    finally:
        for peer in (a, b, b2):
            if peer.proc.poll() is None:
                peer.proc.kill()


if __name__ == "__main__":
    main()

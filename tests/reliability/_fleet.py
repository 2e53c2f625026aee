"""Test side of ``writer_process.py``: spawn writer processes, read their events, kill them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("writer_process.py")
REPO = Path(__file__).resolve().parents[2]

Event = dict[str, Any]


class WriterFleet:
    """One zygote process that forks writer processes on request.

    Every event a writer prints is kept, in order, under its pid.
    """

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.setdefault("PYTHONWARNINGS", "ignore")
        self._proc = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self._cond = threading.Condition()
        self.events: dict[int, list[Event]] = defaultdict(list)
        self.exits: dict[int, int] = {}
        self._spawned: list[int] = []
        self._stderr: list[str] = []
        self._ready = False
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.wait(lambda: self._ready, 60, "the writer zygote to start")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # a line cut by SIGKILL
            with self._cond:
                ev = event.get("ev")
                if ev == "ready":
                    self._ready = True
                elif ev == "spawned":
                    self._spawned.append(int(event["child"]))
                elif ev == "exit":
                    self.exits[int(event["child"])] = int(event["status"])
                else:
                    self.events[int(event["pid"])].append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode(errors="replace"))
            del self._stderr[:-200]

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or self._proc.poll() is not None:
                    tail = "".join(self._stderr[-20:])
                    raise TimeoutError(f"timed out waiting for {what}; zygote stderr:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def spawn(self, job: dict[str, Any]) -> int:
        """Start a writer on ``job``; returns its pid."""
        with self._cond:
            before = len(self._spawned)
        assert self._proc.stdin is not None
        self._proc.stdin.write((json.dumps({"cmd": "spawn", "job": job}) + "\n").encode())
        self._proc.stdin.flush()
        self.wait(lambda: len(self._spawned) > before, 30, "a writer to be spawned")
        with self._cond:
            return self._spawned[before]

    def snapshot(self, pid: int) -> list[Event]:
        with self._cond:
            return list(self.events[pid])

    def wait_event(self, pid: int, ev: str, timeout: float, *, after: int = 0) -> Event:
        """The first event ``ev`` of ``pid`` at index ``after`` or later."""
        found: list[Event] = []

        def seen() -> bool:
            found[:] = [e for e in self.events[pid][after:] if e["ev"] in (ev, "error")]
            return bool(found) or pid in self.exits

        self.wait(seen, timeout, f"event {ev!r} of writer {pid}")
        if not found:
            raise AssertionError(f"writer {pid} exited ({self.exits[pid]}) before {ev!r}")
        if found[0]["ev"] == "error" and ev != "error":
            raise AssertionError(f"writer {pid} failed: {found[0]['error']}\n{found[0].get('tb')}")
        return found[0]

    def wait_count(self, pid: int, ev: str, n: int, timeout: float) -> bool:
        """Wait until ``pid`` reported ``n`` events ``ev``; False if it exited or timed out first."""

        def enough() -> bool:
            return pid in self.exits or sum(1 for e in self.events[pid] if e["ev"] == ev) >= n

        try:
            self.wait(enough, timeout, f"{n} events {ev!r} of writer {pid}")
        except TimeoutError:
            return False
        return pid not in self.exits

    def kill(self, pid: int) -> None:
        """SIGKILL a writer and wait until the zygote has reaped it."""
        os.kill(pid, signal.SIGKILL)
        self.wait(lambda: pid in self.exits, 30, f"writer {pid} to exit")

    def wait_exit(self, pid: int, timeout: float) -> int:
        self.wait(lambda: pid in self.exits, timeout, f"writer {pid} to finish")
        return self.exits[pid]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)  # the zygote and its writers
            except ProcessLookupError:
                pass
        self._proc.wait(10)
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> WriterFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

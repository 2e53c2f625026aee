"""Writer processes for the crash and concurrency scenarios.

Run as a script, this process imports LangGraph and haive-langgraph once, then
forks one writer per ``spawn`` command read from stdin (a JSON line), so a
scenario can start and SIGKILL dozens of real writer processes without paying
the ~1.8 s import each time. Nothing touches the database before the fork:
every writer opens its own pool.

A writer drives the demo chat graph (``haive_langgraph._demo``) on the
threads its job names and reports, one JSON line per event on stdout (each
line written with a single ``write``, so lines of concurrent writers never
interleave):

* ``up``: the writer is connected;
* ``begin``: a checkpoint ``put`` is about to be sent;
* ``put``: a ``put`` returned, so the checkpoint is committed; with the
  digest of the messages it holds;
* ``writes``: a ``put_writes`` returned (task id and channels);
* ``resumed``: an interrupted superstep was resumed;
* ``turn``: a conversation turn completed;
* ``done`` / ``error``: the job finished, or failed.

The zygote itself reports ``spawned <pid>`` and ``exit <pid> <status>``.

Job (JSON)::

    {"dsn": ..., "mode": "sync" | "async", "durability": "sync" | "async",
     "lanes": [["thread-id", "label", turns-or-null], ...],
     "resume": true, "big_every": 5, "app": "application_name"}
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig

from haive_langgraph._demo import chat_graph
from haive_langgraph.checkpointers import AsyncPostgresCheckpointer, PostgresCheckpointer
from haive_langgraph.db import PersistenceConfig

BIG_BYTES = 48 * 1024


def emit(**event: Any) -> None:
    event.setdefault("pid", os.getpid())
    os.write(1, (json.dumps(event, separators=(",", ":")) + "\n").encode())


def digest(messages: Sequence[Any]) -> str:
    """What a checkpoint's ``messages`` hold: (type, id, content) of each, hashed."""
    parts = [
        [
            getattr(m, "type", type(m).__name__),
            getattr(m, "id", None),
            str(getattr(m, "content", m)),
        ]
        for m in messages
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def human_text(label: str, turn: int, big_every: int) -> str:
    """The deterministic text of turn ``turn``; every ``big_every``-th one is ~48 KB."""
    text = f"{label} turn {turn}"
    if big_every and turn % big_every == big_every - 1:
        seed = hashlib.sha256(text.encode()).hexdigest()
        text += " " + (seed * (BIG_BYTES // len(seed) + 1))[:BIG_BYTES]
    return text


Sink = Callable[..., None]


class _Reporter:
    """What the reporting savers share: where events go, and whether calls are timed.

    ``sink`` receives each event as keyword arguments (default: a JSON line on
    stdout). With ``timed``, every call is reported too, with the exception it
    raised: set it only with an in-process sink.
    """

    sink: Sink = staticmethod(emit)
    timed: bool = False

    def _call(self, method: str, t0: float, error: BaseException | None) -> None:
        if self.timed:
            self.sink(
                ev="call",
                method=method,
                t0=t0,
                dt=time.monotonic() - t0,
                error=None if error is None else f"{type(error).__module__}.{type(error).__name__}",
                message=None if error is None else str(error)[:300],
                exc=error,  # timed savers report to an in-process sink only
            )

    def _begin(self, config: RunnableConfig, checkpoint: Any) -> None:
        self.sink(ev="begin", thread=config["configurable"]["thread_id"], id=checkpoint["id"])

    def _put(self, config: RunnableConfig, checkpoint: Any, saved: RunnableConfig) -> None:
        conf = saved["configurable"]
        self.sink(
            ev="put",
            thread=conf["thread_id"],
            ns=conf.get("checkpoint_ns", ""),
            id=conf["checkpoint_id"],
            parent=config["configurable"].get("checkpoint_id"),
            digest=digest(checkpoint["channel_values"].get("messages", [])),
        )

    def _writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task: str) -> None:
        conf = config["configurable"]
        self.sink(
            ev="writes",
            thread=conf["thread_id"],
            ns=conf.get("checkpoint_ns", ""),
            id=conf["checkpoint_id"],
            task=task,
            channels=[w[0] for w in writes],
        )


class ReportingCheckpointer(_Reporter, PostgresCheckpointer):
    """Reports what it committed (a put that returned is committed: autocommit)."""

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        self._begin(config, checkpoint)
        t0, error = time.monotonic(), None
        try:
            saved = super().put(config, checkpoint, metadata, new_versions)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call("put", t0, error)
        self._put(config, checkpoint, saved)
        return saved

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        t0, error = time.monotonic(), None
        try:
            super().put_writes(config, writes, task_id, task_path)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call("put_writes", t0, error)
        if writes:
            self._writes(config, writes, task_id)

    def get_tuple(self, config: Any) -> Any:
        t0, error = time.monotonic(), None
        try:
            return super().get_tuple(config)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call("get_tuple", t0, error)

    def list(self, config: Any, **kwargs: Any) -> Iterator[Any]:
        t0, error = time.monotonic(), None
        try:
            tuples = builtins.list(super().list(config, **kwargs))
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call("list", t0, error)
        return iter(tuples)


class AsyncReportingCheckpointer(_Reporter, AsyncPostgresCheckpointer):
    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        self._begin(config, checkpoint)
        t0, error = time.monotonic(), None
        try:
            saved = await super().aput(config, checkpoint, metadata, new_versions)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call("put", t0, error)
        self._put(config, checkpoint, saved)
        return saved

    async def aput_writes(
        self, config: Any, writes: Any, task_id: str, task_path: str = ""
    ) -> None:
        t0, error = time.monotonic(), None
        try:
            await super().aput_writes(config, writes, task_id, task_path)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call("put_writes", t0, error)
        if writes:
            self._writes(config, writes, task_id)

    async def aget_tuple(self, config: Any) -> Any:
        t0, error = time.monotonic(), None
        try:
            return await super().aget_tuple(config)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call("get_tuple", t0, error)

    async def alist(self, config: Any, **kwargs: Any) -> AsyncIterator[Any]:
        t0, error = time.monotonic(), None
        try:
            tuples = [t async for t in super().alist(config, **kwargs)]
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._call("list", t0, error)
        for t in tuples:
            yield t


def _human_turns(messages: Sequence[BaseMessage]) -> int:
    return sum(1 for m in messages if m.type == "human")


def run_sync(job: dict[str, Any]) -> None:
    config = PersistenceConfig(
        application_name=job["app"], pool_min_size=1, pool_max_size=len(job["lanes"]) + 1
    )
    saver = ReportingCheckpointer(job["dsn"], config=config)
    graph = chat_graph().compile(checkpointer=saver)
    emit(ev="up")
    failures: list[BaseException] = []

    def lane(thread_id: str, label: str, turns: int | None) -> None:
        try:
            cfg: RunnableConfig = {"configurable": {"thread_id": thread_id}}
            done = 0
            while turns is None or done < turns:
                state = graph.get_state(cfg)
                if job["resume"] and (state.next or state.tasks):
                    graph.invoke(None, cfg, durability=job["durability"])
                    emit(ev="resumed", thread=thread_id)
                    continue
                k = _human_turns(state.values.get("messages", [])) if job["resume"] else done
                text = human_text(label, k, job["big_every"])
                out = graph.invoke(
                    {"messages": [HumanMessage(content=text)]}, cfg, durability=job["durability"]
                )
                done += 1
                emit(ev="turn", thread=thread_id, n=len(out["messages"]))
        except BaseException as exc:  # reported to the parent, which fails the scenario
            failures.append(exc)
            emit(ev="error", thread=thread_id, error=repr(exc), tb=traceback.format_exc()[-1500:])

    workers = [threading.Thread(target=lane, args=tuple(spec)) for spec in job["lanes"]]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    saver.close()
    emit(ev="done", failures=len(failures))


async def run_async(job: dict[str, Any]) -> None:
    config = PersistenceConfig(
        application_name=job["app"], pool_min_size=1, pool_max_size=len(job["lanes"]) + 1
    )
    saver = AsyncReportingCheckpointer(job["dsn"], config=config)
    graph = chat_graph().compile(checkpointer=saver)
    emit(ev="up")
    failures = 0

    async def lane(thread_id: str, label: str, turns: int | None) -> None:
        nonlocal failures
        try:
            cfg: RunnableConfig = {"configurable": {"thread_id": thread_id}}
            done = 0
            while turns is None or done < turns:
                state = await graph.aget_state(cfg)
                if job["resume"] and (state.next or state.tasks):
                    await graph.ainvoke(None, cfg, durability=job["durability"])
                    emit(ev="resumed", thread=thread_id)
                    continue
                k = _human_turns(state.values.get("messages", [])) if job["resume"] else done
                text = human_text(label, k, job["big_every"])
                out = await graph.ainvoke(
                    {"messages": [HumanMessage(content=text)]}, cfg, durability=job["durability"]
                )
                done += 1
                emit(ev="turn", thread=thread_id, n=len(out["messages"]))
        except BaseException as exc:
            failures += 1
            emit(ev="error", thread=thread_id, error=repr(exc), tb=traceback.format_exc()[-1500:])

    await asyncio.gather(*(lane(*spec) for spec in job["lanes"]))
    await saver.aclose()
    emit(ev="done", failures=failures)


def child(job: dict[str, Any]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.close(0)
    try:
        if job["mode"] == "async":
            asyncio.run(run_async(job))
        else:
            run_sync(job)
        code = 0
    except BaseException:
        emit(ev="error", error="writer crashed", tb=traceback.format_exc()[-1500:])
        code = 1
    os._exit(code)


def zygote() -> None:
    """Fork a writer per ``spawn`` line on stdin; report spawns and exits."""
    emit(ev="ready")
    children: set[int] = set()
    buffer = b""
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.02)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            emit(ev="exit", child=pid, status=os.waitstatus_to_exitcode(status))
        if not ready:
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:
            return  # the parent went away
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            command = json.loads(line)
            if command["cmd"] == "quit":
                return
            pid = os.fork()
            if pid == 0:
                child(command["job"])
            children.add(pid)
            emit(ev="spawned", child=pid)


if __name__ == "__main__":
    zygote()

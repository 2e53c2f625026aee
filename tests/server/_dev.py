"""A ``langgraph dev`` server in a subprocess, for the server tests.

The app (a graph, ``langgraph.json``, optionally an auth handler) is written
into a directory; the server runs on 127.0.0.1 on a free port, without a
browser and without the file watcher, with the environment given.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

# What the test graph does: append an echo of the last item, optionally
# after a pause (for multitask rollback), and put the item in the store.
GRAPH = """
import asyncio
import operator
from typing import Annotated, TypedDict

from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    items: Annotated[list[str], operator.add]
    sleep: float


async def step(state: State) -> State:
    if state.get("sleep"):
        await asyncio.sleep(state["sleep"])
    last = state["items"][-1] if state.get("items") else "empty"
    await get_store().aput(("seen",), last, {"text": last})
    return {"items": [f"echo:{last}"], "sleep": 0}


builder = StateGraph(State)
builder.add_node("step", step)
builder.add_edge(START, "step")
builder.add_edge("step", END)
graph = builder.compile()
"""

# Bearer tokens "<user>.<org>" authenticate as that user of that org.
AUTH = """
from langgraph_sdk import Auth

auth = Auth()


@auth.authenticate
async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
    if not authorization or not authorization.startswith("Bearer "):
        raise Auth.exceptions.HTTPException(status_code=401, detail="no token")
    user, _, org = authorization.removeprefix("Bearer ").partition(".")
    return {"identity": user, "org_id": org}
"""


def require_server() -> None:
    """Skip the module when the server packages are not installed.

    Looked up, not imported: importing the server's runtime reads its settings
    and sets up its logging, in the test process.
    """
    for module in ("langgraph_api", "langgraph_runtime_inmem", "langgraph_cli", "langgraph_sdk"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(
                f"{module} is not installed: pip install 'langgraph-cli[inmem]' langgraph-sdk "
                "(in the test extra) to run the LangGraph server tests",
                allow_module_level=True,
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_app(
    directory: Path, *, auth: bool = False, graph: str = GRAPH, ours: bool = True
) -> Path:
    """The app directory: graph.py, langgraph.json (with ``ours``, our checkpointer and
    store; else the server's own persistence), auth.py."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "graph.py").write_text(graph)
    config = '{"dependencies": ["."], "graphs": {"echo": "./graph.py:graph"}'
    if ours:
        config += (
            ', "checkpointer": {"path": "haive_langgraph.server.checkpointer"}'
            ', "store": {"path": "haive_langgraph.server.store"}'
        )
    if auth:
        (directory / "auth.py").write_text(AUTH)
        config += ', "auth": {"path": "./auth.py:auth"}'
    (directory / "langgraph.json").write_text(config + "}\n")
    return directory


class DevServer:
    """``langgraph dev`` on 127.0.0.1; :meth:`start` again after :meth:`stop` restarts it."""

    def __init__(self, app: Path, env: dict[str, str], args: Sequence[str] = ()) -> None:
        self.app = app
        self.env = env
        self.args = tuple(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = app / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        command = [
            str(Path(sys.executable).parent / "langgraph"),
            "dev",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-browser",
            "--no-reload",
            *self.args,
        ]
        env = {
            **os.environ,
            "LANGGRAPH_NO_VERSION_CHECK": "true",
            "LANGSMITH_TRACING": "false",
            "LANGCHAIN_TRACING_V2": "false",
            **self.env,
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.app,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"langgraph dev exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ok", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"langgraph dev did not answer in {timeout} s:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down as Ctrl-C does (the server closes our pools and saves its own state)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

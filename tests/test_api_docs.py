"""docs/api.md lists every public name with its docstring: a name exported
without one, or a page that no longer matches the code, fails the suite
(regenerate it with ``python tools/api_docs.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_page_is_current_and_every_public_name_is_documented() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "api_docs.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

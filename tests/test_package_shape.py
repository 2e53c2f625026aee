"""The package keeps its shape: no runtime import cycle and no hand-written
file over 600 lines (``tools/check_shape.py``; a module-level or
function-level import that closes a cycle fails, as does a file that grows
past the limit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycle_and_no_file_over_the_limit() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_shape.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")

"""Golden files: compare text with a file under a golden/ folder; on a mismatch print a diff
and how to update. `HARVEST_UPDATE_GOLDEN=1 pytest ...` rewrites them."""

from __future__ import annotations

import difflib
import os
from pathlib import Path


def check_golden(path: Path, actual: str) -> None:
    if os.environ.get("HARVEST_UPDATE_GOLDEN") == "1" or not path.exists():
        if not path.exists() and os.environ.get("HARVEST_UPDATE_GOLDEN") != "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual)
            raise AssertionError(f"golden file {path} did not exist; written now: review it and re-run")
        path.write_text(actual)
        return
    expected = path.read_text()
    if expected != actual:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            fromfile=str(path), tofile="actual"))
        raise AssertionError(
            f"output differs from {path}:\n{diff}\n"
            "If the change is intended, update with: HARVEST_UPDATE_GOLDEN=1 python -m pytest "
            + os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        )

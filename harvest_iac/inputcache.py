"""A cache of what the environment files say (`planner.Inputs`), so that a plan or a
no-change apply whose files did not change skips parsing, validating and rendering.

An entry is used only when every file it was made from (the files named, the files they
extend) has the same bytes, harvest's own code and templates are the same (size and mtime of
each file), and harvest and Python are the same versions. Secret values, dotenv files and
Dockerfiles are read on every run, never cached. The cache holds no secret value. It lives in
`.harvest/cache/` of the folder harvest runs in; `HARVEST_NO_CACHE=1` turns it off, and
deleting the folder is always safe.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harvest_iac import __version__
from harvest_iac.diff import Desired
from harvest_iac.paths import expand_paths, templates_dir

CACHE_FORMAT = 1
CACHE_DIR = Path(".harvest") / "cache"


def enabled(environ: Mapping[str, str]) -> bool:
    return environ.get("HARVEST_NO_CACHE", "") in ("", "0")


@functools.cache
def _code_fingerprint() -> str:
    """harvest's code and templates: any edit (or another install) gives another value."""
    package = Path(__file__).resolve().parent
    entries = [__version__, sys.version, str(package)]
    roots = [(package, "*.py"), (templates_dir(), "*")]
    for root, pattern in roots:
        for path in sorted(root.rglob(pattern)):
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _entry_path(files: list[Path]) -> Path:
    key = hashlib.sha256("\n".join(str(p.resolve()) for p in files).encode()).hexdigest()
    return CACHE_DIR / f"inputs-{key[:32]}.json"


def lookup(paths: Iterable[str], environ: Mapping[str, str]) -> list[Any] | None:
    """The cached inputs of the environments under `paths`, or None (a miss)."""
    if not enabled(environ):
        return None
    from harvest_iac.planner import Inputs

    try:
        files = expand_paths(paths)
        data = json.loads(_entry_path(files).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - any problem (missing, unreadable, bad JSON) is a miss
        return None
    try:
        if data["format"] != CACHE_FORMAT or data["code"] != _code_fingerprint():
            return None
        for name, digest in data["files"].items():
            if _digest(Path(name)) != digest:
                return None
        spelled = {str(p.resolve()): str(p) for p in files}  # as given this time
        return [Inputs(**{**item, "function_tags": tuple(item["function_tags"]),
                          "path": spelled.get(str(Path(item["path"]).resolve()), item["path"]),
                          "desired": {a: Desired(**d) for a, d in item["desired"].items()}})
                for item in data["environments"]]
    except (KeyError, TypeError, ValueError):
        return None


def store(paths: Iterable[str], loaded: list[Any], inputs: list[Any],
          environ: Mapping[str, str]) -> None:
    """Remember the inputs of a successful load (best effort: a failure only costs speed)."""
    if not enabled(environ):
        return
    try:
        files = expand_paths(paths)
        involved = {str(p.resolve()) for p in files}
        for item in loaded:
            involved |= {str(Path(f).resolve()) for f in item.files}
        digests = {name: _digest(Path(name)) for name in sorted(involved)}
        if any(d is None for d in digests.values()):
            return
        data = {
            "format": CACHE_FORMAT,
            "code": _code_fingerprint(),
            "files": digests,
            "environments": [_inputs_to_json(i) for i in inputs],
        }
        target = _entry_path(files)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        return


def _inputs_to_json(inputs: Any) -> dict[str, Any]:
    data = asdict(inputs)
    data["function_tags"] = list(inputs.function_tags)
    data["desired"] = {a: asdict(d) for a, d in inputs.desired.items()}
    return data

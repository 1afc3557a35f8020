"""Random mutations of valid files never produce a traceback: only success or SpecError."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harvest_iac.errors import HarvestError
from harvest_iac.loader import check_paths
from harvest_iac.spec.document import parse

DATA = Path(__file__).parent / "data"
ENVIRONMENTS = Path(__file__).resolve().parents[2] / "environments"
FULL = (DATA / "full.yaml").read_text(encoding="utf-8")
FULL_DATA = parse(FULL, "full.yaml").data
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12),
    st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _check(files: dict[str, bytes], target: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="harvest-fuzz-"))
    try:
        for name, content in files.items():
            (folder / name).write_bytes(content)
        try:
            check_paths([folder / target])
        except HarvestError:
            pass
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _mutate_text(text: bytes, data: st.DataObject) -> bytes:
    lines = text.split(b"\n")
    op = data.draw(st.sampled_from(["delete", "duplicate", "bytes", "truncate", "indent", "dedent", "tab"]))
    at = data.draw(st.integers(0, len(lines) - 1))
    if op == "delete":
        del lines[at]
    elif op == "duplicate":
        lines.insert(at, lines[at])
    elif op == "bytes":
        where = data.draw(st.integers(0, len(text)))
        return text[:where] + data.draw(st.binary(min_size=1, max_size=8)) + text[where:]
    elif op == "truncate":
        return text[: data.draw(st.integers(0, len(text)))]
    elif op == "indent":
        lines[at] = b" " * data.draw(st.integers(1, 4)) + lines[at]
    elif op == "dedent":
        lines[at] = lines[at].lstrip(b" ")
    else:
        lines[at] = b"\t" + lines[at]
    return b"\n".join(lines)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _mutate_data(document: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(document))
    path = data.draw(st.sampled_from(_paths(copy)))
    parent = copy
    for part in path[:-1]:
        parent = parent[part]
    op = data.draw(st.sampled_from(["delete", "retype", "rename", "copy"]))
    if op == "delete":
        del parent[path[-1]]
    elif op == "retype":
        parent[path[-1]] = data.draw(VALUES)
    elif op == "rename" and isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=10))] = parent.pop(path[-1])
    elif isinstance(parent, dict):
        other = data.draw(st.sampled_from(_paths(copy)))
        parent[path[-1]] = json.loads(json.dumps(FULL_DATA if not other else _at(document, other)))
    return copy


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


@SETTINGS
@given(st.data())
def test_text_mutations_of_a_valid_file(data: st.DataObject) -> None:
    text = FULL.encode()
    for _ in range(data.draw(st.integers(1, 3))):
        text = _mutate_text(text, data)
    _check({"env.yaml": text}, "env.yaml")


@SETTINGS
@given(st.data())
def test_structure_mutations_of_a_valid_file(data: st.DataObject) -> None:
    document = FULL_DATA
    for _ in range(data.draw(st.integers(1, 3))):
        document = _mutate_data(document, data)
    _check({"env.yaml": json.dumps(document, indent=1).encode()}, "env.yaml")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mutations_of_an_extended_base_file(data: st.DataObject) -> None:
    base = _mutate_text((ENVIRONMENTS / "base.yaml").read_bytes(), data)
    _check({"base.yaml": base, "dev.yaml": (ENVIRONMENTS / "dev.yaml").read_bytes()}, "dev.yaml")

"""Table-driven: each user mistake gives exactly these `file:line:col: message` lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvest_iac.errors import SpecError
from harvest_iac.loader import check_paths
from tests.spec.cases import CASES


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_is_reported_at_its_position(
    files: dict[str, str | bytes], expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    targets = list(files) if all(n.startswith("env") for n in files) else [next(iter(files))]
    with pytest.raises(SpecError) as caught:
        check_paths(targets)
    assert [str(p).replace(str(tmp_path.resolve()), "<dir>") for p in caught.value.problems] == expected


def test_the_table_covers_enough_distinct_mistakes() -> None:
    assert len({case[0] for case in CASES}) == len(CASES) >= 30


def test_all_problems_of_a_file_are_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shape problems in several entries and a dangling reference elsewhere, all in one error."""
    (tmp_path / "env.yaml").write_text(
        "harvest: 1\nenvironment: dev\napp: agents\n"
        "volumes:\n  data: {version: 3}\n"
        "images:\n  base: {from: debian_slim, pipp: []}\n"
        "sandboxes:\n  s: {image: base, secrets: [nope], cpu: 0}\n"
        "crons:\n  c: {every: 1h, task: reload-volumes, volumes: {/mnt: data}, secrets: [nope]}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        check_paths(["env.yaml"])
    assert [str(p) for p in caught.value.problems] == [
        "env.yaml:5:19: volumes.data.version: expected 1 or 2, got 3",
        "env.yaml:7:29: images.base: unknown key `pipp`; did you mean `pip`?",
        "env.yaml:9:42: sandboxes.s.cpu: cpu 0 is outside Modal's range of 0.125 to 64 cores",
        "env.yaml:11:73: crons.c.secrets[0]: secret 'nope' is not declared; declare it under `secrets:`",
    ]

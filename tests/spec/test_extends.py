"""`extends:`: maps merge key by key, lists replace, null removes, relative paths follow their file."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvest_iac.errors import HarvestError, SpecError
from harvest_iac.loader import check_paths, load_file, load_paths

BASE = """harvest: 1
app: agents
images:
  base:
    from: debian_slim
    apt: [git, curl]
    env: {A: "1", B: "2"}
secrets:
  reg:
    from_dotenv: secrets/.env
sandboxes:
  s:
    image: base
    idle_timeout: 5m
"""


def _env(folder: Path, body: str, name: str = "dev.yaml") -> Path:
    (folder / "shared").mkdir(exist_ok=True)
    (folder / "shared" / "base.yaml").write_text(BASE, encoding="utf-8")
    path = folder / name
    path.write_text("harvest: 1\nenvironment: dev\nextends: shared/base.yaml\n" + body, encoding="utf-8")
    return path


def test_maps_merge_lists_replace_and_null_removes(tmp_path: Path) -> None:
    path = _env(tmp_path, "images:\n  base:\n    apt: [jq]\n    env: {B: \"3\", C: \"4\"}\n"
                          "sandboxes:\n  s:\n    idle_timeout: null\n")
    spec = load_file(path).spec
    assert spec.images["base"].apt == ["jq"]
    assert spec.images["base"].env == {"A": "1", "B": "3", "C": "4"}
    assert spec.sandboxes["s"].idle_timeout is None
    assert spec.app == "agents"


def test_relative_paths_are_relative_to_the_file_that_declares_them(tmp_path: Path) -> None:
    spec = load_file(_env(tmp_path, "")).spec
    assert spec.secrets["reg"].from_dotenv == str((tmp_path / "shared" / "secrets" / ".env").resolve())


def test_an_entry_with_nothing_under_it_takes_every_default(tmp_path: Path) -> None:
    spec = load_file(_env(tmp_path, "volumes:\n  data:\nsnapshots:\n")).spec
    assert spec.volumes["data"].version == 2 and spec.volumes["data"].protect
    assert spec.snapshots == {}


def test_problems_in_merged_values_point_at_the_file_that_wrote_them(tmp_path: Path) -> None:
    path = _env(tmp_path, "images:\n  base:\n    from: registry\n")
    with pytest.raises(SpecError) as caught:
        load_file(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:6:11: images.base.from: a registry image needs `ref:`, e.g. ref: python:3.11-slim"
    ]


def test_a_base_file_checked_alone_is_checked_for_shape_only(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "harvest: 1\nsandboxes:\n  s: {image: declared-elsewhere, cpu: 1}\n", encoding="utf-8")
    [report] = check_paths([tmp_path / "base.yaml"])
    assert report.environment is None and report.summary() == "base file (no `environment:`)"
    (tmp_path / "base.yaml").write_text("harvest: 1\nsandboxes:\n  s: {image: x, cpu: many}\n", encoding="utf-8")
    with pytest.raises(SpecError, match="sandboxes.s.cpu: cpu must be a number, got a string"):
        check_paths([tmp_path / "base.yaml"])


def test_every_file_of_a_folder_is_checked_and_all_problems_come_together(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("harvest: 1\nenvironment: a\napp: x\nvolumes: {v: {version: 9}}\n")
    (tmp_path / "b.yml").write_text("harvest: 1\nenvironment: b\napp: x\nvolume: {}\n")
    (tmp_path / "notes.txt").write_text("not yaml")
    with pytest.raises(SpecError) as caught:
        load_paths([tmp_path])
    assert [(Path(p.file).name, p.line) for p in caught.value.problems] == [("a.yaml", 4), ("b.yml", 4)]


def test_paths_that_do_not_exist_or_hold_no_yaml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HarvestError, match="no such file or folder"):
        check_paths([tmp_path / "missing"])
    with pytest.raises(HarvestError, match=r"no \*\.yaml or \*\.yml files"):
        check_paths([tmp_path])


def test_anchors_live_under_x_keys_and_merge_keys_work(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(
        "harvest: 1\nenvironment: dev\napp: a\n"
        "x-shared: &shared {volumes: {/mnt/shared: v}, secrets: [s]}\n"
        "volumes: {v: }\nsecrets: {s: {from_env: [S]}}\nimages: {i: {from: debian_slim}}\n"
        "sandboxes:\n  box:\n    <<: *shared\n    image: i\n"
        "crons:\n  job:\n    <<: *shared\n    secrets: []\n    every: 1h\n    task: reload-volumes\n",
        encoding="utf-8",
    )
    spec = load_file(path).spec
    assert spec.sandboxes["box"].volumes == {"/mnt/shared": "v"} and spec.sandboxes["box"].secrets == ["s"]
    assert spec.crons["job"].volumes == {"/mnt/shared": "v"} and spec.crons["job"].secrets == []

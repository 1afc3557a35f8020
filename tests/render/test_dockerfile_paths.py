"""A Dockerfile image renders the same code wherever the project folder is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harvest_iac.loader import load_file
from harvest_iac.render import render_app

ENV = """\
harvest: 1
environment: dev
app: agents
images:
  custom:
    from: dockerfile
    path: docker/agent.Dockerfile
crons:
  tick:
    every: 1h
    image: custom
    task: reload-volumes
"""


def _project(root: Path) -> Path:
    (root / "environments" / "docker").mkdir(parents=True)
    (root / "environments" / "docker" / "agent.Dockerfile").write_text("FROM python:3.11-slim\n")
    (root / "environments" / "dev.yaml").write_text(ENV)
    return root


def test_dockerfile_path_is_relative_to_the_project(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    one = _project(tmp_path / "checkout-one")
    monkeypatch.chdir(one)
    code_one = render_app(load_file("environments/dev.yaml").spec)
    assert "modal.Image.from_dockerfile('environments/docker/agent.Dockerfile')" in code_one.code
    two = tmp_path / "elsewhere" / "checkout-two"
    shutil.copytree(one, two)
    monkeypatch.chdir(two)
    code_two = render_app(load_file("environments/dev.yaml").spec)
    assert code_two.code == code_one.code and code_two.code_hash == code_one.code_hash


def test_dockerfile_outside_the_project_keeps_its_absolute_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path / "project")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    code = render_app(load_file(project / "environments" / "dev.yaml").spec).code
    dockerfile = project / "environments" / "docker" / "agent.Dockerfile"
    assert f"modal.Image.from_dockerfile({str(dockerfile.resolve())!r})" in code

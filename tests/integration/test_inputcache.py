"""The input cache: a plan whose files did not change skips loading (no pydantic import),
and any change to a file, a base file, the templates or harvest itself is seen."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import REPO
from tests.integration.helpers import GITHUB_VALUE, SECRET_VALUE, harvest, write_env


def imports_pydantic(tmp_path: Path, path: Path, **env: str) -> tuple[bool, str]:
    proc = harvest("plan", str(path), "--target", "modal", cwd=tmp_path,
                   env={"PYTHONPROFILEIMPORTTIME": "1", **env})
    assert proc.returncode == 0, proc.stderr
    return " pydantic" in proc.stderr, proc.stdout


def test_unchanged_files_skip_loading_and_changes_are_seen(tmp_path: Path,
                                                           modal_environment: str) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("harvest: 1\napp: agents\nvolumes:\n  data: {version: 2}\n")
    path = write_env(tmp_path, modal_environment,
                     f"harvest: 1\nenvironment: {modal_environment}\nextends: base.yaml\n"
                     "secrets:\n  openai: {{from_env: [OPENAI_API_KEY]}}\n")
    first, out1 = imports_pydantic(tmp_path, path)
    assert first  # a miss: loaded and validated
    second, out2 = imports_pydantic(tmp_path, path)
    assert not second and out2 == out1  # a hit: same plan, nothing parsed
    for f in (tmp_path / ".harvest" / "cache").iterdir():
        text = f.read_text()
        assert SECRET_VALUE not in text and GITHUB_VALUE not in text
    base.write_text("harvest: 1\napp: agents\nvolumes:\n  data: {version: 2}\n  logs: {}\n")
    third, out3 = imports_pydantic(tmp_path, path)
    assert third and "# volume.logs will be created" in out3
    fourth, _ = imports_pydantic(tmp_path, path, HARVEST_NO_CACHE="1")
    assert fourth


def test_template_changes_are_seen(tmp_path: Path, modal_environment: str) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    path = write_env(tmp_path, modal_environment)
    env = {"HARVEST_TEMPLATES_DIR": str(templates)}
    _, out1 = imports_pydantic(tmp_path, path, **env)
    app = templates / "app.py.j2"
    app.write_text(app.read_text() + "\n# a change of the template\n")
    changed, out2 = imports_pydantic(tmp_path, path, **env)
    assert changed
    code1 = [line for line in out1.splitlines() if "code_hash" in line]
    code2 = [line for line in out2.splitlines() if "code_hash" in line]
    assert code1 and code1 != code2


def test_a_new_file_in_the_folder_is_a_new_entry(tmp_path: Path, modal_environment: str) -> None:
    folder = tmp_path / "environments"
    folder.mkdir()
    write_env(folder, modal_environment, name="a.yaml")
    imports_pydantic(tmp_path, folder)
    assert not imports_pydantic(tmp_path, folder)[0]
    (folder / "b.yaml").write_text("harvest: 1\nenvironment: other-env\napp: x\n")
    loaded, out = imports_pydantic(tmp_path, folder)
    assert loaded and 'environment "other-env"' in out

"""`harvest validate` and `harvest schema` from the outside: output, exit codes, imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harvest_iac.cli import cli
from tests.conftest import REPO


def _run(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_validate_the_examples_prints_one_ok_line_per_file() -> None:
    result = _run("-m", "harvest_iac", "validate", "environments/")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "environments/base.yaml: OK, base file extended by dev.yaml, prod.yaml",
        "environments/dev.yaml: OK, environment dev, app harvest-agents: 2 images, 1 volume, 2 secrets, "
        "1 snapshot, 1 sandbox, 1 cron",
        "environments/prod.yaml: OK, environment prod, app harvest-agents: 2 images, 1 volume, 2 secrets, "
        "1 snapshot, 1 sandbox, 1 cron",
    ]


def test_validate_and_schema_never_import_modal() -> None:
    for verb in (["validate", "environments/"], ["schema"], ["--help"]):
        result = _run("-X", "importtime", "-m", "harvest_iac", *verb)
        assert result.returncode == 0, result.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert "harvest_iac.cli" in imported  # the import log is really there
        assert not {m for m in imported if m == "modal" or m.startswith(("modal.", "grpclib"))}, verb


def test_bad_files_exit_1_with_positions_and_github_annotations(tmp_path: Path) -> None:
    (tmp_path / "env.yaml").write_text("harvest: 1\nenvironment: dev\napp: a\nvolumes:\n  d: {version: 3}\n")
    result = _run("-m", "harvest_iac", "validate", "env.yaml", cwd=tmp_path, env={"GITHUB_ACTIONS": "true"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr == "env.yaml:5:16: volumes.d.version: expected 1 or 2, got 3\n"
    assert result.stdout == "::error file=env.yaml,line=5,col=16::volumes.d.version: expected 1 or 2, got 3\n"


def test_no_annotations_outside_github_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("env.yaml").write_bytes(b"harvest: 1\n\xff")
    result = CliRunner().invoke(cli, ["validate", "env.yaml"], env={"GITHUB_ACTIONS": "false"})
    assert result.exit_code == 1
    assert result.output == "env.yaml:2:1: not valid UTF-8 (byte 0xff); save the file as UTF-8\n"


def test_validate_without_arguments_reads_environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 1
    assert result.output == "Error: environments: no such file or folder\n"


def test_schema_is_json_schema_that_describes_the_format(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["required"] == ["harvest"]
    assert set(schema["properties"]) == {"harvest", "environment", "app", "extends", "settings", "images",
                                         "volumes", "secrets", "snapshots", "sandboxes", "crons", "moved",
                                         "removed"}
    assert set(schema["$defs"]["Settings"]["properties"]) == {
        "web_suffix", "max_concurrent_tasks", "max_concurrent_gpus", "budget", "image_builder_version",
        "block_unauthenticated_resources"}
    assert schema["$defs"]["Volume"]["additionalProperties"] is False
    assert set(schema["$defs"]["Image"]["properties"]) >= {"from", "python", "apt", "pip", "run", "env",
                                                          "workdir", "force_build", "ref", "registry_secret"}
    assert "anyOf" in json.dumps(schema["$defs"]["Cron"]["properties"]["retries"])
    assert set(schema["$defs"]["Sandbox"]["properties"]) >= {
        "gpu", "region", "cloud", "outbound_domain_allowlist", "outbound_cidr_allowlist",
        "inbound_cidr_allowlist", "encrypted_ports", "workdir", "env", "include_oidc_identity_token", "tags",
        "expected"}
    assert set(schema["$defs"]["Cron"]["properties"]) >= {"cpu", "memory", "gpu", "region", "max_containers"}
    assert set(schema["$defs"]["Image"]["properties"]) >= {"files", "python_source"}
    assert set(schema["$defs"]["ExpectedUsage"]["properties"]) == {"runs_per_day", "duration"}
    assert "none" in json.dumps(schema["$defs"]["Snapshot"]["properties"]["ttl"])
    assert schema["$defs"]["Moved"]["required"] == ["from", "to"]
    assert schema["$defs"]["Removed"]["required"] == ["address", "destroy"]
    assert schema["$defs"]["Removed"]["properties"]["destroy"]["type"] == "boolean"
    out = tmp_path / "schema" / "harvest.json"
    result = runner.invoke(cli, ["schema", "-o", str(out)])
    assert result.exit_code == 0 and json.loads(out.read_text()) == schema


def test_bidi_characters_in_a_file_name_and_a_key_are_escaped(tmp_path: Path) -> None:
    """A right-to-left override (U+202E) in the file name and in a volume name: every part of
    the message shows it escaped, so the terminal cannot reorder what the user reads."""
    name = "env\u202elmay.yaml"
    (tmp_path / name).write_text("harvest: 1\nenvironment: dev\napp: a\nvolumes:\n  \"a\u202eb\": {}\n",
                                 encoding="utf-8")
    result = _run("-m", "harvest_iac", "validate", name, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "\u202e" not in result.stderr + result.stdout
    assert result.stderr.startswith("env\\u202elmay.yaml:5:3: volumes.a\\u202eb: volume name 'a\\u202eb'")


def test_a_reserved_name_fails_validation_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "env.yaml").write_text("harvest: 1\nenvironment: dev\napp: a\nvolumes:\n  harvest-state: {}\n")
    result = _run("-m", "harvest_iac", "validate", "env.yaml", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == ("env.yaml:5:3: volumes.harvest-state: volume name 'harvest-state' is reserved by "
                             "harvest (it keeps its state record and lock under this name); choose another name\n")

"""Secret hashes in the state record, end to end through the `harvest` CLI and the local Modal:
what an attacker who reads the `harvest-state` volume gets, the format 1 record, and the key."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import modal

from harvest_iac.state import STATE_VOLUME, state_path
from tests.core.test_secrethash import KEY, hmac_attack
from tests.integration.helpers import SECRETS_ENV, SMALL, harvest, write_env, write_state_file

WEAK = {"OPENAI_API_KEY": "password3"}


def _record(env: str) -> str:
    vol = modal.Volume.from_name(STATE_VOLUME, environment_name=env)
    return b"".join(vol.read_file(state_path("agents"))).decode()


def _apply(path: Path, **env: str) -> None:
    proc = harvest("apply", str(path), "--target", "modal", "--auto-approve", cwd=path.parent,
                   env=env)
    assert proc.returncode == 0, proc.stderr


def _plan(path: Path, **env: str) -> Any:
    return harvest("plan", str(path), "--target", "modal", "--detailed-exitcode", cwd=path.parent,
                   env=env)


def test_the_record_of_a_weak_value_resists_the_word_list(tmp_path: Path,
                                                          modal_environment: str) -> None:
    path = write_env(tmp_path, modal_environment)
    _apply(path, **WEAK)
    text = _record(modal_environment)
    assert hmac_attack(text) is None and "password3" not in text
    assert "salt" not in json.loads(text)
    stored = json.loads(text)["resources"]["secret.openai"]["values_hash"]
    assert stored["method"] == "scrypt" and stored["n"] >= 2**14 and stored["r"] >= 8
    assert _plan(path, **WEAK).returncode == 0


def test_with_harvest_state_key_the_record_cannot_be_checked_without_it(
        tmp_path: Path, modal_environment: str) -> None:
    path = write_env(tmp_path, modal_environment)
    _apply(path, HARVEST_STATE_KEY=KEY, **WEAK)
    text = _record(modal_environment)
    assert KEY not in text and hmac_attack(text) is None
    assert json.loads(text)["resources"]["secret.openai"]["values_hash"]["method"] == "hmac-sha256-key"
    assert _plan(path, HARVEST_STATE_KEY=KEY, **WEAK).returncode == 0
    # without the key (a laptop): the values cannot be compared, so they are planned as put
    # again, with a warning; no crash, and never "equal"
    without = _plan(path, **WEAK)
    assert without.returncode == 2, without.stderr
    assert ("Warning: secret.openai: cannot compare values: its hash was made with "
            "HARVEST_STATE_KEY, which is not set;") in without.stdout
    assert "# secret.openai will be updated in place" in without.stdout
    other = _plan(path, HARVEST_STATE_KEY="another-key-0123456789", **WEAK)
    assert other.returncode == 2 and "made with another HARVEST_STATE_KEY" in other.stdout


def test_a_short_harvest_state_key_is_refused(tmp_path: Path, modal_environment: str) -> None:
    path = write_env(tmp_path, modal_environment)
    proc = _plan(path, HARVEST_STATE_KEY="hunter2")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr == ("Error: HARVEST_STATE_KEY is 7 characters long; use a random string of at "
                           "least 16 (e.g. `openssl rand -hex 32`) kept in your CI secrets\n")


def _as_format_1(text: str, values: dict[str, dict[str, str]]) -> str:
    """The record as format 1 (harvest before format 2) wrote it: one salt for the record and
    `hmac-sha256:` + HMAC-SHA256 of each secret's values keyed with the salt's text."""
    data = json.loads(text)
    salt = "3c5e0f9a1b7d2e4c6a8f0b1d3e5c7a9f"
    for name, vals in values.items():
        blob = json.dumps(vals, sort_keys=True, separators=(",", ":")).encode()
        data["resources"][f"secret.{name}"]["values_hash"] = (
            "hmac-sha256:" + hmac.new(salt.encode(), blob, hashlib.sha256).hexdigest())
    return json.dumps({**data, "format": 1, "salt": salt}, sort_keys=True, indent=1) + "\n"


def test_a_format_1_record_plans_no_changes_and_the_next_apply_rewrites_it(
        tmp_path: Path, modal_environment: str) -> None:
    env = modal_environment
    path = write_env(tmp_path, env)
    _apply(path)
    old = _as_format_1(_record(env), {
        "openai": {"OPENAI_API_KEY": SECRETS_ENV["OPENAI_API_KEY"]},
        "github": {"GITHUB_TOKEN": SECRETS_ENV["HARVEST_GITHUB_TOKEN"]}})
    write_state_file(env, "agents", old.encode())
    assert hmac_attack(_record(env)) is None  # (the secrets here are not in the word list)
    proc = _plan(path)
    assert proc.returncode == 0 and "No changes." in proc.stdout, proc.stdout
    # an apply that writes the record (a new volume) rewrites every hash the current way
    write_env(tmp_path, env, SMALL.replace("volumes:\n", "volumes:\n  extra:\n    version: 2\n", 1))
    _apply(path)
    text = _record(env)
    data = json.loads(text)
    assert data["format"] == 2 and "salt" not in data and "hmac-sha256:" not in text
    assert {r["values_hash"]["method"] for a, r in data["resources"].items()
            if a.startswith("secret.")} == {"scrypt"}
    proc = _plan(path)
    assert proc.returncode == 0 and "No changes." in proc.stdout, proc.stdout

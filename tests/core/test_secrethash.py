"""Secret value hashes in the state record: an attacker who reads the record cannot test
guesses cheaply; a change of method keeps comparisons working; each hash is computed once."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from harvest_iac.diff import Desired, DiffInput, SecretValues, compare
from harvest_iac.errors import HarvestError
from harvest_iac.live import Live, LiveSecret
from harvest_iac.secrethash import SecretHasher, Verdict, derive_key
from harvest_iac.state import ResourceRecord, StateRecord

WORDS = ["123456", "password", "password1", "password2", "password3", "qwerty", "letmein",
         "admin", "welcome"]  # the attacker's list; the secret's value is in it
WEAK = {"OPENAI_API_KEY": "password3"}
KEY = "k3y-from-ci-secrets-4f1e9a0c7b"


def _blob(values: dict[str, str]) -> bytes:
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def hmac_attack(record_text: str) -> str | None:
    """How `password3` was recovered from format 1: HMAC each guess under every string the
    record holds (its salt among them) and look for the digest."""
    for word in WORDS:
        for key in _strings(json.loads(record_text)):
            digest = hmac.new(key.encode(), _blob({"OPENAI_API_KEY": word}), "sha256").hexdigest()
            if digest in record_text:
                return word
    return None


def _record(hasher: SecretHasher, values: dict[str, str] = WEAK) -> StateRecord:
    return StateRecord.new("dev", "app").with_resource("secret.openai", ResourceRecord(
        object_id="st-1", spec={"keys": sorted(values)}, values_hash=hasher.hash("openai", values)))


def _format_1(values: dict[str, str]) -> str:
    """A record as format 1 wrote it (harvest_iac/state.py before format 2): one salt for the
    record, `hmac-sha256:` + HMAC-SHA256 keyed with the salt's text."""
    salt = "5f0c7e1a9b3d4e2f8a6c1b0d9e7f3a2b"
    digest = hmac.new(salt.encode(), _blob(values), hashlib.sha256).hexdigest()
    return json.dumps({"format": 1, "environment": "dev", "app": "app", "serial": 4,
                       "lineage": "0b9e", "salt": salt, "resources": {"secret.openai": {
                           "object_id": "st-1", "spec": {"keys": sorted(values)},
                           "values_hash": f"hmac-sha256:{digest}"}}})


def test_format_1_record_gives_a_weak_value_away() -> None:
    """The attack, against the old format: found with the 9-word list."""
    assert hmac_attack(_format_1(WEAK)) == "password3"


def test_without_a_key_each_guess_costs_a_memory_hard_scrypt() -> None:
    text = _record(SecretHasher()).to_json()
    data = json.loads(text)
    stored = data["resources"]["secret.openai"]["values_hash"]
    assert "salt" not in data and "password3" not in text
    assert hmac_attack(text) is None
    assert stored["method"] == "scrypt"
    assert stored["n"] >= 2**14 and stored["r"] >= 8 and 128 * stored["n"] * stored["r"] >= 16 * 2**20
    # the costs in the record are the real ones: a guess is checked with exactly this scrypt
    guess = hashlib.scrypt(_blob(WEAK), salt=bytes.fromhex(stored["salt"]), n=stored["n"],
                           r=stored["r"], p=stored["p"], dklen=32)
    assert guess.hex() == stored["digest"]


def test_with_a_key_the_record_holds_nothing_to_test_a_guess_against() -> None:
    keyed = SecretHasher(derive_key(KEY))
    text = _record(keyed).to_json()
    stored = json.loads(text)["resources"]["secret.openai"]["values_hash"]
    assert stored["method"] == "hmac-sha256-key"
    assert KEY not in text and derive_key(KEY).hex() not in text
    assert hmac_attack(text) is None
    for word in WORDS:  # every string of the record as the key, with the record's salt
        for key in _strings(json.loads(text)):
            blob = bytes.fromhex(stored["salt"]) + _blob({"OPENAI_API_KEY": word})
            assert hmac.new(key.encode(), blob, "sha256").hexdigest() != stored["digest"]
    back = StateRecord.from_json(text).resources["secret.openai"].values_hash
    assert back is not None and keyed.check(WEAK, back).verdict is Verdict.SAME
    assert keyed.check({"OPENAI_API_KEY": "other"}, back).verdict is Verdict.CHANGED


def test_a_keyed_hash_without_the_key_or_with_another_cannot_be_verified() -> None:
    back = StateRecord.from_json(_record(SecretHasher(derive_key(KEY))).to_json())
    recorded = back.resources["secret.openai"].values_hash
    assert recorded is not None
    without = SecretHasher().check(WEAK, recorded)
    assert without.verdict is Verdict.UNVERIFIABLE and "HARVEST_STATE_KEY, which is not set" in without.why
    other = SecretHasher(derive_key("another-key-0123456789")).check(WEAK, recorded)
    assert other.verdict is Verdict.UNVERIFIABLE and "another HARVEST_STATE_KEY" in other.why


def _plan_secret(hasher: SecretHasher, state: StateRecord, values: dict[str, str]) -> Any:
    inp = DiffInput(environment="dev", app="app", source="dev.yaml", target="local",
                    desired={"secret.openai": Desired("secret.openai", "secret", "openai",
                                                      {"keys": sorted(values)})},
                    app_digest="sha256:a", secret_values={"openai": SecretValues(values)},
                    now=datetime(2026, 1, 1, tzinfo=timezone.utc), app_needed=False, hasher=hasher)
    live = Live("dev", True, secrets={"openai": LiveSecret("openai", "st-1", tuple(sorted(values)))},
                state=state)
    return compare(inp, live)


def test_a_format_1_record_compares_equal_and_is_rewritten_the_current_way() -> None:
    old = StateRecord.from_json(_format_1(WEAK))
    hasher = SecretHasher()
    assert not _plan_secret(hasher, old, WEAK).actionable  # "No changes"
    changed = _plan_secret(hasher, old, {"OPENAI_API_KEY": "password4"})
    assert [c.reason for c in changed.actionable] == ["values changed"]
    upgraded = old.with_current_hashes({"openai": WEAK}, hasher)
    text = upgraded.to_json()
    assert json.loads(text)["format"] == 2 and '"salt": "5f0c' not in text
    assert hmac_attack(text) is None
    assert json.loads(text)["resources"]["secret.openai"]["values_hash"]["method"] == "scrypt"
    assert not _plan_secret(SecretHasher(), StateRecord.from_json(text), WEAK).actionable


def test_a_keyed_record_planned_without_the_key_is_an_update_with_a_warning() -> None:
    state = StateRecord.from_json(_record(SecretHasher(derive_key(KEY))).to_json())
    plan = _plan_secret(SecretHasher(), state, WEAK)
    (change,) = plan.actionable
    assert change.action.value == "update" and change.reason == (
        "values cannot be compared (its hash was made with HARVEST_STATE_KEY, which is not set)")
    assert plan.warnings == ("secret.openai: cannot compare values: its hash was made with "
                             "HARVEST_STATE_KEY, which is not set; they are planned as changed "
                             "and apply sets them again",)
    assert change.values_hash is not None and change.values_hash.method == "scrypt"


def test_each_secret_is_hashed_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan, the fresh plan apply makes under the lock, and the hash apply records: one
    scrypt per secret (the changed value reuses the recorded salt)."""
    state = StateRecord.new("dev", "app")
    for name in ("a", "b", "c"):
        state = state.with_resource(f"secret.{name}", ResourceRecord(
            object_id=f"st-{name}", spec={"keys": ["K"]},
            values_hash=SecretHasher().hash(name, {"K": "old"})))
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args: Any, **kw: Any) -> bytes:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    hasher = SecretHasher()
    values = {"a": {"K": "old"}, "b": {"K": "new"}, "c": {"K": "old"}}
    inp = DiffInput(environment="dev", app="app", source="dev.yaml", target="local",
                    desired={f"secret.{n}": Desired(f"secret.{n}", "secret", n, {"keys": ["K"]})
                             for n in values},
                    app_digest="sha256:a", secret_values={n: SecretValues(v) for n, v in values.items()},
                    now=datetime(2026, 1, 1, tzinfo=timezone.utc), app_needed=False, hasher=hasher)
    live = Live("dev", True, secrets={n: LiveSecret(n, f"st-{n}", ("K",)) for n in values},
                state=state)
    first, fresh = compare(inp, live), compare(inp, live)
    (change,) = fresh.actionable
    assert change.address == "secret.b" and change.values_hash == first.actionable[0].values_hash
    assert hasher.check({"K": "new"}, change.values_hash).verdict is Verdict.SAME  # type: ignore[arg-type]
    assert len(calls) == 3


@pytest.mark.parametrize("values_hash, fragment", [
    ({"method": "md5", "digest": "00"}, "unknown hash method 'md5'"),
    ({"method": "scrypt", "digest": "00", "salt": "00", "n": 2**30, "r": 8, "p": 1},
     "need too much memory"),
    ({"method": "scrypt", "digest": "00", "salt": "00", "n": 1000, "r": 8, "p": 1}, "not valid"),
    ({"method": "hmac-sha256-key", "digest": "zz", "salt": "00", "key_id": "1"}, "not hex"),
    ("hmac-sha256:00", "expected a mapping"),
])
def test_a_bad_hash_in_the_record_is_corruption(values_hash: object, fragment: str) -> None:
    text = json.dumps({"format": 2, "environment": "dev", "app": "a", "serial": 1, "lineage": "l",
                       "resources": {"secret.s": {"values_hash": values_hash}}})
    with pytest.raises(HarvestError, match="corrupt") as caught:
        StateRecord.from_json(text)
    assert fragment in str(caught.value)

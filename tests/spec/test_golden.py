"""Golden: a file using every field, normalised (units, retries, from_env, relative paths).

If the format changes on purpose, regenerate with
`HARVEST_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/spec/test_golden.py` and review the diff.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

from harvest_iac.loader import load_file

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden" / "full.json"


def _normalised() -> str:
    spec = load_file(DATA / "full.yaml").spec
    text = json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    return text.replace(str(DATA.resolve()), "<data>")


def test_every_field_normalises_as_the_golden_file_says() -> None:
    actual = _normalised()
    if os.environ.get("HARVEST_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(actual, encoding="utf-8")
    expected = GOLDEN.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "golden", "actual"))
    assert actual == expected, f"normalised spec differs from {GOLDEN}:\n{diff}"


def test_units_and_forms_are_normalised() -> None:
    spec = load_file(DATA / "full.yaml").spec
    assert spec.sandboxes["agent"].timeout == 3600 and isinstance(spec.sandboxes["agent"].timeout, int)
    assert spec.sandboxes["agent"].memory == 1024
    assert spec.snapshots["warm"].max_age == 20 * 3600
    assert spec.crons["hourly-job"].every == "1h30m" and spec.crons["hourly-job"].every_seconds == 5400
    assert spec.crons["refresh-environment"].every_seconds is None
    count_form = spec.crons["refresh-environment"].retries
    assert count_form is not None
    assert (count_form.max_retries, count_form.backoff_coefficient, count_form.initial_delay,
            count_form.max_delay) == (3, 1.0, 1, 60)
    assert spec.crons["nightly"].timezone == "UTC"  # the default for a cron string
    assert spec.secrets["openai"].from_env == {"OPENAI_API_KEY": "OPENAI_API_KEY"}
    assert spec.secrets["dockerhub"].from_dotenv == str((DATA / ".env.registry").resolve())
    assert spec.images["built"].path == str((DATA / "docker" / "Dockerfile").resolve())
    assert spec.volumes["defaults"].version == 2 and spec.volumes["defaults"].protect is True


def test_strings_reach_the_spec_byte_for_byte() -> None:
    spec = load_file(DATA / "full.yaml").spec
    assert spec.images["base"].run == ["echo 'quotes \" and \"\"\" stay data'"]
    assert spec.images["base"].env["GREETING"] == "line one\nline two"
    assert spec.crons["hourly-job"].command == ["python", "-m", "jobs.refresh", "--note", "it's \"quoted\""]


def test_images_are_ordered_after_their_parents() -> None:
    spec = load_file(DATA / "full.yaml").spec
    order = spec.image_order()
    assert sorted(order) == sorted(spec.images)
    for name in spec.images:
        parent = spec.images[name].parent
        if parent is not None:
            assert order.index(parent) < order.index(name)


def test_the_spec_is_frozen() -> None:
    spec = load_file(DATA / "full.yaml").spec
    try:
        spec.volumes["agent-state"].protect = False  # type: ignore[misc]
    except Exception as exc:  # pydantic raises ValidationError for frozen instances
        assert "frozen" in str(exc)
    else:
        raise AssertionError("a frozen model accepted an assignment")

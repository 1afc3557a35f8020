"""Plans rendered as text, JSON and Markdown (golden files), and the plan file round trip."""

from __future__ import annotations

import json
from pathlib import Path

from harvest_iac.plan import (
    SENSITIVE,
    Action,
    Change,
    Drift,
    FieldChange,
    Plan,
    order_changes,
    plan_from_dict,
    plan_to_dict,
)
from harvest_iac.present import render_json, render_markdown, render_text
from tests.golden import check_golden

GOLDEN = Path(__file__).parent / "golden"


def sample_plan() -> Plan:
    changes = [
        Change("volume.scratch", "volume", "scratch", Action.DELETE, before={"version": 2},
               blocked="volume.scratch is protected: set `protect: false` in the YAML and apply, "
                       "then delete it with --allow-destroy volume.scratch"),
        Change("cron.refresh", "cron", "refresh", Action.UPDATE,
               before={"schedule": "*/30 * * * *"}, after={"schedule": "*/15 * * * *"},
               fields=(FieldChange("schedule", "*/30 * * * *", "*/15 * * * *"),),
               notes=("next runs: 2026-11-27 22:45 UTC, 2026-11-27 23:00 UTC",)),
        Change("volume.agent-state", "volume", "agent-state", Action.CREATE,
               after={"version": 2, "protect": True}),
        Change("secret.openai", "secret", "openai", Action.UPDATE,
               before={"keys": ["OPENAI_API_KEY"], "values": SENSITIVE},
               after={"keys": ["OPENAI_API_KEY"], "values": SENSITIVE},
               fields=(FieldChange("values", SENSITIVE, SENSITIVE),),
               reason="values changed"),
        Change("volume.old", "volume", "old", Action.REPLACE, before={"version": 1},
               after={"version": 2}, fields=(FieldChange("version", 1, 2),),
               reason="version is fixed at creation"),
        Change("secret.github", "secret", "github", Action.IMPORT,
               after={"keys": ["GITHUB_TOKEN"], "values": SENSITIVE}),
    ]
    return Plan(
        environment="dev", app="harvest-agents", target="local", source="environments/dev.yaml",
        changes=order_changes(changes),
        drift=(Drift("volume.cache", "volume", "cache", "was deleted outside of harvest"),),
        unmanaged=("secret.legacy",),
        warnings=("6 crons exceed the Starter plan's limit of 5",),
        live_fingerprint="sha256:abc", spec_digest="sha256:def",
    )


def test_order_is_dependency_order_with_deletes_last() -> None:
    plan = sample_plan()
    assert [c.address for c in plan.changes] == [
        "volume.agent-state", "volume.old", "secret.github", "secret.openai", "cron.refresh",
        "volume.scratch",
    ]


def test_summary_counts_replace_as_add_and_destroy() -> None:
    s = sample_plan().summary
    assert (s.add, s.change, s.destroy, s.imports) == (2, 2, 2, 1)
    assert s.line() == "Plan: 1 to import, 2 to add, 2 to change, 2 to destroy."


def test_text_golden() -> None:
    check_golden(GOLDEN / "plan.txt", render_text([sample_plan()]))


def test_text_colour_only_on_request() -> None:
    assert "\x1b[" not in render_text([sample_plan()])
    assert "\x1b[" in render_text([sample_plan()], color=True)


def test_markdown_golden() -> None:
    check_golden(GOLDEN / "plan.md", render_markdown([sample_plan()]))


def test_json_golden_and_round_trip() -> None:
    text = render_json([sample_plan()])
    check_golden(GOLDEN / "plan.json", text)
    data = json.loads(text)
    assert data["change_summary"] == {"add": 2, "change": 2, "remove": 2, "import": 1, "forget": 0}
    assert [rc["actions"] for rc in data["resource_changes"]][1] == ["delete", "create"]
    again = plan_from_dict(data)
    assert plan_to_dict(again) == data


def test_no_changes_text() -> None:
    plan = Plan(environment="dev", app="a", target="local", source="dev.yaml", changes=())
    text = render_text([plan])
    assert "No changes." in text and "Plan:" not in text


def test_markdown_code_fence_outlasts_backticks_in_values() -> None:
    change = Change("cron.x", "cron", "x", Action.CREATE, after={"command": "echo ````; done"})
    plan = Plan(environment="dev", app="a", target="local", source="dev.yaml", changes=(change,))
    md = render_markdown([plan])
    assert "\n`````diff\n+ + cron.x\n+     command = \"echo ````; done\"\n`````\n" in md


def _many(env: str, n: int, note: str = "") -> Plan:
    changes = tuple(Change(f"volume.v{i:04d}", "volume", f"v{i:04d}", Action.CREATE,
                           after={"version": 2}, notes=(note,) if note else ())
                    for i in range(n))
    return Plan(environment=env, app="a", target="local", source=f"{env}.yaml", changes=changes)


def test_markdown_limit_is_measured_as_asked() -> None:
    """The step summary's limit is in bytes: multi-byte text is cut by its encoded size."""
    plan = _many("dev", 400, note="prix ≤ 3 € — 数据" * 4)
    limit = 20_000
    by_bytes = render_markdown([plan], limit=limit, size=lambda s: len(s.encode()))
    by_chars = render_markdown([plan], limit=limit)
    assert len(by_bytes.encode()) <= limit < len(by_chars.encode())
    assert len(by_chars) <= limit
    assert "Not shown: `dev`:" in by_bytes


def test_markdown_summary_alone_over_the_limit_is_cut_by_lines() -> None:
    plans = [_many(f"env{i:04d}", 0) for i in range(3000)]
    text = render_markdown(plans, limit=65_536)
    assert 60_000 < len(text) <= 65_536
    assert text.startswith("<!-- harvest-plan: env0000, env0001,")
    assert text.endswith("\n\n(cut: the summary alone is over the size limit)\n")
def test_text_from_files_and_from_modal_is_printed_escaped() -> None:
    """A bidi override in the file name, in who deployed outside harvest (read from Modal), in
    an unmanaged object's name and in a warning never reaches the terminal raw."""
    plan = Plan(environment="dev", app="a", target="local", source="env\u202elmay.yaml",
                changes=(Change("app.a", "app", "a", Action.UPDATE, reason="redeploy\u202e",
                                notes=("by \u2066x",)),),
                drift=(Drift("app.a", "app", "a", "was deployed outside of harvest (by ev\u202eil)"),),
                unmanaged=("secret.x\u202e",), warnings=("dotenv \u202e.env missing",))
    for text in (render_text([plan]), render_text([plan], color=True), render_markdown([plan])):
        assert "\u202e" not in text and "\u2066" not in text
        assert "\\u202e" in text

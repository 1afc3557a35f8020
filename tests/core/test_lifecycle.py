"""The pure side of `moved:` and `removed:`: desired resources, a hand-built live state and the
file's entries in, plan decisions out; and the guards apply runs on them."""

from __future__ import annotations

from harvest_iac.apply import guard_problems
from harvest_iac.diff import Desired, SecretValues, compare
from harvest_iac.live import Live, LiveApp, LiveFunction, LiveSecret, LiveVolume
from harvest_iac.plan import Action, Plan
from harvest_iac.secrethash import SecretHasher
from harvest_iac.state import ResourceRecord, StateRecord
from tests.core.test_diff import cron, inp, vol

HASHER = SecretHasher(b"k" * 32)


def state(**records: ResourceRecord) -> StateRecord:
    out = StateRecord.new("dev", "app")
    for address, rec in records.items():
        out = out.with_resource(address.replace("__", "."), rec)
    return out


def by(plan: Plan) -> dict[str, object]:
    return {c.address: c for c in plan.actionable}


def secret(name: str) -> Desired:
    return Desired(f"secret.{name}", "secret", name, {"keys": ["K"], "from_env": {"K": "K"}})


def test_a_volume_rename_is_an_update_of_its_name_not_a_delete_and_a_create() -> None:
    live = Live("dev", True, volumes={"old": LiveVolume("old", "vo-1", 2)},
                state=state(volume__old=ResourceRecord("vo-1", {"version": 2, "protect": True})))
    plan = compare(inp([vol("new")], moved={"volume.old": "volume.new"}), live)
    changes = by(plan)
    assert list(changes) == ["volume.new"]
    change = changes["volume.new"]
    assert change.action is Action.UPDATE and change.previous_address == "volume.old"  # type: ignore[attr-defined]
    assert [(f.path, f.before, f.after) for f in change.fields] == [("name", "old", "new")]  # type: ignore[attr-defined]
    assert plan.summary.line() == "Plan: 0 to add, 1 to change, 0 to destroy."
    assert plan.unmanaged == ()


def test_a_rename_done_in_modal_but_not_recorded_only_moves_the_record() -> None:
    live = Live("dev", True, volumes={"new": LiveVolume("new", "vo-1", 2)},
                state=state(volume__old=ResourceRecord("vo-1", {"version": 2, "protect": True})))
    change = by(compare(inp([vol("new")], moved={"volume.old": "volume.new"}), live))["volume.new"]
    assert change.action is Action.UPDATE and "already renamed" in (change.reason or "")  # type: ignore[attr-defined]
    assert not plan_drift(live, moved={"volume.old": "volume.new"}, desired=[vol("new")])


def plan_drift(live: Live, **kw: object) -> tuple[object, ...]:
    desired = kw.pop("desired")
    return compare(inp(desired, **kw), live).drift  # type: ignore[arg-type]


def test_a_rename_onto_a_volume_harvest_does_not_manage_is_blocked() -> None:
    live = Live("dev", True, volumes={"old": LiveVolume("old", "vo-1", 2), "new": LiveVolume("new", "vo-2", 2)},
                state=state(volume__old=ResourceRecord("vo-1", {"version": 2, "protect": True})))
    plan = compare(inp([vol("new")], moved={"volume.old": "volume.new"}), live)
    assert list(by(plan)) == ["volume.new"]
    assert "already exists in Modal and harvest does not manage it" in (plan.blocked[0].blocked or "")
    assert guard_problems(plan, frozenset())


def test_a_rename_with_a_version_change_is_blocked() -> None:
    live = Live("dev", True, volumes={"old": LiveVolume("old", "vo-1", 1)},
                state=state(volume__old=ResourceRecord("vo-1", {"version": 1, "protect": False})))
    plan = compare(inp([vol("new", version=2, protect=False)], moved={"volume.old": "volume.new"}), live)
    assert "apply the rename first" in (plan.blocked[0].blocked or "")


def test_a_secret_rename_makes_it_again_then_deletes_only_the_old_name() -> None:
    hashed = HASHER.hash("old", {"K": "v"})
    live = Live("dev", True, secrets={"old": LiveSecret("old", "st-1", ("K",))},
                state=state(secret__old=ResourceRecord("st-1", {"keys": ["K"]}, values_hash=hashed)))
    values = {"new": SecretValues({"K": "v"})}
    plan = compare(inp([secret("new")], moved={"secret.old": "secret.new"}, secret_values=values,
                       hasher=HASHER), live)
    assert list(by(plan)) == ["secret.new"]
    change = by(plan)["secret.new"]
    assert change.action is Action.UPDATE and change.values_hash is not None  # type: ignore[attr-defined]
    assert change.previous_address == "secret.old" and "Modal cannot rename a secret" in change.reason  # type: ignore[attr-defined]
    # killed after the new one was made: the old name is deleted, allowed by the file
    made = live.state.with_resource("secret.new", ResourceRecord("st-2", {"keys": ["K"]}, values_hash=hashed))  # type: ignore[union-attr]
    later = Live("dev", True, secrets={"old": LiveSecret("old", "st-1", ("K",)),
                                       "new": LiveSecret("new", "st-2", ("K",))}, state=made)
    plan = compare(inp([secret("new")], moved={"secret.old": "secret.new"}, secret_values=values,
                       hasher=HASHER), later)
    old = by(plan)["secret.old"]
    assert old.action is Action.DELETE and old.destroy_reviewed  # type: ignore[attr-defined]
    assert guard_problems(plan, frozenset()) == []


def test_an_applied_rename_is_a_no_op() -> None:
    live = Live("dev", True, volumes={"new": LiveVolume("new", "vo-1", 2)},
                state=state(volume__new=ResourceRecord("vo-1", {"version": 2, "protect": True})))
    assert by(compare(inp([vol("new")], moved={"volume.old": "volume.new"}), live)) == {}


def test_a_cron_rename_redeploys_the_app() -> None:
    spec = dict(cron("new").spec)
    fn = LiveFunction("old", "fu-1", "Period(seconds=3600)", None, 300, None, None, "im-x")
    app = LiveApp("app", "ap-1", "deployed", version=1, functions={"old": fn})
    live = Live("dev", True, app=app, state=state(
        cron__old=ResourceRecord(spec=spec),
        app__app=ResourceRecord("ap-1", {"code_hash": "sha256:a"}, version=1, code_hash="sha256:a")))
    plan = compare(inp([cron("new")], moved={"cron.old": "cron.new"}, app_needed=True), live)
    assert {a: c.action.value for a, c in by(plan).items()} == {"cron.new": "update",  # type: ignore[attr-defined]
                                                                "app.app": "update"}
    assert by(plan)["cron.new"].previous_address == "cron.old"  # type: ignore[attr-defined]
    assert not plan.drift


def test_removed_with_destroy_true_needs_no_flag_and_never_deletes_a_protected_volume() -> None:
    live = Live("dev", True, volumes={"tmp": LiveVolume("tmp", "vo-t", 2), "keep": LiveVolume("keep", "vo-k", 2)},
                state=state(volume__tmp=ResourceRecord("vo-t", {"version": 2, "protect": False}),
                            volume__keep=ResourceRecord("vo-k", {"version": 2, "protect": True})))
    plan = compare(inp([], removed={"volume.tmp": True, "volume.keep": True}), live)
    tmp, keep = by(plan)["volume.tmp"], by(plan)["volume.keep"]
    assert tmp.action is Action.DELETE and tmp.destroy_reviewed and not tmp.blocked  # type: ignore[attr-defined]
    assert "`removed:` never deletes a protected volume" in (keep.blocked or "")  # type: ignore[attr-defined]
    assert "declare it again with `protect: false`" in (keep.blocked or "")  # type: ignore[attr-defined]
    problems = guard_problems(plan, frozenset())
    assert len(problems) == 1 and problems[0].startswith("volume.keep is protected")
    without_removed = compare(inp([]), live)
    assert any("--allow-destroy volume.tmp" in p for p in guard_problems(without_removed, frozenset()))


def test_removed_with_destroy_false_forgets_and_keeps() -> None:
    live = Live("dev", True, secrets={"s": LiveSecret("s", "st-1", ("K",))},
                state=state(secret__s=ResourceRecord("st-1", {"keys": ["K"]}),
                            volume__vanished=ResourceRecord("vo-v", {"version": 2, "protect": True})))
    plan = compare(inp([], removed={"secret.s": False, "volume.vanished": True}), live)
    assert {a: c.action for a, c in by(plan).items()} == {  # type: ignore[attr-defined]
        "secret.s": Action.FORGET, "volume.vanished": Action.FORGET}
    assert plan.summary.line() == "Plan: 0 to add, 0 to change, 0 to destroy, 2 to forget."
    assert plan.summary.has_changes and guard_problems(plan, frozenset()) == []


def test_removed_destroy_of_an_object_harvest_does_not_manage_warns_and_leaves_it() -> None:
    live = Live("dev", True, volumes={"hand": LiveVolume("hand", "vo-h", 2)}, state=state())
    plan = compare(inp([], removed={"volume.hand": True}), live)
    assert by(plan) == {}
    assert plan.warnings == ("removed: volume.hand is not managed by harvest, so apply does not delete it "
                             "(delete it in Modal if you mean to)",)


def test_a_deployed_function_harvest_does_not_manage_is_imported_not_created() -> None:
    fn = LiveFunction("tick", "fu-1", "Period(seconds=3600)", None, 300, None, None, "im-x")
    app = LiveApp("app", "ap-1", "deployed", version=3, functions={"tick": fn})
    plan = compare(inp([cron("tick")], app_needed=True), Live("dev", True, app=app))
    assert {a: c.action.value for a, c in by(plan).items()} == {"cron.tick": "import",  # type: ignore[attr-defined]
                                                                "app.app": "import"}


def test_a_renamed_secret_whose_old_name_is_gone_only_drops_the_record() -> None:
    live = Live("dev", True, secrets={"new": LiveSecret("new", "st-2", ("K",))},
                state=state(secret__old=ResourceRecord("st-1", {"keys": ["K"]}),
                            secret__new=ResourceRecord("st-2", {"keys": ["K"]})))
    plan = compare(inp([secret("new")], moved={"secret.old": "secret.new"}), live)
    assert {a: c.action for a, c in by(plan).items()} == {"secret.old": Action.FORGET}  # type: ignore[attr-defined]


def test_forgetting_the_app_forgets_its_functions_and_keeps_it_running() -> None:
    fn = LiveFunction("tick", "fu-1", "Period(seconds=3600)", None, 300, None, None, "im-x")
    app = LiveApp("app", "ap-1", "deployed", version=2, functions={"tick": fn})
    live = Live("dev", True, app=app, state=state(
        cron__tick=ResourceRecord(spec=dict(cron("tick").spec)),
        app__app=ResourceRecord("ap-1", {"code_hash": "sha256:a"}, version=2, code_hash="sha256:a")))
    plan = compare(inp([], removed={"app.app": False}), live)
    assert {a: c.action for a, c in by(plan).items()} == {  # type: ignore[attr-defined]
        "app.app": Action.FORGET, "cron.tick": Action.FORGET}
    assert guard_problems(plan, frozenset()) == [] and plan.summary.destroy == 0


def test_renames_and_forgets_in_text_json_markdown_and_the_plan_file() -> None:
    import json

    import pytest

    from harvest_iac.errors import HarvestError
    from harvest_iac.plan import Change, FieldChange, plan_from_dict, plan_to_dict
    from harvest_iac.planfile import plans_from_json
    from harvest_iac.present import render_json, render_markdown, render_text

    changes = (
        Change("volume.new", "volume", "new", Action.UPDATE, fields=(FieldChange("name", "old", "new"),),
               reason="renamed in place", previous_address="volume.old"),
        Change("secret.s", "secret", "s", Action.FORGET, before={"keys": ["K"]}, reason="kept"),
        Change("volume.tmp", "volume", "tmp", Action.DELETE, before={"version": 1}, destroy_reviewed=True),
    )
    plan = Plan("dev", "app", "local", "dev.yaml", changes, live_fingerprint="sha256:0", spec_digest="sha256:0")
    text = render_text([plan])
    assert "  # volume.new (moved from volume.old) will be updated in place" in text
    assert '      ~ name = "old" -> "new"' in text
    assert "  # secret.s will no longer be managed by harvest, but will not be destroyed" in text
    assert '  . secret "s" {' in text
    assert "Plan: 0 to add, 1 to change, 1 to destroy, 1 to forget." in text
    assert "| `~` | `volume.new` | update | moved from `volume.old`; renamed in place |" in render_markdown([plan])
    data = json.loads(render_json([plan]))
    rc = {c["address"]: c for c in data["resource_changes"]}
    assert rc["volume.new"]["previous_address"] == "volume.old" and rc["secret.s"]["actions"] == ["forget"]
    assert rc["volume.tmp"]["destroy_reviewed"] is True and data["change_summary"]["forget"] == 1
    assert plan_from_dict(plan_to_dict(plan)).changes == plan.changes
    assert plans_from_json(json.dumps(data), "plan.json")[0].changes == plan.changes
    rc["volume.new"]["previous_address"] = "secret.old"
    with pytest.raises(HarvestError, match="'secret.old' is not a volume address"):
        plans_from_json(json.dumps(data), "plan.json")

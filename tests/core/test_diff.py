"""The pure diff: desired resources and a hand-built live state in, plan decisions out."""

from __future__ import annotations

from datetime import datetime, timezone

from harvest_iac.diff import Desired, DiffInput, SecretValues, compare
from harvest_iac.live import Live, LiveApp, LiveEnvironment, LiveFunction, LiveImage, LiveSecret, LiveVolume
from harvest_iac.plan import Action
from harvest_iac.secrethash import SecretHasher
from harvest_iac.state import ResourceRecord, SnapshotRecord, StateRecord

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
HASHER = SecretHasher()


def inp(desired: list[Desired], **kw: object) -> DiffInput:
    base: dict[str, object] = dict(environment="dev", app="app", source="dev.yaml", target="local",
                                   desired={d.address: d for d in desired}, app_digest="sha256:a",
                                   secret_values={}, now=NOW, app_needed=False)
    base.update(kw)
    return DiffInput(**base)  # type: ignore[arg-type]


def vol(name: str, version: int = 2, protect: bool = True) -> Desired:
    return Desired(f"volume.{name}", "volume", name, {"version": version, "protect": protect})


def cron(name: str) -> Desired:
    view = {"schedule": "Period(seconds=3600)", "max_retries": None, "timeout": 300, "volumes": {},
            "secrets": []}
    return Desired(f"cron.{name}", "cron", name,
                   {"every": "1h", "every_seconds": 3600, "timeout": 300, "task": "reload-volumes",
                    "live_view": view}, view)


def actions(plan: object) -> dict[str, str]:
    return {c.address: c.action.value for c in plan.actionable}  # type: ignore[attr-defined]


def test_identity_sets_create_import_and_unmanaged() -> None:
    live = Live("dev", True, volumes={"a": LiveVolume("a", "vo-a", 2),
                                      "hand": LiveVolume("hand", "vo-h", 1)})
    plan = compare(inp([vol("a"), vol("b")]), live)
    assert actions(plan) == {"volume.a": "import", "volume.b": "create"}
    assert plan.unmanaged == ("volume.hand",)


def test_deleting_a_protected_volume_is_blocked_and_unprotected_needs_permission() -> None:
    state = StateRecord.new("dev", "app")
    state = state.with_resource("volume.keep", ResourceRecord("vo-k", {"version": 2, "protect": True}))
    state = state.with_resource("volume.tmp", ResourceRecord("vo-t", {"version": 2, "protect": False}))
    live = Live("dev", True, volumes={"keep": LiveVolume("keep", "vo-k", 2),
                                      "tmp": LiveVolume("tmp", "vo-t", 2)}, state=state)
    plan = compare(inp([]), live)
    by = {c.address: c for c in plan.changes}
    assert by["volume.keep"].action is Action.DELETE and by["volume.keep"].blocked
    assert "set `protect: false`" in (by["volume.keep"].blocked or "")
    assert by["volume.tmp"].action is Action.DELETE and not by["volume.tmp"].blocked
    assert plan.summary.destroy == 2


def test_cron_limit_is_a_warning_with_its_setting() -> None:
    crons = [cron(f"c{i}") for i in range(6)]
    plan = compare(inp(crons, app_needed=True), Live("dev", True))
    assert any("6 crons exceed the limit of 5" in w for w in plan.warnings)
    assert not compare(inp(crons, app_needed=True, cron_limit=10), Live("dev", True)).warnings


def test_snapshot_older_than_max_age_is_remade_and_a_missing_image_is_drift() -> None:
    spec = {"image": "agent", "image_recipe": "sha256:r", "setup": [], "volumes": {},
            "max_age": 3600, "keep": 1}
    d = Desired("snapshot.warm", "snapshot", "warm", spec)
    made = NOW.timestamp() - 2 * 3600
    state = StateRecord.new("dev", "app").with_resource(
        "snapshot.warm", ResourceRecord(spec=spec, snapshots=(SnapshotRecord("im-1", made),)))
    fresh = Live("dev", True, images={"im-1": LiveImage("im-1", True)}, state=state)
    change = next(c for c in compare(inp([d]), fresh).changes if c.address == "snapshot.warm")
    assert change.action is Action.UPDATE and "older than max_age 1h0m" in (change.reason or "")
    gone = Live("dev", True, images={"im-1": LiveImage("im-1", False)}, state=state)
    plan = compare(inp([d]), gone)
    assert [dr.what for dr in plan.drift] == ["image im-1 no longer exists in Modal"]


def test_a_snapshot_is_remade_when_what_its_image_ships_changes_not_when_first_recorded() -> None:
    spec = {"image": "agent", "image_recipe": "sha256:r", "setup": [], "volumes": {}, "keep": 1}
    shipped = {**spec, "image_contents": {"/root/jobs/run.py": "sha256:1", "/etc/a.json": "sha256:2"}}
    made = NOW.timestamp() - 60

    def change_for(recorded: dict[str, object], desired: dict[str, object]) -> object:
        state = StateRecord.new("dev", "app").with_resource(
            "snapshot.warm", ResourceRecord(spec=recorded, snapshots=(SnapshotRecord("im-1", made),)))
        live = Live("dev", True, images={"im-1": LiveImage("im-1", True)}, state=state)
        plan = compare(inp([Desired("snapshot.warm", "snapshot", "warm", desired)]), live)
        return next(c for c in plan.changes if c.address == "snapshot.warm")

    edited = change_for(shipped, {**spec, "image_contents": {**shipped["image_contents"],  # type: ignore[dict-item]
                                                              "/root/jobs/run.py": "sha256:3"}})
    assert edited.reason == "re-made: what its image ships changed: /root/jobs/run.py"  # type: ignore[attr-defined]
    gone = change_for(shipped, spec)
    assert gone.reason == "re-made: what its image ships changed: /etc/a.json, /root/jobs/run.py"  # type: ignore[attr-defined]
    older_record = change_for(spec, shipped)  # a record written before harvest kept it
    assert older_record.reason == "harvest settings only; the snapshot is kept"  # type: ignore[attr-defined]


def test_a_snapshot_holds_the_files_and_dockerfiles_of_its_whole_image_chain() -> None:
    from harvest_iac.planner import with_snapshot_image_contents

    desired = {d.address: d for d in [
        Desired("image.base", "image", "base", {"from": "dockerfile", "dockerfile_sha256": "sha256:d"}),
        Desired("image.jobs", "image", "jobs", {"from": "base", "local_files": {"/root/run.py": "sha256:f"}}),
        Desired("snapshot.warm", "snapshot", "warm", {"image": "jobs", "setup": []}),
        Desired("snapshot.plain", "snapshot", "plain", {"image": "other", "setup": []}),
    ]}
    out = with_snapshot_image_contents(desired)
    assert out["snapshot.warm"].spec["image_contents"] == {
        "/root/run.py": "sha256:f", "Dockerfile of image.base": "sha256:d"}
    assert "image_contents" not in out["snapshot.plain"].spec


def test_a_budget_reached_is_a_warning() -> None:
    def warnings(usage: float) -> list[str]:
        details = LiveEnvironment("en-1", {"budget": 20.0}, current_cycle_usage=usage)
        return list(compare(inp([]), Live("dev", True, details=details)).warnings)

    assert not warnings(19.5)
    assert warnings(20.25) == [
        "the environment's spend this cycle ($20.25) has reached its budget of $20.00: nothing new starts "
        "in it (sandboxes, function calls, scheduled runs) until the budget is raised or cleared "
        "(`budget: none`)"]


def test_function_changed_outside_harvest_is_drift_and_an_update() -> None:
    d = cron("tick")
    state = StateRecord.new("dev", "app").with_resource("cron.tick", ResourceRecord(spec=d.spec))
    state = state.with_resource("app.app", ResourceRecord(version=3, code_hash="sha256:a"))
    fn = LiveFunction("tick", "fu-1", "Period(seconds=60)", None, 300, None, None, "im-x")
    live = Live("dev", True, app=LiveApp("app", "ap-1", "deployed", version=3,
                                          functions={"tick": fn}), state=state)
    plan = compare(inp([d], app_needed=True), live)
    assert [dr.what for dr in plan.drift] == ["was changed outside of harvest"]
    change = next(c for c in plan.changes if c.address == "cron.tick")
    assert [f.path for f in change.fields] == ["deployed.schedule"]
    assert actions(plan)["app.app"] == "update"


def test_secret_hash_compare_needs_no_value_in_the_plan() -> None:
    state = StateRecord.new("dev", "app")
    rec = ResourceRecord("st-1", {"keys": ["K"]}, values_hash=HASHER.hash("s", {"K": "old-value-abc"}))
    state = state.with_resource("secret.s", rec)
    live = Live("dev", True, secrets={"s": LiveSecret("s", "st-1", ("K",))}, state=state)
    d = Desired("secret.s", "secret", "s", {"keys": ["K"], "from_env": {"K": "K"}})
    plan = compare(inp([d], secret_values={"s": SecretValues({"K": "new-value-xyz"})}), live)
    assert actions(plan) == {"secret.s": "update"}
    assert "new-value-xyz" not in repr(plan) and "old-value-abc" not in repr(plan)
    same = compare(inp([d], secret_values={"s": SecretValues({"K": "old-value-abc"})}), live)
    assert not same.actionable

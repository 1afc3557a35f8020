"""The pure decisions of rollback, destroy and import: data in, decisions (or text) out."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvest_iac.destroy import teardown
from harvest_iac.errors import HarvestError
from harvest_iac.importer import Found, import_text
from harvest_iac.live import LiveDeployment, LiveFunction, LiveSecret, LiveVolume
from harvest_iac.loader import load_file
from harvest_iac.rollback import decide
from harvest_iac.state import ResourceRecord, RollbackRecord, SnapshotRecord, StateRecord

HISTORY = [LiveDeployment(5, "harvest-ccc"), LiveDeployment(4, "harvest-ccc"), LiveDeployment(3, ""),
           LiveDeployment(2, "harvest-bbb"), LiveDeployment(1, "harvest-aaa")]


def test_rollback_goes_to_the_previous_harvest_deployment_with_other_code() -> None:
    decision = decide(HISTORY, None, None)
    assert decision.current.version == 5 and decision.target == LiveDeployment(2, "harvest-bbb")


def test_rollback_to_a_version_and_what_already_serves_it() -> None:
    assert decide(HISTORY, None, 1).target == LiveDeployment(1, "harvest-aaa")
    rolled = [LiveDeployment(6, "harvest-bbb", rollback_version=2), *HISTORY]
    assert "already serves version 2" in decide(rolled, None, 2).note
    with pytest.raises(HarvestError, match="no version 9"):
        decide(HISTORY, None, 9)
    with pytest.raises(HarvestError, match="no earlier harvest deployment"):
        decide([LiveDeployment(2, "harvest-a"), LiveDeployment(1, "harvest-a")], None, None)


def test_a_recorded_rollback_is_a_no_op_and_an_unrecorded_one_is_finished() -> None:
    rolled = [LiveDeployment(6, "harvest-bbb", rollback_version=2), *HISTORY]
    assert decide(rolled, RollbackRecord(5, 2, 6), None).note.startswith("already rolled back to version 2")
    finishing = decide(rolled, RollbackRecord(5, 2, None), None)  # killed after AppRollback
    assert finishing.made == rolled[0] and finishing.target is None
    again = decide(HISTORY, RollbackRecord(5, 2, None), None)  # killed before AppRollback
    assert again.target == LiveDeployment(2, "harvest-bbb") and again.made is None


def test_destroy_keeps_protected_volumes_and_groups_the_app() -> None:
    state = StateRecord.new("dev", "app")
    for address, spec in [("volume.keep", {"protect": True}), ("volume.tmp", {"protect": False}),
                          ("volume.now-protected", {"protect": False}), ("secret.s", {}), ("cron.c", {}),
                          ("app.app", {}), ("image.base", {})]:
        state = state.with_resource(address, ResourceRecord(spec=spec))
    state = state.with_resource("snapshot.warm", ResourceRecord(snapshots=(SnapshotRecord("im-1", 1.0),)))
    t = teardown(state, {"volume.now-protected"})
    assert t.app == ("app.app", "cron.c", "image.base") and t.snapshots == ("snapshot.warm",)
    assert t.secrets == ("secret.s",) and t.volumes == ("volume.tmp",)
    assert t.kept == ("volume.keep", "volume.now-protected")


def test_import_writes_a_file_that_loads_with_awkward_names(tmp_path: Path) -> None:
    fn = LiveFunction("true", "fu-1", "Cron('*/5 * * * *', America/New_York)", 3, 90, None, None, None,
                      volumes={"/mnt/a b": "1data", "/mnt/x": "vo-elsewhere"}, secrets=("s.1", "gone"))
    found = Found("dev", "yes", True,
                  volumes={"1data": LiveVolume("1data", "vo-1", 1)},
                  secrets={"s.1": LiveSecret("s.1", "st-1", ("A_KEY",)),
                           "dash": LiveSecret("dash", "st-2", ("not-a-var",)),
                           "empty": LiveSecret("empty", "st-3", ())},
                  functions={"true": fn, "odd": LiveFunction("odd", "fu-2", "Period(months=1)", None, 300,
                                                             None, None, None)})
    text, left_out = import_text(found, "harvest import --environment dev", "local")
    path = tmp_path / "env.yaml"
    path.write_text(text)
    spec = load_file(path).spec
    assert spec.app == "yes" and list(spec.volumes) == ["1data"] and list(spec.secrets) == ["s.1"]
    cron = spec.crons["true"]
    assert (cron.schedule, cron.timezone, cron.timeout, cron.volumes, cron.secrets) == (
        "*/5 * * * *", "America/New_York", 90, {"/mnt/a b": "1data"}, ["s.1"])
    assert cron.retries is not None and cron.retries.max_retries == 3
    assert left_out == [
        'secret dash: key names "not-a-var" cannot be environment variables',
        "secret empty: it has no keys",
        "cron odd: schedule Period(months=1) cannot be written",
        "cron true: the code it runs cannot be read back from Modal; replace its `command`",
        "cron true: volume vo-elsewhere at /mnt/x is not a volume of this environment",
        "cron true: secret gone is not a secret of this environment",
    ]

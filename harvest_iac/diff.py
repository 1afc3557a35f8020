"""compare(desired, live) -> Plan. Pure: no modal, no network, no file I/O.

Identity sets first (desired - live: create; live - desired: delete when harvest manages it,
else unmanaged; both: compare fields), then one comparer per kind. Modal cannot tell us
everything (image recipes, secret values, a sandbox profile's settings), so fields Modal
cannot show are compared with the spec recorded at the last apply (the state record).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from harvest_iac.estimate import (
    DAYS_PER_MONTH,
    HOURS_PER_MONTH,
    PRICES,
    RATE_KEYS,
    STARTER_PLAN_CRON_LIMIT,
    Prices,
    cron_runs_per_month,
    describe_resources,
    format_fire_times,
    function_run_cost,
    money,
    next_cron_fires,
    run_gap,
    sandbox_hour_cost,
    usage_cost,
)
from harvest_iac.lifecycle import APP_PARTS, as_if_moved, find_moves, mark_moves, mark_removed
from harvest_iac.live import Live, LiveFunction
from harvest_iac.naming import NO_BUDGET, function_tag
from harvest_iac.plan import SENSITIVE, Action, Change, Drift, FieldChange, Plan, fingerprint, order_changes
from harvest_iac.secrethash import SecretHasher, ValuesHash, Verdict
from harvest_iac.state import ResourceRecord, StateRecord


#: How a file allows a deletion itself (see `lifecycle`).
_REMOVED = "a `removed:` entry with `destroy: true`"

#: Snapshot fields whose change means the snapshot must be made again.
SNAPSHOT_RECIPE = ("image", "image_recipe", "setup", "volumes")


@dataclass(frozen=True)
class Desired:
    """One resource the YAML declares, in normalised JSON-able form."""

    address: str
    kind: str
    name: str
    spec: dict[str, Any]  # recorded as last-applied; compared with the state record
    live_view: dict[str, Any] = field(default_factory=dict)  # what Modal can show back


@dataclass(frozen=True)
class SecretValues:
    """A secret's values read at plan/apply time (never printed). `values` is None when a
    variable is missing; `missing` names them."""

    values: dict[str, str] | None
    missing: tuple[str, ...] = ()
    source: str = ""  # where the values came from, for messages ("env", ".env.registry")


@dataclass(frozen=True)
class DiffInput:
    environment: str
    app: str
    source: str
    target: str
    desired: dict[str, Desired]  # by address
    app_digest: str  # hash of everything deployed as the app (the rendered code)
    secret_values: dict[str, SecretValues]  # by secret name
    now: datetime
    cron_limit: int = STARTER_PLAN_CRON_LIMIT
    prices: Prices = PRICES
    spec_digest: str = ""
    app_needed: bool = True  # False when nothing is deployed (no crons, no sandbox profiles)
    hasher: SecretHasher = field(default_factory=SecretHasher)  # secret values vs recorded hashes
    moved: Mapping[str, str] = field(default_factory=dict)  # `moved:` old address -> new address
    removed: Mapping[str, bool] = field(default_factory=dict)  # `removed:` address -> destroy


@dataclass
class _Acc:
    changes: list[Change] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Field-level differences, sorted. Nested maps are compared key by key (deepdiff), so
    a change inside `retries` shows as `retries.max_retries`, not as the whole map."""
    out: list[FieldChange] = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b == a and isinstance(b, bool) == isinstance(a, bool):
            continue
        if isinstance(b, dict) and isinstance(a, dict):
            out.extend(_nested(key, b, a))
        else:
            out.append(FieldChange(key, b, a))
    return tuple(out)


def _nested(key: str, before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    from deepdiff import DeepDiff  # imported only when something differs (it is slow to import)

    diff = DeepDiff(before, after, ignore_order=False, view="tree")
    paths: set[str] = set()
    for level in (lv for levels in diff.values() for lv in levels):
        parts = level.path(output_format="list")
        paths.add(str(parts[0]) if parts else "")
    out = []
    for sub in sorted(paths):
        if sub == "":
            out.append(FieldChange(key, before, after))
        else:
            out.append(FieldChange(f"{key}.{sub}", before.get(sub), after.get(sub)))
    return out


def _split(address: str) -> tuple[str, str]:
    kind, name = address.split(".", 1)
    return kind, name


# -- per-kind comparers -----------------------------------------------------------------
def _compare_volume(d: Desired | None, live: Live, rec: ResourceRecord | None, inp: DiffInput,
                    acc: _Acc, address: str) -> None:
    kind, name = _split(address)
    lv = live.volumes.get(name)
    live_view = None if lv is None else {"version": lv.version}
    recorded_protect = bool(rec.spec.get("protect", True)) if rec else True
    if d is None:
        if lv is None:
            return
        if rec is None:
            return  # unmanaged: never planned for deletion
        blocked = None
        if recorded_protect:
            blocked = (f"{address} is protected: to delete it, first set `protect: false` for it "
                       f"in the YAML and apply, then remove it and apply with --allow-destroy {address}")
        acc.changes.append(Change(address, kind, name, Action.DELETE,
                                  before={**(rec.spec if rec else {}), **(live_view or {})},
                                  blocked=blocked,
                                  notes=(f"apply deletes it only with --allow-destroy {address} or {_REMOVED}; "
                                         "its files are lost",)))
        return
    if lv is None:
        if rec is not None:
            acc.drift.append(Drift(address, kind, name, "was deleted outside of harvest"))
        acc.changes.append(Change(address, kind, name, Action.CREATE, after=d.spec))
        return
    if rec is None:
        if lv.version != d.spec.get("version"):
            acc.changes.append(Change(
                address, kind, name, Action.REPLACE, before={"version": lv.version}, after=d.spec,
                fields=(FieldChange("version", lv.version, d.spec.get("version")),),
                reason="version is fixed at creation; the existing volume is not managed by harvest",
                blocked=(f"{address} exists with version {lv.version} and is not managed by "
                         f"harvest: set `version: {lv.version}` to adopt it as it is"),
            ))
        else:
            acc.changes.append(Change(address, kind, name, Action.IMPORT, before=live_view,
                                      after=d.spec))
        return
    if rec.object_id and lv.object_id != rec.object_id:
        acc.drift.append(Drift(address, kind, name,
                               "was deleted and re-created outside of harvest (its files may differ)"))
    if lv.version != d.spec.get("version"):
        protected = recorded_protect or bool(d.spec.get("protect", True))
        acc.changes.append(Change(
            address, kind, name, Action.REPLACE, before={**rec.spec, "version": lv.version},
            after=d.spec, fields=_fields({**rec.spec, "version": lv.version}, d.spec),
            reason="version is fixed at creation",
            blocked=(f"replacing {address} deletes it and its files; it is protected: set "
                     "`protect: false`, apply, then apply the version change with "
                     f"--allow-destroy {address}") if protected else None,
            notes=(f"apply replaces it only with --allow-destroy {address}; its files are lost",),
        ))
        return
    fields = _fields(rec.spec, d.spec)
    if fields:
        acc.changes.append(Change(address, kind, name, Action.UPDATE, before=rec.spec,
                                  after=d.spec, fields=fields,
                                  reason="harvest settings only; nothing changes in Modal"))


def _compare_secret(d: Desired | None, live: Live, rec: ResourceRecord | None, inp: DiffInput,
                    acc: _Acc, address: str) -> None:
    kind, name = _split(address)
    ls = live.secrets.get(name)
    if d is None:
        if ls is not None and rec is not None:
            acc.changes.append(Change(address, kind, name, Action.DELETE,
                                      before={"keys": list(ls.keys), "values": SENSITIVE},
                                      notes=(f"apply deletes it only with --allow-destroy {address} or {_REMOVED}",)))
        return
    keys = list(d.spec.get("keys", []))
    after = {"keys": keys, "values": SENSITIVE}
    values = inp.secret_values.get(name)
    known = values.values if values is not None else None
    recorded = rec.values_hash if rec is not None else None

    def values_hash() -> ValuesHash | None:  # only for a change: a hash may cost a scrypt
        return None if known is None else inp.hasher.hash(name, known, like=recorded)

    if values is not None and values.missing:
        acc.warnings.append(
            f"{address}: cannot compare values: {', '.join(values.missing)} "
            f"{'is' if len(values.missing) == 1 else 'are'} not set; apply will refuse until "
            f"{'it is' if len(values.missing) == 1 else 'they are'} set")
    if ls is None:
        if rec is not None:
            acc.drift.append(Drift(address, kind, name, "was deleted outside of harvest"))
        acc.changes.append(Change(address, kind, name, Action.CREATE, after=after,
                                  values_hash=values_hash()))
        return
    before = {"keys": list(ls.keys), "values": SENSITIVE}
    if rec is None:
        acc.changes.append(Change(address, kind, name, Action.IMPORT, before=before, after=after,
                                  reason="exists but is not managed by harvest; apply adopts it "
                                         "and sets its values from the declared source",
                                  values_hash=values_hash()))
        return
    recorded_keys = list(rec.spec.get("keys", []))
    recreated = bool(rec.object_id and ls.object_id != rec.object_id or (
        rec.created_at and ls.created_at and abs(ls.created_at - rec.created_at) > 1e-3))
    if recreated:
        acc.drift.append(Drift(address, kind, name,
                               "was re-created outside of harvest (its values may differ)"))
    elif list(ls.keys) != recorded_keys:
        lost = sorted(set(recorded_keys) - set(ls.keys))
        what = (f"lost key(s) {', '.join(lost)} outside of harvest" if lost
                else "gained keys outside of harvest")
        acc.drift.append(Drift(address, kind, name, what,
                               fields=(FieldChange("keys", recorded_keys, list(ls.keys)),)))
    fields = list(_fields({"keys": list(ls.keys)}, {"keys": keys}))
    reason = None
    if known is not None:
        reason = _values_reason(address, inp.hasher, known, recorded, acc) or (
            "re-created outside of harvest: apply puts the declared values again"
            if recreated else None)
        if reason:
            fields.append(FieldChange("values", SENSITIVE, SENSITIVE))
    if fields:
        acc.changes.append(Change(address, kind, name, Action.UPDATE, before=before, after=after,
                                  fields=tuple(fields), reason=reason, values_hash=values_hash()))


def _values_reason(address: str, hasher: SecretHasher, values: dict[str, str],
                   recorded: ValuesHash | None, acc: _Acc) -> str | None:
    """Why a secret's values must be put again (None: they are the ones recorded). Values
    that cannot be compared (a keyed hash, no key) are put again, like Terraform's unknown
    values: planned as a change, with a warning."""
    check = hasher.check(values, recorded) if recorded is not None else None
    if check is None or check.verdict is Verdict.CHANGED:
        return "values changed"
    if check.verdict is Verdict.UNVERIFIABLE:
        acc.warnings.append(f"{address}: cannot compare values: {check.why}; they are planned as "
                            "changed and apply sets them again")
        return f"values cannot be compared ({check.why})"
    return None


def _compare_settings(d: Desired | None, live: Live, rec: ResourceRecord | None, inp: DiffInput,
                      acc: _Acc, address: str) -> None:
    """The environment's settings, key by key: only the keys the file writes are managed. Each
    is compared with what Modal shows; one that differs from what harvest last set is drift."""
    kind, name = _split(address)
    if d is None:
        return  # no longer written: no longer managed, left as it is
    shown = live.details.settings if live.details is not None else {}
    now = {key: shown.get(key) for key in d.spec}
    if d.spec.get("budget") == NO_BUDGET and now["budget"] is None:
        now["budget"] = NO_BUDGET  # no budget is what `budget: none` asks for
    recorded = rec.spec if rec is not None else {}
    drifted = sorted(k for k in d.spec if k in recorded and recorded[k] != now[k])
    if drifted and live.details is not None:
        acc.drift.append(Drift(address, kind, name, "was changed outside of harvest",
                               fields=tuple(FieldChange(k, recorded[k], now[k]) for k in drifted)))
    fields = _fields(now, d.spec)
    if fields:
        acc.changes.append(Change(address, kind, name, Action.UPDATE, before=now, after=d.spec,
                                  fields=fields))


def _function_view(fn: LiveFunction) -> dict[str, Any]:
    return {
        "schedule": fn.schedule,
        "max_retries": fn.max_retries,
        "timeout": fn.timeout,
        "cpu": fn.cpu,
        "memory_mib": fn.memory_mib,
        "volumes": dict(sorted(fn.volumes.items())),
        "secrets": sorted(fn.secrets),
        "gpu": fn.gpu,
        "region": fn.region,
        "max_containers": fn.max_containers,
    }


def _compare_function(d: Desired | None, live: Live, rec: ResourceRecord | None,
                      inp: DiffInput, acc: _Acc, address: str) -> None:
    """Crons and sandbox profiles: functions of the deployed app. The spec is compared with
    the last-applied one; what Modal shows back (schedule, retries, timeout, mounts) is
    compared with what was deployed, and a difference there is drift to undo."""
    kind, name = _split(address)
    tag = function_tag(kind, name)
    fn = live.app.functions.get(tag) if live.app else None
    if d is None:
        if rec is not None:
            acc.changes.append(Change(address, kind, name, Action.DELETE,
                                      before=_shown_spec(rec.spec),
                                      reason="removed from the YAML; the app is redeployed without it"))
        return
    after = _shown_spec(d.spec)
    notes = _function_notes(d, inp)
    if rec is None and fn is not None:
        differs = sorted(k for k in d.live_view if _function_view(fn).get(k) != d.live_view[k])
        how = f" (deployed with another {', '.join(differs)})" if differs else ""
        acc.changes.append(Change(address, kind, name, Action.IMPORT, before=_function_view(fn),
                                  after=after, notes=notes,
                                  reason=f"the deployed app has this function{how} but harvest does not "
                                         "manage it; apply redeploys the app as the YAML says"))
        return
    if rec is None:
        acc.changes.append(Change(address, kind, name, Action.CREATE, after=after, notes=notes))
        return
    before = _shown_spec(rec.spec)
    fields = list(_fields(before, after))
    if fn is None:
        if live.app is not None:
            acc.drift.append(Drift(address, kind, name, "is missing from the deployed app"))
        fields.append(FieldChange("deployed", False, True))
    elif d.live_view:
        recorded_view = rec.spec.get("live_view") or {}
        now_view = {k: _function_view(fn).get(k) for k in d.live_view}
        drifted = {k for k in d.live_view if recorded_view.get(k) != now_view[k]}
        if drifted:
            acc.drift.append(Drift(address, kind, name, "was changed outside of harvest",
                                   fields=tuple(FieldChange(k, recorded_view.get(k), now_view[k])
                                                for k in sorted(drifted))))
            fields.extend(FieldChange(f"deployed.{k}", now_view[k], d.live_view[k])
                          for k in sorted(drifted) if now_view[k] != d.live_view[k])
    if fields:
        acc.changes.append(Change(address, kind, name, Action.UPDATE, before=before, after=after,
                                  fields=tuple(fields), notes=notes))


#: Spec keys that are not deployed (what Modal shows back; the usage a cost estimate assumes):
#: recorded, never compared.
_NOT_DEPLOYED = ("live_view", "expected")


def _shown_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in _NOT_DEPLOYED}


def _cron_runs(spec: Mapping[str, Any], now: datetime) -> float:
    """How many times a cron runs in a month."""
    if spec.get("schedule"):
        return cron_runs_per_month(spec["schedule"], spec.get("timezone") or "UTC", now)
    every = float(spec.get("every_seconds") or 0)
    return HOURS_PER_MONTH * 3600 / every if every else 0.0


def _cron_ceiling(spec: Mapping[str, Any], inp: DiffInput) -> float:
    """A cron's cost in a month if every run used its full timeout."""
    return _cron_runs(spec, inp.now) * function_run_cost(
        float(spec.get("timeout") or 300), spec.get("cpu"), spec.get("memory_mib"), inp.prices, spec.get("gpu"))


def _expected_cost(spec: Mapping[str, Any], prices: Prices) -> float | None:
    """A sandbox profile's `expected` usage priced per month (None without `expected`)."""
    expected = spec.get("expected")
    if not expected:
        return None
    per_run = usage_cost(float(expected["duration"]), spec.get("cpu"), spec.get("memory_mib"), spec.get("gpu"),
                         prices, sandbox=True)
    return float(expected["runs_per_day"]) * DAYS_PER_MONTH * per_run


def _function_notes(d: Desired, inp: DiffInput) -> tuple[str, ...]:
    notes: list[str] = []
    spec = d.spec
    resources = describe_resources(spec.get("cpu"), spec.get("memory_mib"), spec.get("gpu"))
    if d.kind == "cron":
        sched = spec.get("schedule")
        if sched:
            tz = spec.get("timezone") or "UTC"
            notes.append("next runs: " + format_fire_times(next_cron_fires(sched, tz, inp.now)))
        else:
            notes.append(f"runs every {spec.get('every')} from each deploy "
                         "(a Period restarts when the app is redeployed)")
        notes.append(f"cost: at most {money(_cron_ceiling(spec, inp))}/month "
                     f"({_cron_runs(spec, inp.now):,.0f} runs, each assumed to use its full "
                     f"{spec.get('timeout') or 300}s timeout at {resources})")
    elif d.kind == "sandbox":
        hour = sandbox_hour_cost(spec.get("cpu"), spec.get("memory_mib"), inp.prices, spec.get("gpu"))
        notes.append(f"cost: {money(hour)} per sandbox-hour ({money(hour * HOURS_PER_MONTH)}/month "
                     f"for one sandbox running all month) at {resources}")
        monthly = _expected_cost(spec, inp.prices)
        if monthly is not None:
            notes.append(f"expected: {money(monthly)}/month ({_usage(spec)})")
    return tuple(notes)


def _usage(spec: Mapping[str, Any]) -> str:
    expected = spec["expected"]
    runs = float(expected["runs_per_day"])
    resources = describe_resources(spec.get("cpu"), spec.get("memory_mib"), spec.get("gpu"))
    return f"{runs:,g} runs a day, {_age(float(expected['duration']))} each, at {resources}"


def _costs(inp: DiffInput, live: Live, budget: float | None, acc: _Acc) -> None:
    """The environment's monthly estimate (sandbox profiles' expected usage, crons' ceilings)
    beside its actual spend, and a warning when the estimate exceeds the budget."""
    sandboxes = {d.address: _expected_cost(d.spec, inp.prices) for d in inp.desired.values() if d.kind == "sandbox"}
    crons = [_cron_ceiling(d.spec, inp) for d in inp.desired.values() if d.kind == "cron"]
    if not sandboxes and not crons:
        return
    for address, monthly in sorted(sandboxes.items()):
        if monthly is not None:
            acc.notes.append(f"cost: {address} expected {money(monthly)}/month: "
                             f"{_usage(inp.desired[address].spec)}")
    expected = sum(m for m in sandboxes.values() if m is not None)
    parts = [f"{money(expected)} expected for sandbox profiles"] if any(
        m is not None for m in sandboxes.values()) else []
    if crons:
        parts.append(f"at most {money(sum(crons))} for crons (each run using its full timeout)")
    total = expected + sum(crons)
    if parts:
        line = f"cost: about {money(total)}/month for this environment: {', '.join(parts)}"
        if budget is not None:
            line += f"; budget {money(budget)} per billing cycle"
        acc.notes.append(f"{line}; prices: {inp.prices.source}")
    if budget is not None and total > budget:
        acc.warnings.append(f"the estimate of {money(total)}/month exceeds the budget of {money(budget)} "
                            "per billing cycle (settings.budget): raise the budget or lower the usage")
    acc.notes.append(_spend(live))


def _budget_reached(live: Live, acc: _Acc) -> None:
    """A warning when this cycle's spend has reached the budget Modal holds now: nothing new
    starts in the environment (sandboxes, calls, scheduled runs) until it is raised or cleared."""
    budget = live.details.settings.get("budget") if live.details is not None else None
    if budget is None or live.details is None or live.details.current_cycle_usage < budget:
        return
    acc.warnings.append(f"the environment's spend this cycle ({money(live.details.current_cycle_usage)}) has "
                        f"reached its budget of {money(budget)}: nothing new starts in it (sandboxes, "
                        "function calls, scheduled runs) until the budget is raised or cleared (`budget: none`)")


def _spend(live: Live) -> str:
    billing = live.billing
    if live.details is None:
        return "spend: none yet (the environment does not exist)"
    last = (f"{money(billing.last_cycle_spend)} in {billing.last_cycle} (the last billing cycle)"
            if billing.last_cycle_spend is not None else "last cycle not available (EnvironmentBillingSummary "
            "did not answer)")
    return f"spend: {last}, {money(live.details.current_cycle_usage)} so far this cycle"


def _priced(inp: DiffInput, live: Live) -> DiffInput:
    """The diff input with the target's published rates, when it publishes all harvest needs."""
    rates = live.billing.rates
    published = inp.prices.from_rates(rates, "the target's published rates (WorkspaceBillingRates)") \
        if rates else None
    if published is not None:
        return replace(inp, prices=published)
    why = "the target publishes no rates" if not rates else "the target's rates lack " + ", ".join(
        k for k in RATE_KEYS if k not in rates)
    return replace(inp, prices=replace(inp.prices, source=f"{inp.prices.source} ({why})"))


def _compare_recorded(d: Desired | None, live: Live, rec: ResourceRecord | None, inp: DiffInput,
                      acc: _Acc, address: str) -> None:
    """Images: Modal cannot show a recipe back; compare with the last-applied spec."""
    kind, name = _split(address)
    if d is None:
        if rec is not None:
            acc.changes.append(Change(address, kind, name, Action.DELETE, before=rec.spec,
                                      reason="removed from the YAML; no longer built"))
        return
    if rec is None:
        acc.changes.append(Change(address, kind, name, Action.CREATE, after=d.spec))
        return
    fields = _fields(rec.spec, d.spec)
    if fields:
        acc.changes.append(Change(address, kind, name, Action.UPDATE, before=rec.spec,
                                  after=d.spec, fields=fields, reason="rebuilt on the next deploy"))


def _compare_snapshot(d: Desired | None, live: Live, rec: ResourceRecord | None,
                      inp: DiffInput, acc: _Acc, address: str) -> None:
    kind, name = _split(address)
    if d is None:
        if rec is not None:
            acc.changes.append(Change(address, kind, name, Action.DELETE, before=rec.spec,
                                      reason="removed from the YAML; its images are deleted"))
        return
    latest = rec.snapshots[-1] if rec and rec.snapshots else None
    if rec is None or latest is None:
        acc.changes.append(Change(address, kind, name, Action.CREATE, after=d.spec,
                                  notes=("a sandbox runs the setup, then its filesystem is "
                                         "snapshotted",)))
        return
    reasons = []
    if not live.images.get(latest.image_id, None) or not live.images[latest.image_id].exists:
        acc.drift.append(Drift(address, kind, name,
                               f"image {latest.image_id} no longer exists in Modal"))
        reasons.append("its image no longer exists")
    fields = list(_fields(rec.spec, d.spec))
    if any(f.path in SNAPSHOT_RECIPE for f in fields):
        reasons.append("its recipe changed")
    edited = _shipped_changes(fields)
    if edited and "image_contents" in rec.spec:  # (a record from before it was kept: not a change)
        reasons.append("what its image ships changed: " + ", ".join(edited))
    age = inp.now.timestamp() - latest.created_at
    max_age = d.spec.get("max_age")
    if max_age and age > float(max_age):
        reasons.append(f"it is {_age(age)} old, older than max_age {_age(float(max_age))}")
        fields.append(FieldChange("age", _age(age), "0s"))
    if reasons:
        acc.changes.append(Change(address, kind, name, Action.UPDATE, before=rec.spec,
                                  after=d.spec, fields=tuple(fields),
                                  reason="re-made: " + "; ".join(reasons)))
    elif fields:
        acc.changes.append(Change(address, kind, name, Action.UPDATE, before=rec.spec,
                                  after=d.spec, fields=tuple(fields),
                                  reason="harvest settings only; the snapshot is kept"))


def _shipped_changes(fields: list[FieldChange]) -> list[str]:
    """The files (and Dockerfiles) of a snapshot's image chain that changed, by name."""
    names: set[str] = set()
    for f in fields:
        key, _, sub = f.path.partition(".")
        if key == "image_contents":
            names |= {sub} if sub else set(f.before or {}) | set(f.after or {})
    return sorted(names)


#: A snapshot without `max_age` that expires sooner than this gets a warning.
EXPIRY_WARNING_S = 7 * 86400


def _snapshot_lifetimes(inp: DiffInput, state: StateRecord | None, acc: _Acc) -> None:
    """Each made snapshot's age and expiry (notes), and a warning when its newest image would
    expire before it is re-made: `max_age` after it was made, plus at most one run interval of
    the `refresh-snapshots` cron."""
    now = inp.now.timestamp()
    gaps = [run_gap(d.spec.get("schedule"), d.spec.get("timezone"), d.spec.get("every_seconds"))
            for d in inp.desired.values() if d.kind == "cron" and d.spec.get("task") == "refresh-snapshots"]
    for address, d in sorted(inp.desired.items()):
        rec = state.resources.get(address) if state else None
        if d.kind != "snapshot" or rec is None or not rec.snapshots:
            continue
        newest = rec.snapshots[-1]
        ends = "never expires" if not newest.expires_at else \
            f"expires {_when(newest.expires_at)} (in {_age(newest.expires_at - now)})"
        older = f"; {len(rec.snapshots) - 1} older kept" if len(rec.snapshots) > 1 else ""
        acc.notes.append(f"{address}: newest image {newest.image_id} made {_age(now - newest.created_at)} "
                         f"ago, {ends}{older}")
        max_age = d.spec.get("max_age")
        if not newest.expires_at or newest.expires_at <= now:
            continue
        if max_age:
            remade = newest.created_at + float(max_age) + (min(gaps) if gaps else 0.0)
            if newest.expires_at < remade:
                acc.warnings.append(
                    f"{address}: its newest image expires {_when(newest.expires_at)}, before it is "
                    f"re-made (by {_when(remade)}: max_age {_age(float(max_age))} plus the refresh "
                    "interval); raise `ttl` or lower `max_age`")
        elif newest.expires_at - now < EXPIRY_WARNING_S:
            acc.warnings.append(
                f"{address}: its newest image expires {_when(newest.expires_at)} and nothing re-makes "
                "it before (no `max_age`); set `max_age`, or `ttl: none` to keep snapshots for ever")


def _budget(inp: DiffInput, live: Live) -> float | None:
    """The environment's budget: the one the file sets, else the one Modal has."""
    declared = inp.desired.get(f"settings.{inp.environment}")
    if declared is not None and declared.spec.get("budget") is not None:
        budget = declared.spec["budget"]
        return None if budget == NO_BUDGET else float(budget)
    shown = live.details.settings.get("budget") if live.details is not None else None
    return None if shown is None else float(shown)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


Comparer = Callable[[Desired | None, Live, ResourceRecord | None, DiffInput, _Acc, str], None]

COMPARERS: dict[str, Comparer] = {
    "settings": _compare_settings,
    "volume": _compare_volume,
    "secret": _compare_secret,
    "image": _compare_recorded,
    "cron": _compare_function,
    "sandbox": _compare_function,
    "snapshot": _compare_snapshot,
}


def _compare_app(inp: DiffInput, live: Live, state: StateRecord | None, acc: _Acc,
                 functions_changed: bool) -> None:
    address = f"app.{inp.app}"
    rec = state.resources.get(address) if state else None
    after = {"code_hash": inp.app_digest}
    if not inp.app_needed:
        if rec is not None and live.app is not None and live.app.state != "stopped":
            acc.changes.append(Change(address, "app", inp.app, Action.DELETE,
                                      before={"code_hash": rec.code_hash},
                                      reason="no crons or sandbox profiles left to deploy",
                                      notes=(f"apply stops it only with --allow-destroy {address} or {_REMOVED}",)))
        return
    if live.app is None:
        if rec is not None:
            acc.drift.append(Drift(address, "app", inp.app, "was deleted or stopped outside of harvest"))
        acc.changes.append(Change(address, "app", inp.app, Action.CREATE, after=after,
                                  notes=("deployed from the code rendered from templates/",)))
        return
    if live.app.state not in ("deployed", "unspecified"):
        acc.drift.append(Drift(address, "app", inp.app, f"is {live.app.state} outside of harvest"))
    if rec is None:
        declared = {function_tag(d.kind, d.name) for d in inp.desired.values()
                    if d.kind in ("cron", "sandbox")}
        dropped = [n for n in live.app.function_names if n not in declared]
        notes: tuple[str, ...] = ()
        if dropped:
            notes = (f"apply removes {', '.join(dropped)} from the app: the YAML does not declare "
                     f"{'it' if len(dropped) == 1 else 'them'}",)
            acc.warnings.append(f"{address}: {notes[0]}")
        acc.changes.append(Change(address, "app", inp.app, Action.IMPORT,
                                  before={"version": live.app.version}, after=after,
                                  reason="an app of this name is deployed but not managed by "
                                         "harvest; apply redeploys it from the YAML", notes=notes))
        return
    rolled = rec.rollback
    if rolled is not None and rolled.version is not None and live.app.version == rolled.version:
        acc.drift.append(Drift(address, "app", inp.app,
                               f"was rolled back with `harvest rollback` to version {rolled.to_version} "
                               f"(serving as version {rolled.version}); the YAML still describes the "
                               f"version harvest deployed, {rec.version}",
                               fields=(FieldChange("version", rec.version, rolled.version),)))
        acc.changes.append(Change(address, "app", inp.app, Action.UPDATE,
                                  before={"code_hash": live.app.tags.get("harvest-code-hash", ""),
                                          "version": live.app.version},
                                  after=after, fields=(FieldChange("version", live.app.version, "(new)"),),
                                  reason="apply deploys what the YAML describes, undoing the rollback; "
                                         "revert the YAML to keep what runs now"))
        return
    if rec.version is not None and live.app.version is not None and live.app.version != rec.version:
        by = f" by {live.app.deployed_by}" if live.app.deployed_by else ""
        acc.drift.append(Drift(address, "app", inp.app,
                               f"was deployed outside of harvest (version {live.app.version}{by}; "
                               f"harvest deployed version {rec.version})",
                               fields=(FieldChange("version", rec.version, live.app.version),)))
        acc.changes.append(Change(address, "app", inp.app, Action.UPDATE,
                                  before={"code_hash": live.app.tags.get("harvest-code-hash", ""),
                                          "version": live.app.version},
                                  after=after, fields=(FieldChange("version", live.app.version,
                                                                   "(new)"),),
                                  reason="redeploy to undo the deploy made outside of harvest"))
        return
    if rec.code_hash != inp.app_digest or functions_changed:
        acc.changes.append(Change(address, "app", inp.app, Action.UPDATE,
                                  before={"code_hash": rec.code_hash}, after=after,
                                  fields=(FieldChange("code_hash", rec.code_hash, inp.app_digest),),
                                  reason="redeployed"))


def _prime_secret_hashes(inp: DiffInput, state: StateRecord | None) -> None:
    """The (slow, memory-hard) secret hashes this plan needs, computed at once, concurrently."""
    secrets = []
    for d in inp.desired.values():
        values = inp.secret_values.get(d.name)
        if d.kind == "secret" and values is not None and values.values is not None:
            rec = state.resources.get(d.address) if state else None
            secrets.append((d.name, values.values, rec.values_hash if rec else None))
    inp.hasher.prime(secrets)


def compare(inp: DiffInput, live: Live) -> Plan:
    """The plan that makes `live` match `inp.desired` (renames and removals as the file says)."""
    acc = _Acc()
    inp = _priced(inp, live)
    seen = live
    moves = find_moves(inp.moved, live)
    live = as_if_moved(live, moves)
    state = live.state
    managed = set(state.resources) if state else set()
    _prime_secret_hashes(inp, state)
    if not live.environment_exists:
        acc.changes.append(Change(f"environment.{inp.environment}", "environment",
                                  inp.environment, Action.CREATE, after={"name": inp.environment}))
    live_addresses = {f"volume.{n}" for n in live.volumes} | {f"secret.{n}" for n in live.secrets}
    addresses = set(inp.desired) | {a for a in managed if _split(a)[0] in COMPARERS} | (
        live_addresses & (set(inp.desired) | managed))
    for address in sorted(addresses):
        kind = _split(address)[0]
        comparer = COMPARERS.get(kind)
        if comparer is None:
            continue
        rec = state.resources.get(address) if state else None
        comparer(inp.desired.get(address), live, rec, inp, acc, address)
    _snapshot_lifetimes(inp, state, acc)
    _costs(inp, live, _budget(inp, live), acc)
    _budget_reached(live, acc)
    acc.changes = mark_moves(acc.changes, moves, seen)
    functions_changed = any(c.kind in APP_PARTS for c in acc.changes)
    _compare_app(inp, live, state, acc, functions_changed)
    acc.changes, removed_warnings = mark_removed(acc.changes, inp.removed, live, inp.app)
    acc.warnings.extend(removed_warnings)
    crons = sum(1 for d in inp.desired.values() if d.kind == "cron")
    if crons > inp.cron_limit:
        acc.warnings.append(f"{crons} crons exceed the limit of {inp.cron_limit} scheduled "
                            "functions (Modal's Starter plan); set HARVEST_CRON_LIMIT if your "
                            "plan allows more")
    recorded = set(seen.state.resources) if seen.state else set()
    seen_addresses = {f"volume.{n}" for n in seen.volumes} | {f"secret.{n}" for n in seen.secrets}
    unmanaged = sorted(a for a in seen_addresses if a not in recorded and a not in inp.desired)
    return Plan(
        environment=inp.environment,
        app=inp.app,
        target=inp.target,
        source=inp.source,
        changes=order_changes(acc.changes),
        drift=tuple(sorted(acc.drift, key=lambda d: d.address)),
        unmanaged=tuple(unmanaged),
        warnings=tuple(acc.warnings),
        live_fingerprint=fingerprint(seen.fingerprint_data()),
        spec_digest=inp.spec_digest,
        notes=tuple(acc.notes),
    )

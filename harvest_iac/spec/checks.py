"""Cross-reference checks on a validated spec: every name used is declared, no `from:` cycles, and
`moved` / `removed` entries name what the file no longer (moved: `from`) or now (moved: `to`) declares.

Each problem is `(path, message)`, where path is the key path in the merged document (such as
`("sandboxes", "agent", "secrets", 0)`); the loader turns paths into file positions.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping

from harvest_iac.spec.fields import BUILTIN_BASES
from harvest_iac.spec.models import KINDS, SECTIONS, EnvironmentSpec

Path = tuple[str | int, ...]
PathProblem = tuple[Path, str]
Names = Mapping[str, Collection[str]]


def _missing(kind: str, name: str, declared: Iterable[str], section: str, extra: str = "") -> str:
    known = sorted(declared)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        hint = f"; did you mean {close[0]!r}?"
    elif known:
        hint = f" under {section} (declared: {', '.join(known)})"
    else:
        hint = f"; declare it under {section}"
    return f"{kind} {name!r} is not declared{extra}{hint}"


def _mounts(names: Names, base: Path, mounts: dict[str, str]) -> list[PathProblem]:
    return [
        ((*base, "volumes", path), _missing("volume", volume, names["volumes"], "`volumes:`"))
        for path, volume in mounts.items()
        if volume not in names["volumes"]
    ]


def _secrets(names: Names, base: Path, secrets: list[str]) -> list[PathProblem]:
    return [
        ((*base, "secrets", index), _missing("secret", secret, names["secrets"], "`secrets:`"))
        for index, secret in enumerate(secrets)
        if secret not in names["secrets"]
    ]


def _image_problems(spec: EnvironmentSpec, names: Names) -> list[PathProblem]:
    problems: list[PathProblem] = []
    for name, image in spec.images.items():
        where: Path = ("images", name)
        if image.parent is not None and image.parent not in names["images"]:
            extra = f" (or use a built-in base: {', '.join(BUILTIN_BASES)})"
            problems.append(((*where, "from"), _missing("image", image.parent, names["images"], "`images:`", extra)))
        if image.registry_secret is not None and image.registry_secret not in names["secrets"]:
            problems.append(((*where, "registry_secret"),
                             _missing("secret", image.registry_secret, names["secrets"], "`secrets:`")))
    problems.extend(_image_cycles(spec))
    problems.extend(_builds_after_local_files(spec))
    return problems


def _builds_after_local_files(spec: EnvironmentSpec) -> list[PathProblem]:
    """Local files reach a container when it starts, after every build step: an image cannot
    build on one that ships them (Modal refuses it at deploy)."""
    problems: list[PathProblem] = []
    for name, image in spec.images.items():
        if not image.builds:
            continue
        seen: set[str] = set()
        parent = image.parent
        while parent is not None and parent in spec.images and parent not in seen:
            seen.add(parent)
            if spec.images[parent].ships_local_files:
                problems.append((("images", name, "from"),
                                 f"image {name!r} adds build steps to image {parent!r}, which ships local "
                                 "files (`files`, `python_source`: added when a container starts, after every "
                                 f"build step); move them to {name!r} or to an image layered on it"))
                break
            parent = spec.images[parent].parent
    return problems


def _image_cycles(spec: EnvironmentSpec) -> list[PathProblem]:
    problems: list[PathProblem] = []
    reported: set[str] = set()
    order = list(spec.images)
    for start in spec.images:
        chain: list[str] = []
        name: str | None = start
        while name is not None and name in spec.images and name not in chain:
            chain.append(name)
            name = spec.images[name].parent
        if name is None or name not in chain or name in reported:
            continue
        cycle = chain[chain.index(name):]
        reported.update(cycle)
        first = min(cycle, key=order.index)
        loop = cycle[cycle.index(first):] + cycle[: cycle.index(first)] + [first]
        problems.append((("images", first, "from"),
                         f"images form a cycle through `from:`: {' -> '.join(loop)}; one of them must start "
                         "from a built-in base"))
    return problems


def _workload_problems(spec: EnvironmentSpec, names: Names) -> list[PathProblem]:
    problems: list[PathProblem] = []
    for name in spec.snapshots:
        if name in names["images"]:
            problems.append((("snapshots", name),
                             f"snapshot {name!r} has the name of an image; sandboxes refer to both by name, so "
                             "rename one of them"))
    for name, snapshot in spec.snapshots.items():
        if snapshot.image not in names["images"]:
            extra = " (a snapshot starts from an image, not another snapshot)" \
                if snapshot.image in names["snapshots"] else ""
            problems.append((("snapshots", name, "image"),
                             _missing("image", snapshot.image, names["images"], "`images:`", extra)))
        problems += _mounts(names, ("snapshots", name), snapshot.volumes)
    for name, sandbox in spec.sandboxes.items():
        if sandbox.image not in names["images"] and sandbox.image not in names["snapshots"]:
            candidates = [*names["images"], *names["snapshots"]]
            problems.append((("sandboxes", name, "image"),
                             _missing("image or snapshot", sandbox.image, candidates, "`images:` or `snapshots:`")))
        problems += _mounts(names, ("sandboxes", name), sandbox.volumes)
        problems += _secrets(names, ("sandboxes", name), sandbox.secrets)
    for name in spec.crons:
        if name.startswith("sandbox-") and name.removeprefix("sandbox-") in spec.sandboxes:
            problems.append((("crons", name),
                             f"cron {name!r} would deploy the same Modal function as sandbox profile "
                             f"{name.removeprefix('sandbox-')!r} (deployed as `sandbox-<profile>`); "
                             "rename the cron"))
    for name, cron in spec.crons.items():
        if cron.image is not None and cron.image not in names["images"]:
            problems.append((("crons", name, "image"), _missing("image", cron.image, names["images"], "`images:`")))
        problems += _mounts(names, ("crons", name), cron.volumes)
        problems += _secrets(names, ("crons", name), cron.secrets)
    return problems


def _declared_in(names: Names, address: str) -> str | None:
    """The section declaring `address` (`volumes` for volume.NAME), or None when it is not declared."""
    kind, _, name = address.partition(".")
    section = KINDS.get(kind)
    return section if section is not None and name in names[section] else None


def _moved_problems(spec: EnvironmentSpec, names: Names) -> list[PathProblem]:
    problems: list[PathProblem] = []
    sources: dict[str, int] = {}
    targets: dict[str, int] = {}
    for index, move in enumerate(spec.moved):
        where: Path = ("moved", index)
        section = KINDS[move.source.split(".", 1)[0]]
        if _declared_in(names, move.source):
            problems.append(((*where, "from"), f"{move.source} is still declared under `{section}:`; a moved "
                                               f"entry renames it to {move.to}: remove the old name there"))
        if not _declared_in(names, move.to):
            problems.append(((*where, "to"), f"{move.to} is not declared under `{section}:`; declare the new "
                                             "name there (with the old one's settings)"))
        for key, address, seen in (("from", move.source, sources), ("to", move.to, targets)):
            if address in seen:
                problems.append(((*where, key), f"{address} is already the `{key}` of moved[{seen[address]}]; "
                                                "keep one entry per rename"))
            seen.setdefault(address, index)
    return problems


def _removed_problems(spec: EnvironmentSpec, names: Names) -> list[PathProblem]:
    problems: list[PathProblem] = []
    seen: dict[str, int] = {}
    moved = {m.source for m in spec.moved} | {m.to for m in spec.moved}
    for index, entry in enumerate(spec.removed):
        where: Path = ("removed", index, "address")
        address = entry.address
        kind, _, name = address.partition(".")
        section = _declared_in(names, address)
        if section:
            problems.append((where, f"{address} is still declared under `{section}:`; remove it there, or "
                                    "drop this entry to keep managing it"))
        elif kind == "app" and name != spec.app:
            problems.append((where, f"{address} is not this file's app (app: {spec.app}); harvest knows "
                                    "only that one"))
        elif kind == "app" and (names["crons"] or names["sandboxes"]):
            problems.append((where, f"{address} still deploys this file's crons and sandbox profiles; "
                                    "remove them first, or drop this entry"))
        if address in moved:
            problems.append((where, f"{address} is also in `moved:`; an object is either renamed or removed"))
        if address in seen:
            problems.append((where, f"{address} is already removed[{seen[address]}]; keep one entry per object"))
        seen.setdefault(address, index)
    return problems


def reference_problems(spec: EnvironmentSpec, declared: Names | None = None) -> list[PathProblem]:
    """Every dangling reference and `from:` cycle in `spec`.

    `declared` maps each section to every name declared there, including entries that failed
    validation and are absent from `spec`, so a reference to an invalid entry is not also
    reported as undeclared. By default the names are those of `spec`.
    """
    names: Names = declared if declared is not None else {s: getattr(spec, s).keys() for s in SECTIONS}
    return (_image_problems(spec, names) + _workload_problems(spec, names) + _moved_problems(spec, names)
            + _removed_problems(spec, names))

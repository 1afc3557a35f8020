"""A container's root folder: filled from its image's layers, and the container's Python.

A layer is a folder of files at their container paths (copied into each new container's
root), plus reserved entries: `.harvest-site-packages/`, Python packages that a container
sees read-only on its Python's path (pip layers built without isolation); `.harvest-snapshot`,
which marks a whole root (a build container's, or an older filesystem snapshot), so the files
of the layers below it are not copied again; and `.harvest-diff`, which marks a filesystem
snapshot taken as a difference: the layers it goes on (`base`) and the paths the sandbox
removed from them (`removed`, applied before its files are copied).

An isolated container's Python is the host's interpreter (read-only) seen as a virtual
environment at `/usr/local`, as in Modal's images: `/usr/local/bin/python`, with
`/usr/local/lib/pythonX.Y/site-packages` writable in the container (so `pip install` works
there) and the image's package layers after it on `sys.path`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harvest_iac.emulator.runtime.fs_tools import resolve_in_root

LAYER_SITE_PACKAGES = ".harvest-site-packages"
LAYER_SNAPSHOT = ".harvest-snapshot"
LAYER_DIFF = ".harvest-diff"
_RESERVED = {LAYER_SITE_PACKAGES, LAYER_SNAPSHOT, LAYER_DIFF}
_NOT_CAPTURED = {"__modal"}  # a container's own mount point for the launcher's files
VENV = Path("/usr/local")
LAYERS_PTH = "_harvest_layers.pth"
PIP_TARGET = "/__modal/pip"


def prepared_marker(root: Path) -> Path:
    return root.parent / f".{root.name}.prepared"


def prepare_root(root: Path, layers: Sequence[Path]) -> None:
    """Fill a new container root with its layers' files (once: a root that was prepared
    already is left as it is)."""
    marker = prepared_marker(root)
    if marker.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    for layer in _copied(layers):
        for path in _removed(layer):
            _remove(resolve_in_root(root, path, follow_last=False))
        copy_layer(layer, root)
    marker.touch()


def _copied(layers: Sequence[Path]) -> Sequence[Path]:
    """The layers whose files make a root: from the last whole root on."""
    first = max((i for i, layer in enumerate(layers) if (layer / LAYER_SNAPSHOT).exists()), default=0)
    return layers[first:]


def _diff(layer: Path) -> dict[str, list[str]] | None:
    try:
        return dict(json.loads((layer / LAYER_DIFF).read_text()))
    except FileNotFoundError:
        return None


def _removed(layer: Path) -> list[str]:
    return (_diff(layer) or {}).get("removed", [])


def diff_base(layer: Path) -> list[Path] | None:
    """The layers a snapshot taken as a difference goes on (None: not such a snapshot)."""
    diff = _diff(layer)
    return None if diff is None else [Path(p) for p in diff["base"]]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


# An entry of a tree: its kind (d, f or l), then what tells a changed one: mode, size and
# modification time of a file (copies keep them), mode of a folder, target of a symlink.
_Stamp = tuple[str, int, int, int, str]


def snapshot_diff(root: Path, layers: Sequence[Path], dest: Path) -> None:
    """Write to `dest` a layer of what a container root, made from `layers`, has that they
    do not (added and changed files, by size, modification time and mode) and the paths it
    removed; with `layers` as its base it gives the root again."""
    expected: dict[str, _Stamp] = {}
    for layer in _copied(layers):
        for path in _removed(layer):
            _drop(expected, path)
        expected.update(_stamps(layer))
    actual = _stamps(root)
    dest.mkdir(parents=True)
    folders: dict[str, int] = {}
    for path, stamp in sorted(actual.items()):
        if expected.get(path) == stamp:
            continue
        parts = path.split("/")
        for i in range(1, len(parts)):  # the folders it is in, with their own modes
            folders.setdefault("/".join(parts[:i]), actual["/".join(parts[:i])][1])
        _copy_entry(root / path, dest / path, stamp)
        if stamp[0] == "d":
            folders[path] = stamp[1]
    for folder, mode in sorted(folders.items(), reverse=True):  # last: a read-only one is filled first
        (dest / folder).mkdir(exist_ok=True)
        (dest / folder).chmod(stat.S_IMODE(mode))
    removed: set[str] = set()
    for path, was in sorted(expected.items()):
        now = actual.get(path)
        replaced = now is None or now[0] != was[0] or (was[0] == "l" and now != was)
        if replaced and not _under(path, removed):
            removed.add(path)  # a symlink or another kind of entry goes before the new one comes
    base = [str(layer.resolve()) for layer in layers]
    (dest / LAYER_DIFF).write_text(json.dumps({"base": base, "removed": sorted("/" + p for p in removed)}))


def _under(path: str, folders: set[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:i]) in folders for i in range(1, len(parts)))


def _drop(entries: dict[str, _Stamp], path: str) -> None:
    path = path.strip("/")
    for key in [k for k in entries if k == path or k.startswith(path + "/")]:
        del entries[key]


def _stamps(top: Path) -> dict[str, _Stamp]:
    """Every entry under `top` (relative paths) but the reserved ones and special files."""
    found: dict[str, _Stamp] = {}
    folders = [""]
    while folders:
        folder = folders.pop()
        with os.scandir(top / folder) as entries:
            for entry in entries:
                if not folder and (entry.name in _RESERVED or entry.name in _NOT_CAPTURED):
                    continue
                path = f"{folder}/{entry.name}" if folder else entry.name
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    found[path] = ("d", info.st_mode, 0, 0, "")
                    folders.append(path)
                elif stat.S_ISLNK(info.st_mode):
                    found[path] = ("l", 0, 0, 0, os.readlink(entry.path))
                elif stat.S_ISREG(info.st_mode):
                    found[path] = ("f", info.st_mode, info.st_size, info.st_mtime_ns, "")
    return found


def _copy_entry(source: Path, dest: Path, stamp: _Stamp) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    kind = stamp[0]
    if kind == "d":
        dest.mkdir(exist_ok=True)
    elif kind == "l":
        dest.symlink_to(stamp[4])
    else:
        shutil.copy2(source, dest)


def copy_layer(layer: Path, dest: Path) -> None:
    """Copy a layer's files (not its reserved entries) over `dest`."""
    shutil.copytree(layer, dest, symlinks=True, dirs_exist_ok=True,
                    ignore=lambda d, names: _RESERVED & set(names) if Path(d) == layer else set())


def site_dirs(layers: Sequence[Path]) -> list[Path]:
    """The layers' package folders, the newest first (it wins on sys.path)."""
    return [layer / LAYER_SITE_PACKAGES for layer in reversed(layers)
            if (layer / LAYER_SITE_PACKAGES).is_dir()]


@dataclass(frozen=True)
class BasePython:
    """The host's Python installation that containers run."""

    prefix: Path
    binary: Path
    version: str  # "3.11"
    full_version: str  # "3.11.7"

    @property
    def site_packages(self) -> Path:
        return self.prefix / "lib" / f"python{self.version}" / "site-packages"


@functools.cache
def base_python() -> BasePython:
    prefix = Path(os.path.realpath(sys.base_prefix))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    binary = prefix / "bin" / f"python{version}"
    if not binary.exists():
        binary = Path(os.path.realpath(sys.executable))
    full = ".".join(str(n) for n in sys.version_info[:3])
    return BasePython(prefix, Path(os.path.realpath(binary)), version, full)


@dataclass(frozen=True)
class PythonEnvironment:
    """How an isolated container runs Python: the interpreter's path inside, the host
    installation to bind read-only, extra read-only binds, and env."""

    python: str
    prefix: Path
    own_usr_local: bool
    binds: list[tuple[Path, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def python_environment(root: Path | None, site_targets: Sequence[str],
                       package_targets: Sequence[str] = ()) -> PythonEnvironment:
    """Lay out the container's Python in `root` (None: only say where it is): the image's
    package folders (`site_targets`) on its path, then `package_targets`."""
    base = base_python()
    if base.prefix.is_relative_to(VENV):
        # The host's Python lives in /usr/local itself: use it as it is, packages by PYTHONPATH.
        targets = [*site_targets, *package_targets]
        env = {"PYTHONPATH": os.pathsep.join(targets)} if targets else {}
        return PythonEnvironment(str(base.binary), base.prefix, False, [], env)
    pip = _pip_package()
    binds = [(pip, f"{PIP_TARGET}/pip")] if pip is not None else []
    if root is not None:
        _write_venv(root, base, [*site_targets, *([PIP_TARGET] if binds else [])], package_targets)
    return PythonEnvironment(str(VENV / "bin" / "python"), base.prefix, True, binds)


def root_site_packages(root: Path) -> list[Path]:
    """The site-packages of the Python environment in a container root (what pip installed in
    an isolated build), for a container that does not run that environment (host mode)."""
    site = root / VENV.relative_to("/") / "lib" / f"python{base_python().version}" / "site-packages"
    return [site] if site.is_dir() else []


@functools.cache
def _pip_package() -> Path | None:
    """The pip package of the Python the local Modal runs in (its virtual environment's, when
    the base interpreter has none: Debian's python3 keeps pip out of the base)."""
    spec = importlib.util.find_spec("pip")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent


def _write_venv(root: Path, base: BasePython, path_entries: Sequence[str],
               appended: Sequence[str]) -> None:
    venv = root / VENV.relative_to("/")
    bin_dir = venv / "bin"
    site = venv / "lib" / f"python{base.version}" / "site-packages"
    bin_dir.mkdir(parents=True, exist_ok=True)
    site.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3", f"python{base.version}"):
        link = bin_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(base.binary)
    (venv / "pyvenv.cfg").write_text(
        f"home = {base.binary.parent}\ninclude-system-site-packages = false\n"
        f"version = {base.full_version}\n"
    )
    entries = ", ".join(repr(p) for p in path_entries)
    # `appended` folders go on sys.path as they are: their .pth files are not the image's to run
    (site / LAYERS_PTH).write_text(f"import site, sys; list(map(site.addsitedir, [{entries}])); "
                                   f"sys.path.extend({list(appended)!r})\n")
    if PIP_TARGET in path_entries:
        (bin_dir / "pip").write_text(
            "#!/usr/local/bin/python\nimport sys\nfrom pip._internal.cli.main import main\n"
            "sys.exit(main())\n"
        )
        (bin_dir / "pip").chmod(0o755)

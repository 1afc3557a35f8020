"""The local Modal's image builder: one layer folder per image, made by running the image's
Dockerfile steps (as the modal client writes them) on its parent's layers.

- A base image's `FROM` (a Dockerfile's, `from_registry`'s) picks the host's userland, and
  the build log says so; its other steps run on it. Modal's own bases (`debian_slim`,
  `micromamba`) are the host's userland as they are: their steps are not run (the caller
  decides, see `services.images`).
- `RUN` runs in a build container of the parent's layers (under bubblewrap when it works
  here, with the network), as `sh -c`; what the commands leave in the container's root is the
  layer (a whole root: see `rootfs`). `pip_install` is such a command: the packages land in
  the container Python's site-packages, so they are importable in the image's containers and
  not on the host; pip uses the host's pip configuration (`host_pip_sources`), so it finds
  packages where the host's pip does (`PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR` builds offline).
  `apt-get update` is skipped and `apt-get install` succeeds only for packages the host
  already has; any other is a build error naming them.
- `ENV` and `WORKDIR` set the image's env and workdir; `COPY src dest` copies from the
  build context (the files of `add_local_*(copy=True)`). `add_python`'s steps (copy a
  standalone Python in) are not run: the host's Python stands in.
- Without bubblewrap, a `RUN` step that is a pip install (`pip_install`, `uv_pip_install`)
  runs on the host with `pip install --target` into the layer's package folder (containers
  see it on their Python's path), which leaves the host's environment as it is; other `RUN`
  steps are refused: they would run on the host and change it.
- A step that fails ends the build with `BuildError` naming the step and its exit code.
- Layers are kept in a `LayerCache` by the key of their recipe chain: a build whose key is
  there already takes that layer at once, whatever image, environment or local Modal made it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harvest_iac.emulator.runtime.containers import Container
from harvest_iac.emulator.runtime.fs_tools import resolve_in_root
from harvest_iac.emulator.runtime.launcher import ContainerSpec, Launcher, Mount
from harvest_iac.emulator.runtime.processes import STDOUT, Proc
from harvest_iac.emulator.runtime.rootfs import LAYER_SITE_PACKAGES, LAYER_SNAPSHOT, copy_layer

_UV_IMAGE = "--from=ghcr.io/astral-sh/uv"
# add_python's steps: a standalone Python copied in (and linked as `python`)
_ADD_PYTHON = ("COPY /python/. /usr/local", "RUN ln -s /usr/local/bin/python3 /usr/local/bin/python")
# `uv pip install` as the client writes it for uv_pip_install, done by pip (uv is not pulled).
_UV_SHIM = """#!/bin/sh
[ "$1" = pip ] && shift
args=""
skip=""
for a in "$@"; do
  if [ -n "$skip" ]; then skip=""; continue; fi
  case "$a" in
    --python) skip=1 ;;
    --compile-bytecode) ;;
    --prerelease) skip=1 ;;
    *) args="$args $(printf '%s' "$a" | sed "s/'/'\\\\''/g; s/^/'/; s/$/'/")" ;;
  esac
done
eval exec python -m pip $args
"""
LAYER_CACHE_ENV = "HARVEST_LAYER_CACHE"
_IGNORED = ("CMD", "ENTRYPOINT", "LABEL", "EXPOSE", "SHELL", "USER", "ARG", "STOPSIGNAL")


class BuildError(Exception):
    """A build step failed; the message names the step and why."""


@dataclass(frozen=True)
class Step:
    number: int
    instruction: str  # FROM, RUN, ENV, WORKDIR, COPY
    argument: str

    def __str__(self) -> str:
        return f"{self.instruction} {self.argument}"


def parse(commands: Sequence[str]) -> list[Step]:
    """The steps of an image's Dockerfile commands (CMD and the like dropped)."""
    steps = []
    for number, line in enumerate(commands):
        instruction, _, argument = line.strip().partition(" ")
        instruction = instruction.upper()
        if not instruction or instruction.startswith("#") or instruction in _IGNORED:
            continue
        if instruction not in ("FROM", "RUN", "ENV", "WORKDIR", "COPY", "ADD"):
            raise BuildError(f"Step {number}: {line}: {instruction} is not supported by the local Modal")
        steps.append(Step(number, "COPY" if instruction == "ADD" else instruction, argument.strip()))
    return steps


def has_steps(commands: Sequence[str]) -> bool:
    """Whether the commands do anything after their FROM (or fail to: the build says why)."""
    try:
        return any(step.instruction != "FROM" for step in parse(commands))
    except BuildError:
        return True


def is_base(commands: Sequence[str]) -> bool:
    """A base image: its FROM names no parent image (`FROM base`)."""
    first = next((c.split() for c in commands if c.strip()), [])
    return not (len(first) >= 2 and first[0].upper() == "FROM" and first[1] == "base")


def config(commands: Sequence[str], env: dict[str, str], workdir: str) -> tuple[dict[str, str], str]:
    """The env and workdir after an image's ENV and WORKDIR steps."""
    env = dict(env)
    for step in parse(commands):
        if step.instruction == "ENV":
            env.update(_env_pairs(step.argument))
        elif step.instruction == "WORKDIR":
            workdir = str(Path(workdir, step.argument))
    return env, workdir


def _env_pairs(argument: str) -> dict[str, str]:
    words = shlex.split(argument)
    if len(words) >= 2 and "=" not in words[0]:  # the legacy `ENV KEY value` form
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words if "=" in w)


class LayerCache:
    """Built layers, each a folder named by the key of its recipe chain: the local Modal's
    `<data dir>/layer-cache`, or the folder `HARVEST_LAYER_CACHE` names, which several local
    Modals (data folders) can share."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @classmethod
    def of(cls, data_dir: Path) -> LayerCache:
        return cls(Path(os.environ.get(LAYER_CACHE_ENV) or data_dir / "layer-cache"))

    def get(self, key: str) -> Path | None:
        layer = self.root / key
        return layer if layer.is_dir() else None

    def put(self, built: Path, key: str) -> Path:
        """Move a built layer in (a layer of the same key put meanwhile wins)."""
        layer = self.root / key
        try:
            built.rename(layer)
        except OSError:
            if not layer.is_dir():
                raise
            shutil.rmtree(built, ignore_errors=True)
        return layer

    def work_dir(self, name: str) -> Path:
        """A folder to build in, beside the layers (so that `put` is a rename)."""
        return self.root / ".building" / name


@dataclass
class Build:
    """One image's build: its parent's layers, env and workdir, its steps and context, and
    where its layer goes: `cache` under `key`."""

    launcher: Launcher
    cache: LayerCache
    key: str
    work: Path
    parent_layers: list[Path]
    env: dict[str, str]
    workdir: str
    steps: list[Step]
    context: Path | None
    log: Callable[[str], None]

    async def run(self) -> Path | None:
        """The layer (None when the steps leave no files), built or found in the cache;
        raises BuildError."""
        cached = self.cache.get(self.key)
        if cached is not None:
            for step in self.steps:
                self.log(f"=> Step {step.number}: {step}\n")
            self.log("(local Modal: the layer of this recipe was built before: using it)\n")
            return cached
        root = self.work / "root"
        container: Container | None = None
        try:
            for step in self.steps:
                self.log(f"=> Step {step.number}: {step}\n")
                if step.instruction == "FROM":
                    self._host_base(step)
                elif str(step) in _ADD_PYTHON:
                    self.log("(local Modal: the host's Python stands in for add_python's)\n")
                elif step.instruction == "ENV":
                    self.env.update(_env_pairs(step.argument))
                elif step.instruction == "WORKDIR":
                    self.workdir = str(Path(self.workdir, step.argument))
                elif step.instruction == "COPY" and _UV_IMAGE in step.argument:
                    self._uv_shim(step, root)
                elif step.instruction == "COPY":
                    self._copy(step, root)
                elif self._host_package_step(step):
                    continue
                elif not self.launcher.isolated:
                    await self._host_pip(step, root)
                else:
                    container = container or await self._container(root)
                    await self._run(container, step)
        finally:
            if container is not None:
                await container.stop()
                _remove_mount_points(root, container.spec.mounts)
        layer = None
        if root.exists():
            shutil.rmtree(root / "__modal", ignore_errors=True)
            if container is not None:
                (root / LAYER_SNAPSHOT).touch()
            layer = self.cache.put(root, self.key)
        shutil.rmtree(self.work, ignore_errors=True)
        return layer

    def _host_base(self, step: Step) -> None:
        if step is not self.steps[0]:
            raise BuildError(f"Step {step.number}: {step}: multi-stage Dockerfiles are not supported "
                             "by the local Modal (use one FROM)")
        if step.argument.split()[0] != "base":
            self.log(f"(local Modal: the host's userland stands in for {step.argument})\n")

    async def _container(self, root: Path) -> Container:
        sources, pip_env = host_pip_sources()
        spec = ContainerSpec(root=root, argv=(), layers=self.parent_layers, env={**pip_env, **self.env},
                             workdir="/", network=True, hostname="modal-builder",
                             mounts=[Mount(p, str(p), read_only=True) for p in sources])
        container = Container(self.launcher, spec)
        await container.start()
        return container

    async def _run(self, container: Container, step: Step) -> None:
        proc = Proc(container, ["sh", "-c", step.argument], cwd=self.workdir, env=self.env,
                    merge_stderr=True)
        await proc.start()
        last_line = ""
        async for _, data in proc.read(STDOUT, 0):
            last_line = self._log_output(data, last_line)
        await proc.exited.wait()
        _check_exit(step, proc.returncode, last_line)

    def _log_output(self, data: bytes, last_line: str) -> str:
        """Log a step's output; its last non-empty line so far."""
        text = data.decode("utf-8", "replace")
        self.log(text)
        return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), last_line)

    async def _host_pip(self, step: Step, root: Path) -> None:
        """Without isolation, a pip install (only) runs on the host, into the layer's package
        folder (`pip install --target`), leaving the host's own environment as it is."""
        args = pip_install_args(step.argument)
        if args is None:
            raise BuildError(f"Step {step.number}: {step}\nrun_commands need bubblewrap: without it the "
                             "local Modal runs no build step but pip installs, as other commands would "
                             "change the host (apt-get install bubblewrap)")
        target = root / LAYER_SITE_PACKAGES
        target.mkdir(parents=True, exist_ok=True)
        layers = [root, *reversed(self.parent_layers)]
        argv = [sys.executable, "-m", "pip", "install", "--target", str(target), "--no-warn-script-location",
                "--disable-pip-version-check", *(_on_host(arg, layers) for arg in args)]
        env = {**os.environ, **{k: v for k, v in self.env.items() if k.startswith("PIP_")}}
        self.log("(local Modal: not isolated: pip installs into the layer from the host)\n")
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=str(root), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        last_line = ""
        while data := await proc.stdout.read(64 * 1024):
            last_line = self._log_output(data, last_line)
        _check_exit(step, await proc.wait(), last_line)

    def _copy(self, step: Step, root: Path) -> None:
        words = [w for w in shlex.split(step.argument) if not w.startswith("--")]
        if len(words) < 2 or self.context is None:
            raise BuildError(f"Step {step.number}: {step}: nothing to copy from")
        *sources, dest = words
        root.mkdir(parents=True, exist_ok=True)
        target = resolve_in_root(root, str(Path(self.workdir, dest)))
        for source in sources:
            src = resolve_in_root(self.context, source)
            if src.is_dir():
                copy_layer(src, target)
            elif src.exists():
                final = target / src.name if dest.endswith("/") or target.is_dir() else target
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, final)
            else:
                raise BuildError(f"Step {step.number}: {step}: {source} is not in the build context")

    def _uv_shim(self, step: Step, root: Path) -> None:
        dest = resolve_in_root(root, shlex.split(step.argument)[-1])
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_UV_SHIM)
        dest.chmod(0o755)
        self.log("(local Modal: uv pip install is done by pip)\n")

    def _host_package_step(self, step: Step) -> bool:
        """`apt-get update` / `apt-get install`: the host's userland stands in for Debian's."""
        words = step.argument.split()
        if words[:2] in (["apt-get", "update"], ["apt", "update"]):
            self.log("(local Modal: the image uses the host's Debian packages)\n")
            return True
        if words[:2] not in (["apt-get", "install"], ["apt", "install"]):
            return False
        packages = [w for w in words[2:] if not w.startswith("-")]
        missing = [p for p in packages if not _installed_on_host(p)]
        if missing:
            raise BuildError(
                f"Step {step.number}: {step}\napt_install: the local Modal cannot install Debian "
                f"packages into an image; not on this machine: {', '.join(missing)} "
                f"(install them on the host: apt-get install {' '.join(missing)})"
            )
        self.log(f"(local Modal: {', '.join(packages)} already installed on the host)\n")
        return True


def _check_exit(step: Step, code: int | None, last_line: str) -> None:
    if code != 0:
        why = f": {last_line}" if last_line else ""
        raise BuildError(f"Step {step.number}: {step}\nexited with code {code}{why}")


_SHELL_OPERATORS = set("();<>|&")


def pip_install_args(command: str) -> list[str] | None:
    """The arguments of `pip install` when a RUN command is a single pip (or `uv pip`)
    install, as the modal client writes them for `pip_install` and `uv_pip_install`; else
    None (shell syntax, variables, any other command)."""
    command = command.replace("$(command -v python)", "python")
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return None
    if "$" in command or any(w and set(w) <= _SHELL_OPERATORS for w in words):
        return None
    if len(words) > 3 and Path(words[0]).name.startswith("python") and words[1:4] == ["-m", "pip", "install"]:
        return words[4:]
    if len(words) > 1 and words[0] in ("pip", "pip3") and words[1] == "install":
        return words[2:]
    if len(words) > 2 and Path(words[0]).name == "uv" and words[1:3] == ["pip", "install"]:
        return _pip_options(words[3:])
    return None


def _pip_options(uv_args: list[str]) -> list[str]:
    """`uv pip install` arguments as pip's."""
    args: list[str] = []
    rest = iter(uv_args)
    for arg in rest:
        if arg == "--python":
            next(rest, None)
        elif arg == "--prerelease":
            next(rest, None)
            args.append("--pre")
        elif arg == "--requirements":
            args += ["-r", next(rest, "")]
        elif arg == "--no-cache":
            args.append("--no-cache-dir")
        elif arg not in ("--compile-bytecode", "--system"):
            args.append(arg)
    return args


def _on_host(arg: str, layers: Sequence[Path]) -> str:
    """A pip argument naming a container path (`/wheels`, `--find-links=/wheels`) as the
    host path of that file in the build's layers (the newest first); other arguments as
    they are."""
    option, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not value.startswith("/"):
        return arg
    for layer in layers:
        found = resolve_in_root(layer, value)
        if found.exists():
            return f"{option}{eq}{found}"
    return arg


def _remove_mount_points(root: Path, mounts: Sequence[Mount]) -> None:
    """The empty folders that a container's mounts left in its root (not part of the layer)."""
    for mount in mounts:
        folder = resolve_in_root(root, mount.target)
        while folder != root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def _installed_on_host(package: str) -> bool:
    name = package.split("=", 1)[0]
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.endswith("installed")


def host_pip_sources() -> tuple[list[Path], dict[str, str]]:
    """The host's pip configuration, for build steps: its settings (config files, then the
    `PIP_*` variables of this process, which win as they do for pip) as PIP_* variables, and
    the local folders its indexes and find-links name (mounted read-only), so `pip install`
    in an image finds what the host's pip finds (offline mirrors and wheelhouses included)."""
    return _pip_sources(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("PIP_"))))


@functools.cache
def _pip_sources(pip_environ: tuple[tuple[str, str], ...]) -> tuple[list[Path], dict[str, str]]:
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                              timeout=60, env={**os.environ, **dict(pip_environ),
                                               "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return [], {}
    env: dict[str, str] = {}
    sources: list[Path] = []
    settings = sorted(_settings(done.stdout), key=lambda item: item[0] == ":env:")  # files first
    for _, name, value in settings:
        env["PIP_" + name.upper().replace("-", "_")] = value
        for token in value.split():
            path = Path(token.removeprefix("file://"))
            if token.startswith("file://") and path.name == "simple":
                path = path.parent  # a local index's pages link to files beside it
            seen = any(path.is_relative_to(d) for d in ("/etc", "/usr"))
            if path.is_absolute() and path.exists() and not seen and path not in sources:
                sources.append(path)
    return sources, env


def _settings(config_list: str) -> list[tuple[str, str, str]]:
    """(section, name, value) of each line of `pip config list`."""
    settings = []
    for line in config_list.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if name:
            settings.append((section, name, value.strip().strip("'\"")))
    return settings

"""The local Modal's stand-in for the `modal-sandbox-fs-tools` binary that the client execs in a
sandbox for `sb.filesystem.*` (read, write, list, stat, mkdir, remove).

Run as `python -I fs_tools.py '<json command>'` inside a sandbox (standard library only, so it
runs on the container's Python): sandbox paths (absolute, as the client gives them) are
resolved inside `$HARVEST_SANDBOX_ROOT` (`/` in an isolated container, the sandbox's root
folder on the host otherwise) the way the kernel would resolve them with that folder as `/`:
`..` stops at the root and a symlink's absolute target starts again from the root, so no path
or symlink leads out of it. File bytes go through stdout (read) and stdin (write), listings
and stats are JSON on stdout, and errors are a JSON object `{"error_kind", "message"}` on
stderr with exit status 1.
"""

from __future__ import annotations

import json
import os
import pwd
import grp
import shutil
import stat
import sys
from pathlib import Path, PurePosixPath
from typing import Any

TOOL_PATH = "/__modal/.bin/modal-sandbox-fs-tools"
_CHUNK = 1024 * 1024


class FsError(Exception):
    """An error the client maps to its SandboxFilesystem*Error classes."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


MAX_SYMLINKS = 40


def resolve_in_root(root: Path, container_path: str, *, follow_last: bool = True) -> Path:
    """Where `container_path` leads when `root` is `/`: each component is looked up under
    the root, `..` never goes above it, and symlinks are followed with absolute targets
    taken from the root (as `chroot` would). Components that do not exist are kept as
    written. The result is always `root` or below it."""
    todo = [p for p in PurePosixPath("/", container_path).parts[1:] if p not in ("", ".")]
    todo.reverse()
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if (follow_last or todo) and candidate.is_symlink():
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(40, "Too many levels of symbolic links", "/" + "/".join(done + [part]))
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                done = []
            todo.extend(reversed([p for p in target.parts if p not in ("/", "", ".")]))
            continue
        done.append(part)
    return root.joinpath(*done)


def host_path(root: Path, sandbox_path: str, *, follow_last: bool = True) -> Path:
    """The host path of an absolute sandbox path; never outside the sandbox root."""
    return resolve_in_root(root, sandbox_path, follow_last=follow_last)


def _name(uid_or_gid: int, lookup: Any) -> str:
    try:
        return str(lookup(uid_or_gid)[0])
    except KeyError:
        return str(uid_or_gid)


def file_info(path: Path, sandbox_path: str) -> dict[str, Any]:
    """What the client's `FileInfo` is built from."""
    st = path.lstat()
    kind = "symlink" if stat.S_ISLNK(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode) else "file"
    return {
        "name": PurePosixPath(sandbox_path).name,
        "path": sandbox_path,
        "type": kind,
        "size": st.st_size,
        "mode": st.st_mode,
        "permissions": stat.filemode(st.st_mode),
        "owner": _name(st.st_uid, pwd.getpwuid),
        "group": _name(st.st_gid, grp.getgrgid),
        "modified_time": st.st_mtime,
        "symlink_target": os.readlink(path) if kind == "symlink" else None,
    }


def _exists(path: Path, sandbox_path: str) -> None:
    if not path.exists() and not path.is_symlink():
        raise FsError("NotFound", "No such file or directory")
    if path.parent != path and not path.parent.is_dir():
        raise FsError("NotDirectory", "Not a directory")


def read_file(root: Path, args: dict[str, Any]) -> None:
    path = host_path(root, args["path"])
    _exists(path, args["path"])
    if path.is_dir():
        raise FsError("IsDirectory", "Is a directory")
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def write_file(root: Path, args: dict[str, Any]) -> None:
    path = host_path(root, args["path"])
    if path.is_dir():
        raise FsError("IsDirectory", "Is a directory")
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            raise FsError("NotDirectory", "Not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        shutil.copyfileobj(sys.stdin.buffer, f, _CHUNK)


def list_files(root: Path, args: dict[str, Any]) -> None:
    path = host_path(root, args["path"])
    _exists(path, args["path"])
    if not path.is_dir():
        raise FsError("NotDirectory", "Not a directory")
    base = PurePosixPath(args["path"])
    entries = [file_info(child, str(base / child.name)) for child in sorted(path.iterdir())]
    json.dump(entries, sys.stdout)


def stat_path(root: Path, args: dict[str, Any]) -> None:
    path = host_path(root, args["path"], follow_last=False)
    _exists(path, args["path"])
    json.dump(file_info(path, args["path"]), sys.stdout)


def make_directory(root: Path, args: dict[str, Any]) -> None:
    path = host_path(root, args["path"])
    parents = bool(args.get("parents", True))
    if path.exists() and not (parents and path.is_dir()):
        raise FsError("PathAlreadyExists", "File exists")
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            raise FsError("NotDirectory", "Not a directory")
    if not parents and not path.parent.exists():
        raise FsError("NotFound", "No such file or directory")
    path.mkdir(parents=parents, exist_ok=parents)


def remove(root: Path, args: dict[str, Any]) -> None:
    path = host_path(root, args["path"], follow_last=False)
    _exists(path, args["path"])
    if path == root:
        raise FsError("PermissionDenied", "The sandbox root cannot be removed")
    if path.is_dir() and not path.is_symlink():
        if any(path.iterdir()) and not args.get("recursive"):
            raise FsError("DirectoryNotEmpty", "Directory not empty")
        shutil.rmtree(path)
    else:
        path.unlink()


COMMANDS = {
    "ReadFile": read_file,
    "WriteFile": write_file,
    "ListFiles": list_files,
    "Stat": stat_path,
    "MakeDirectory": make_directory,
    "Remove": remove,
}


def main(argv: list[str]) -> int:
    root = Path(os.environ.get("HARVEST_SANDBOX_ROOT", "."))
    try:
        command = json.loads(argv[1])
        (name, args), = command.items()
        handler = COMMANDS.get(name)
        if handler is None:
            raise FsError("NotSupported", f"{name} is not supported by the local Modal")
        handler(root, args)
    except FsError as err:
        json.dump({"error_kind": err.kind, "message": str(err)}, sys.stderr)
        return 1
    except PermissionError:
        json.dump({"error_kind": "PermissionDenied", "message": "Permission denied"}, sys.stderr)
        return 1
    except (IndexError, ValueError, KeyError, OSError) as err:
        json.dump({"error_kind": "Other", "message": f"{type(err).__name__}: {err}"}, sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

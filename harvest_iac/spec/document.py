"""YAML text -> plain data plus the source position of every key and value.

ruamel.yaml composes the node tree (positions included); we build the data ourselves so that
every key's and value's line and column are kept, duplicate keys are all reported, custom tags
are refused, and alias expansion is bounded by counting the values it produces (a "billion
laughs" file stops after `MAX_VALUES`, long before it costs memory or time).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

from harvest_iac.errors import Problem, SpecError

MAX_BYTES = 1024 * 1024
MAX_VALUES = 100_000
MAX_EXPANDED = 10_000
MAX_DEPTH = 64

Path = tuple[str | int, ...]
_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"
_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+|0[0-7_]+)$")


@dataclass(frozen=True)
class Where:
    """Where a value sits in a file (1-based), and where its key is, if it has one."""

    file: str
    line: int
    col: int
    key_line: int | None = None
    key_col: int | None = None

    def key_or_value(self) -> tuple[int, int]:
        """The key's position when there is a key, else the value's."""
        if self.key_line is not None and self.key_col is not None:
            return self.key_line, self.key_col
        return self.line, self.col


@dataclass
class Document:
    """One parsed file: its data (a mapping) and the position of every path in it."""

    file: str
    data: dict[str, Any]
    positions: dict[Path, Where]


class _Abort(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _line_col(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    line = before.count("\n") + 1
    return line, index - (before.rfind("\n") + 1) + 1


def decode(raw: bytes, file: str) -> str:
    """The file's text, or SpecError for what is not UTF-8 YAML text (binary, UTF-16, too big)."""
    if len(raw) > MAX_BYTES:
        raise SpecError([Problem(file, 1, 1, f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB; "
                                            "an environment file is a small YAML text")])
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError([Problem(file, 1, 1, "file is UTF-16 encoded; save it as UTF-8")])
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        col = nul - (raw.rfind(b"\n", 0, nul) + 1) + 1
        raise SpecError([Problem(file, line, col, "binary data (a NUL byte): an environment file is UTF-8 "
                                                  "YAML text")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8", errors="replace")
        line, col = _line_col(good, len(good))
        raise SpecError([Problem(file, line, col, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
                                                  "save the file as UTF-8")]) from None
    return text.removeprefix("\ufeff")


def _syntax_problem(exc: Exception, text: str, file: str) -> Problem:
    from ruamel.yaml.error import MarkedYAMLError
    from ruamel.yaml.reader import ReaderError

    if isinstance(exc, ReaderError):
        line, col = _line_col(text, max(0, min(exc.position, len(text))))
        return Problem(file, line, col, f"character U+{exc.character:04X} is not allowed in YAML text")
    if isinstance(exc, MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        message = str(exc.problem or "invalid YAML")
        if exc.context:
            started = exc.context_mark
            where = f" started at line {started.line + 1}" if started is not None and started.line != mark.line else ""
            message += f" ({exc.context}{where})"
        if "'\\t'" in message:
            message += "; indent with spaces, not tabs"
        return Problem(file, mark.line + 1, mark.column + 1, f"YAML syntax error: {message}")
    return Problem(file, 1, 1, f"YAML syntax error: {exc}")


def parse(text: str, file: str) -> Document:
    """Parse YAML text into a Document; every problem is raised as one SpecError."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML(typ="rt", pure=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root = yaml.compose(text)
    except YAMLError as exc:
        raise SpecError([_syntax_problem(exc, text, file)]) from None
    except RecursionError:
        raise SpecError([Problem(file, 1, 1, "YAML nested too deeply")]) from None
    if root is None:
        raise SpecError([Problem(file, 1, 1, "file is empty: an environment file is a mapping that starts "
                                             "with `harvest: 1`")])
    builder = _Builder(file)
    builder.positions[()] = Where(file, *builder.mark(root))
    try:
        data = builder.build(root, (), 0, ())
    except _Abort as exc:
        raise SpecError([exc.problem]) from None
    if not isinstance(data, dict):
        line, col = builder.mark(root)
        raise SpecError([Problem(file, line, col, f"the top level must be a mapping (keys such as `harvest:`, "
                                                  f"`environment:`, `images:`), not {_kind(root)}")])
    if builder.problems:
        raise SpecError(builder.problems)
    return Document(file, data, builder.positions)


def _kind(node: Any) -> str:
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return "a single value"


class _Builder:
    """Walks the composed node tree into dicts, lists and scalars, recording positions."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.count = 0
        self.expanded = 0
        self.seen: set[int] = set()
        self.problems: list[Problem] = []
        self.positions: dict[Path, Where] = {}

    @staticmethod
    def mark(node: Any) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def _abort(self, node: Any, message: str) -> _Abort:
        line, col = self.mark(node)
        return _Abort(Problem(self.file, line, col, message))

    def build(self, node: Any, path: Path, depth: int, active: tuple[int, ...]) -> Any:
        from ruamel.yaml.nodes import MappingNode, SequenceNode

        self.count += 1
        if id(node) in self.seen:
            self.expanded += 1
        self.seen.add(id(node))
        if self.expanded > MAX_EXPANDED or self.count > MAX_VALUES:
            top = self.positions.get(path[:1])
            line, col = top.key_or_value() if top is not None else self.mark(node)
            raise _Abort(Problem(self.file, line, col, f"aliases expand to more than {MAX_EXPANDED} values "
                                                       "(an alias bomb?); refusing to expand them"))
        if depth > MAX_DEPTH:
            raise self._abort(node, f"values nested more than {MAX_DEPTH} levels deep")
        if id(node) in active:
            raise self._abort(node, "an alias refers to the value that contains it (a recursive alias)")
        expected = {SequenceNode: "seq", MappingNode: "map"}.get(type(node))
        if expected is not None and _tag(node) != _YAML_TAG + expected:
            self._unsupported_tag(node)
        if isinstance(node, SequenceNode):
            inner = (*active, id(node))
            return [self._item(item, (*path, i), depth, inner) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth, (*active, id(node)))
        return self._scalar(node)

    def _item(self, node: Any, path: Path, depth: int, active: tuple[int, ...]) -> Any:
        line, col = self.mark(node)
        self.positions[path] = Where(self.file, line, col)
        return self.build(node, path, depth + 1, active)

    def _pairs(self, node: Any, depth: int, active: tuple[int, ...]) -> list[tuple[Any, Any]]:
        """The mapping's own pairs, then the pairs merged in by `<<:` keys (own keys win)."""
        from ruamel.yaml.nodes import MappingNode, SequenceNode

        own = [(k, v) for k, v in node.value if _tag(k) != _MERGE_TAG]
        merged: list[tuple[Any, Any]] = []
        for key, value in node.value:
            if _tag(key) != _MERGE_TAG:
                continue
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                self.count += 1
                if self.count > MAX_VALUES or depth > MAX_DEPTH:
                    raise self._abort(source, "too many merged values (`<<:`); refusing to expand them")
                if not isinstance(source, MappingNode) or id(source) in active:
                    raise self._abort(source, "`<<:` merges only mappings (or a list of mappings)")
                merged.extend(self._pairs(source, depth + 1, (*active, id(source))))
        return own + merged

    def _mapping(self, node: Any, path: Path, depth: int, active: tuple[int, ...]) -> dict[str, Any]:
        from ruamel.yaml.nodes import ScalarNode

        result: dict[str, Any] = {}
        first: dict[str, int] = {}
        own_count = sum(1 for k, _ in node.value if _tag(k) != _MERGE_TAG)
        for index, (key_node, value_node) in enumerate(self._pairs(node, depth, active)):
            if not isinstance(key_node, ScalarNode):
                line, col = self.mark(key_node)
                self.problems.append(Problem(self.file, line, col, "keys must be plain strings, not "
                                                                   f"{_kind(key_node)}"))
                continue
            key = self._text(key_node)
            if key in result:
                if index < own_count:
                    line, col = self.mark(key_node)
                    self.problems.append(Problem(self.file, line, col,
                                                 f"duplicate key `{key}` (first at line {first[key]}); "
                                                 "remove one of them"))
                continue
            key_line, key_col = self.mark(key_node)
            first[key] = key_line
            line, col = self.mark(value_node)
            self.positions[(*path, key)] = Where(self.file, line, col, key_line, key_col)
            result[key] = self.build(value_node, (*path, key), depth + 1, active)
        return result

    def _scalar(self, node: Any) -> Any:
        tag = _tag(node)
        text = self._text(node)
        if tag == _YAML_TAG + "str" or (tag.startswith(_YAML_TAG) and tag[len(_YAML_TAG):] == "timestamp"):
            return text
        if tag == _YAML_TAG + "null":
            return None
        if tag == _YAML_TAG + "bool":
            return text.lower() in ("true", "yes", "on", "y")
        if tag == _YAML_TAG + "int":
            return _int(text)
        if tag == _YAML_TAG + "float":
            return _float(text)
        self._unsupported_tag(node)
        return text

    def _text(self, node: Any) -> str:
        """The scalar's text; NUL characters and lone surrogates (`"\\ud800"`) are refused."""
        text = str(node.value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            problem = "an escaped surrogate (\\ud800-\\udfff) is not text; write the character itself"
        else:
            if "\x00" not in text:
                return text
            problem = "a NUL character (\\0) is not allowed in text"
        line, col = self.mark(node)
        self.problems.append(Problem(self.file, line, col, problem))
        return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")

    def _unsupported_tag(self, node: Any) -> None:
        tag = _tag(node)
        shown = "!!" + tag[len(_YAML_TAG):] if tag.startswith(_YAML_TAG) else tag
        line, col = self.mark(node)
        self.problems.append(Problem(self.file, line, col,
                                     f"YAML tag {shown} is not supported: harvest files hold plain strings, "
                                     "numbers, booleans, lists and mappings"))


def _tag(node: Any) -> str:
    return str(node.tag) if node.tag is not None else ""


def _int(text: str) -> int | str:
    clean = text.replace("_", "")
    if not _INT.match(text):
        return text
    sign = -1 if clean.startswith("-") else 1
    digits = clean.lstrip("+-")
    try:
        if digits.startswith(("0x", "0o", "0b")):
            return sign * int(digits, 0)
        if len(digits) > 1 and digits.startswith("0"):
            return sign * int(digits, 8)
        return sign * int(digits)
    except ValueError:
        return text


def _float(text: str) -> float | str:
    clean = text.replace("_", "").lower()
    if clean.lstrip("+-") in (".inf", "inf"):
        return -math.inf if clean.startswith("-") else math.inf
    if clean in (".nan", "nan"):
        return math.nan
    try:
        return float(clean)
    except ValueError:
        return text

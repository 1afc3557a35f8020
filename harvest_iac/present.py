"""Plans for people and machines: terminal text (coloured on a TTY), JSON, Markdown.

Pure: takes plans, returns strings. Secret values never reach here (secret resources carry
key names and `plan.SENSITIVE` markers only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from harvest_iac.errors import printable
from harvest_iac.plan import SENSITIVE, Action, Change, Drift, Plan, plan_to_dict

_VERBS = {
    Action.CREATE: "will be created",
    Action.UPDATE: "will be updated in place",
    Action.REPLACE: "must be replaced",
    Action.DELETE: "will be destroyed",
    Action.IMPORT: "will be imported (adopted: it exists but harvest does not manage it yet)",
    Action.FORGET: "will no longer be managed by harvest, but will not be destroyed",
    Action.NOOP: "is unchanged",
}
_COLOURS = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.REPLACE: "magenta",
    Action.DELETE: "red",
    Action.IMPORT: "cyan",
    Action.FORGET: "blue",
    Action.NOOP: "white",
}

Style = Callable[..., str]


def _plain(text: str, **_: Any) -> str:
    return text


def _value(v: Any) -> str:
    if isinstance(v, str):
        if v.startswith("sha256:") and len(v) == 71:
            v = v[:19] + "..."  # digests: enough to tell them apart
        return json.dumps(v)
    if v is None:
        return "null"
    return json.dumps(v, sort_keys=True)


def _attr_lines(change: Change, style: Style) -> list[str]:
    """The attribute lines inside a resource block, Terraform style."""
    lines: list[str] = []
    if change.action in (Action.CREATE, Action.IMPORT) and change.after:
        sym = "+" if change.action is Action.CREATE else " "
        for key in sorted(change.after):
            lines.append(f"      {sym} {key} = {_value(change.after[key])}")
    elif change.action is Action.DELETE and change.before:
        for key in sorted(change.before):
            lines.append(f"      - {key} = {_value(change.before[key])}")
    elif change.action is Action.FORGET and change.before:
        for key in sorted(change.before):
            lines.append(f"        {key} = {_value(change.before[key])}")
    else:
        for f in change.fields:
            if f.before is None:
                lines.append(style(f"      + {f.path} = {_value(f.after)}", fg="green"))
            elif f.after is None:
                lines.append(style(f"      - {f.path} = {_value(f.before)}", fg="red"))
            elif f.before == f.after == SENSITIVE:
                lines.append(style(f"      ~ {f.path} = {SENSITIVE}  # changed", fg="yellow"))
            else:
                forces = "  # forces replacement" if change.action is Action.REPLACE and (
                    change.reason and f.path in change.reason
                ) else ""
                lines.append(
                    style(f"      ~ {f.path} = {_value(f.before)} -> {_value(f.after)}{forces}",
                          fg="yellow")
                )
    return lines


def _change_block(change: Change, style: Style) -> list[str]:
    colour = _COLOURS[change.action]
    moved = f" (moved from {change.previous_address})" if change.previous_address else ""
    head = f"  # {change.address}{moved} {_VERBS[change.action]}"
    out = [style(head, bold=True)]
    if change.reason:
        out.append(f"  # ({printable(change.reason)})")
    sym = change.action.symbol
    out.append(style(f"  {sym} {change.kind} \"{change.name}\" {{", fg=colour))
    out.extend(_attr_lines(change, style))
    out.append("    }")
    for note in change.notes:
        out.append(f"    {printable(note)}")
    if change.blocked:
        out.append(style(f"    BLOCKED: {printable(change.blocked)}", fg="red", bold=True))
    return out


def _drift_block(d: Drift, style: Style) -> list[str]:
    out = [style(f"  # {d.address} {printable(d.what)}", bold=True)]
    for f in d.fields:
        out.append(f"      ~ {f.path} = {_value(f.before)} -> {_value(f.after)}")
    return out


def render_text(plans: Sequence[Plan], *, color: bool = False) -> str:
    """Terminal text for one or more plans."""
    import click

    style: Style = click.style if color else _plain
    out: list[str] = []
    for plan in plans:
        out.append(style(
            f"harvest plan for environment \"{plan.environment}\" (app \"{plan.app}\") "
            f"from {printable(plan.source)}, target {plan.target}", bold=True))
        out.append("")
        if plan.drift:
            out.append(style("Objects have changed outside of harvest:", bold=True))
            out.append("")
            for d in plan.drift:
                out.extend(_drift_block(d, style))
            out.append("")
        for w in plan.warnings:
            out.append(style(f"Warning: {printable(w)}", fg="yellow"))
        if plan.warnings:
            out.append("")
        actionable = plan.actionable
        if not actionable:
            out.append(style("No changes. Your infrastructure matches the configuration.",
                             fg="green", bold=True))
        else:
            out.append("harvest will perform the following actions:")
            out.append("")
            for change in actionable:
                out.extend(_change_block(change, style))
                out.append("")
        if plan.unmanaged:
            out.append(printable(f"Not managed by harvest (left alone): {', '.join(plan.unmanaged)}"))
        if plan.blocked:
            out.append(style(
                f"{len(plan.blocked)} change(s) are blocked by guards and will not be applied "
                "as they stand.", fg="red"))
        if actionable:
            out.append(style(plan.summary.line(), bold=True))
        if plan.notes:
            out.append("")
            out.extend(printable(f"Note: {n}") for n in plan.notes)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_json(plans: Sequence[Plan]) -> str:
    """The JSON form: one plan object, or `{"plans": [...]}` for several files."""
    docs = [plan_to_dict(p) for p in plans]
    data: Any = docs[0] if len(docs) == 1 else {"format_version": docs[0]["format_version"]
                                                if docs else "1.0", "plans": docs}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


#: GitHub's limit on the body of a comment or an issue, in characters.
GITHUB_BODY_LIMIT = 65_536


def marker(kind: str, environments: Sequence[str]) -> str:
    """The hidden first line by which harvest finds its own comment or issue again:
    `<!-- harvest-plan: dev, prod -->` (one per pull request and set of environments)."""
    return f"<!-- {kind}: {', '.join(sorted(set(environments)))} -->"


def render_markdown(plans: Sequence[Plan], *, title: str = "harvest plan", kind: str = "harvest-plan",
                    limit: int | None = None, size: Callable[[str], int] = len,
                    full_plan_at: str = "the job's step summary and the `plan.json` artifact") -> str:
    """For PR comments, issues and $GITHUB_STEP_SUMMARY: a hidden marker, then the summary of
    each environment (with a warning naming what is destroyed), then what changed outside
    harvest, then the details of each environment folded.

    With `limit`, a longer text is cut at a resource boundary (the details last, then the drift
    entries) to fit `size(text) <= limit`, keeping the summary, and says what was cut and that
    the full plan is in `full_plan_at`."""
    layout = _Layout(tuple(plans), title, marker(kind, [p.environment for p in plans]))
    text = layout.compose(layout.units, full_plan_at)
    if limit is None or size(text) <= limit:
        return text
    low, high = 0, layout.units - 1  # the largest number of units kept that fits
    while low < high:
        mid = (low + high + 1) // 2
        if size(layout.compose(mid, full_plan_at)) <= limit:
            low = mid
        else:
            high = mid - 1
    text = layout.compose(low, full_plan_at)
    return text if size(text) <= limit else _hard_cut(text, limit, size)


def _hard_cut(text: str, limit: int, size: Callable[[str], int]) -> str:
    """Last resort when even the summary does not fit: whole lines (always the marker), then a
    note."""
    tail = "\n\n(cut: the summary alone is over the size limit)\n"
    lines = text.splitlines()
    while len(lines) > 1 and size("\n".join(lines) + tail) > limit:
        lines.pop()
    return "\n".join(lines) + tail


class _Layout:
    """The Markdown document, composable with only the first `keep` cuttable units: the drift
    entries then the changed resources, in document order."""

    def __init__(self, plans: tuple[Plan, ...], title: str, marker_line: str) -> None:
        self.plans = plans
        self.title = title
        self.marker_line = marker_line
        self.units = sum(len(p.drift) + len(p.actionable) for p in plans)

    def compose(self, keep: int, full_plan_at: str) -> str:
        budget = [keep]
        cut: dict[tuple[str, str], list[str]] = {}

        def take(plan: Plan, what: str, address: str) -> bool:
            if budget[0] > 0:
                budget[0] -= 1
                return True
            cut.setdefault((plan.environment, what), []).append(address)
            return False

        middle = self._drift(take) + self._warnings()
        bottom = [line for plan in self.plans for line in self._details(plan, take)]
        out = [self.marker_line, *self._summary()]
        if cut:
            out.extend(_cut_note(cut, full_plan_at))
        out.extend(middle)
        out.extend(bottom)
        # Names, notes and drift come from files and from Modal: nothing raw reaches the page.
        return printable("\n".join(out).rstrip() + "\n", keep="\n")

    def _summary(self) -> list[str]:
        out = [f"### {self.title}", "", "| environment | app | file | plan |", "|---|---|---|---|"]
        for p in self.plans:
            line = f"**{p.summary.line()}**" if p.actionable else "No changes."
            if p.blocked:
                line += f" {len(p.blocked)} blocked."
            out.append(f"| `{p.environment}` | `{p.app}` | `{p.source}` | {line} |")
        out.append("")
        destroyed = sum(p.summary.destroy for p in self.plans)
        if destroyed:
            out.append("> [!CAUTION]")
            out.append(f"> **This plan destroys {destroyed}** (deleted, or replaced: deleted then "
                       "created again):")
            for p in self.plans:
                gone = [c for c in p.actionable if c.action in (Action.DELETE, Action.REPLACE)]
                if gone:
                    shown = ", ".join(f"`{c.address}` ({c.action.value})" for c in gone[:10])
                    more = f" and {len(gone) - 10} more" if len(gone) > 10 else ""
                    out.append(f"> - `{p.environment}`: {shown}{more}")
            out.append("")
        blocked = sum(len(p.blocked) for p in self.plans)
        if blocked:
            out.append("> [!WARNING]")
            out.append(f"> {blocked} change(s) are blocked by guards and will not be applied as "
                       "they stand: see the details.")
            out.append("")
        return out

    def _drift(self, take: Callable[[Plan, str, str], bool]) -> list[str]:
        entries: list[str] = []
        for p in self.plans:
            for d in p.drift:
                if take(p, "drift entries", d.address):
                    entries.append(f"- `{p.environment}`: `{d.address}` {d.what}")
                    entries.extend(f"  - `{f.path}`: `{_value(f.before)}` -> `{_value(f.after)}`"
                                   for f in d.fields)
        if not entries:
            return []
        return ["#### Changed outside of harvest", "", *entries, ""]

    def _warnings(self) -> list[str]:
        lines = [f"> - `{p.environment}`: {w}" for p in self.plans for w in p.warnings]
        notes = [f"- `{p.environment}`: {n}" for p in self.plans for n in p.notes]
        return ((["> [!WARNING]", *lines, ""] if lines else [])
                + (["#### Notes", "", *notes, ""] if notes else []))

    def _details(self, plan: Plan, take: Callable[[Plan, str, str], bool]) -> list[str]:
        kept = [c for c in plan.actionable if take(plan, "changes", c.address)]
        if not plan.actionable and not plan.unmanaged:
            return []
        count = len(plan.actionable)
        what = f"{count} change{'s' if count != 1 else ''}" if count else "no changes"
        out = [f"<details><summary>Details: <code>{plan.environment}</code> ({what})</summary>", ""]
        if kept:
            out.append("| | resource | action | notes |")
            out.append("|---|---|---|---|")
            for c in kept:
                notes = "; ".join(([f"**blocked**: {c.blocked}"] if c.blocked else [])
                                  + ([f"moved from `{c.previous_address}`"] if c.previous_address else [])
                                  + ([c.reason] if c.reason else []) + list(c.notes))
                out.append(f"| `{c.action.symbol}` | `{c.address}` | {c.action.value} | "
                           f"{_md_cell(notes)} |")
            out.append("")
            diff = [line for c in kept for line in _diff_lines(c)]
            fence = _fence(diff)
            out.extend([f"{fence}diff", *diff, fence, ""])
        if len(kept) < count:
            out.append(f"({count - len(kept)} of {count} changes cut: see the note at the top.)")
            out.append("")
        if plan.unmanaged:
            out.append(printable(f"Not managed by harvest (left alone): "
                                 f"{', '.join(f'`{u}`' for u in plan.unmanaged)}"))
            out.append("")
        out.extend(["</details>", ""])
        return out


def _cut_note(cut: dict[tuple[str, str], list[str]], full_plan_at: str) -> list[str]:
    parts = [f"`{env}`: {len(addrs)} {what} from `{addrs[0]}` on"
             for (env, what), addrs in sorted(cut.items())]
    return ["> [!NOTE]",
            f"> Cut to fit GitHub's size limit, the summary kept. Not shown: {'; '.join(parts)}. "
            f"The full plan is in {full_plan_at}.", ""]


def _fence(lines: Sequence[str]) -> str:
    """A code fence longer than any run of backticks in the lines it encloses."""
    longest = max((len(run) for line in lines for run in re.findall("`+", line)), default=0)
    return "`" * max(3, longest + 1)


def _md_cell(text: str) -> str:
    return printable(text.replace("|", "\\|").replace("\n", " "))


def _diff_lines(c: Change) -> list[str]:
    """A `diff`-fenced rendering: + and - at column 0 so GitHub colours them."""
    lines: list[str] = []
    prefix = {Action.CREATE: "+", Action.DELETE: "-", Action.REPLACE: "!", Action.UPDATE: "!",
              Action.IMPORT: "#", Action.FORGET: "#"}.get(c.action, " ")
    lines.append(f"{prefix} {c.action.symbol} {c.address}")
    for text in _attr_lines(c, _plain):
        body = text.strip()
        if body.startswith("~"):
            lines.append(f"!     {body}")
        elif body.startswith("-"):
            lines.append(f"-     {body[1:].strip()}")
        elif body.startswith("+"):
            lines.append(f"+     {body[1:].strip()}")
        else:
            lines.append(f"      {body}")
    return lines


RENDERERS: dict[str, Callable[[Sequence[Plan]], str]] = {
    "json": render_json,
    "markdown": render_markdown,
    "text": render_text,
}

"""Plans for people and machines: terminal text (coloured on a TTY), JSON, Markdown.

Pure: takes plans, returns strings. Secret values never reach here (secret resources carry
key names and `plan.SENSITIVE` markers only).
"""

from __future__ import annotations

import json
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
    Action.NOOP: "is unchanged",
}
_COLOURS = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.REPLACE: "magenta",
    Action.DELETE: "red",
    Action.IMPORT: "cyan",
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
    head = f"  # {change.address} {_VERBS[change.action]}"
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
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_json(plans: Sequence[Plan]) -> str:
    """The JSON form: one plan object, or `{"plans": [...]}` for several files."""
    docs = [plan_to_dict(p) for p in plans]
    data: Any = docs[0] if len(docs) == 1 else {"format_version": docs[0]["format_version"]
                                                if docs else "1.0", "plans": docs}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def render_markdown(plans: Sequence[Plan]) -> str:
    """For PR comments and $GITHUB_STEP_SUMMARY: a summary table and the details folded."""
    out: list[str] = ["<!-- harvest-plan -->"]
    for plan in plans:
        out.append(f"### harvest plan: `{plan.environment}` (app `{plan.app}`)")
        out.append("")
        actionable = plan.actionable
        out.append(f"**{plan.summary.line()}**" if actionable else "**No changes.**")
        out.append("")
        if plan.drift:
            out.append(":warning: **Changed outside of harvest:**")
            out.append("")
            for d in plan.drift:
                out.append(f"- `{d.address}` {printable(d.what)}")
            out.append("")
        for w in plan.warnings:
            out.append(f"> :warning: {printable(w)}")
        if plan.warnings:
            out.append("")
        if actionable:
            out.append("| | resource | action | notes |")
            out.append("|---|---|---|---|")
            for c in actionable:
                notes = "; ".join(([f"**blocked**: {c.blocked}"] if c.blocked else [])
                                  + ([c.reason] if c.reason else []) + list(c.notes))
                out.append(f"| `{c.action.symbol}` | `{c.address}` | {c.action.value} | "
                           f"{_md_cell(notes)} |")
            out.append("")
            out.append("<details><summary>Details</summary>")
            out.append("")
            out.append("```diff")
            for c in actionable:
                out.extend(_diff_lines(c))
            out.append("```")
            out.append("")
            out.append("</details>")
            out.append("")
        if plan.unmanaged:
            out.append(printable(f"Not managed by harvest (left alone): "
                                 f"{', '.join(f'`{u}`' for u in plan.unmanaged)}"))
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md_cell(text: str) -> str:
    return printable(text.replace("|", "\\|").replace("\n", " "))


def _diff_lines(c: Change) -> list[str]:
    """A `diff`-fenced rendering: + and - at column 0 so GitHub colours them."""
    lines: list[str] = []
    prefix = {Action.CREATE: "+", Action.DELETE: "-", Action.REPLACE: "!", Action.UPDATE: "!",
              Action.IMPORT: "#"}.get(c.action, " ")
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

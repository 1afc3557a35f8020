"""Rendering the Modal app module: golden files, literal-only values (injection), identifiers,
determinism across PYTHONHASHSEED, errors that name the template, and the `render` verb."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import modal
import pytest

from harvest_iac.errors import HarvestError
from harvest_iac.loader import load_file
from harvest_iac.naming import function_tag, snapshot_image_name
from harvest_iac.render import (
    app_code_hash,
    identifiers,
    py_literal,
    render_app,
    render_code,
    write_rendered,
)
from tests.conftest import REPO
from tests.golden import check_golden
from tests.render.specs import HOSTILE, HOSTILE_RUN, kitchen_sink, spec_of

GOLDEN = Path(__file__).parent / "golden"
PWNED = Path("/tmp/harvest-pwned")


def import_module(path: Path, name: str) -> ModuleType:
    """Import a generated module from its file (it imports the real modal package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calls(code: str, name: str) -> list[ast.Call]:
    """Every call `name(...)` or `<something>.name(...)` in the code."""
    return [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and (
        isinstance(n.func, ast.Attribute) and n.func.attr == name
        or isinstance(n.func, ast.Name) and n.func.id == name)]


# -- golden files ----------------------------------------------------------------------
@pytest.mark.parametrize("env", ["dev", "prod"])
def test_golden_repo_environments(env: str) -> None:
    rendered = render_app(load_file(REPO / "environments" / f"{env}.yaml").spec)
    assert rendered.module_name == "harvest_agents"
    check_golden(GOLDEN / f"{env}.app.py.golden", rendered.code)


def test_golden_every_feature() -> None:
    check_golden(GOLDEN / "kitchen_sink.app.py.golden", render_app(spec_of(kitchen_sink())).code)


def test_code_hash_is_the_sha256_of_the_code(tmp_path: Path) -> None:
    spec = spec_of(kitchen_sink())
    rendered = render_app(spec)
    assert rendered.code_hash == "sha256:" + hashlib.sha256(rendered.code.encode()).hexdigest()
    assert app_code_hash(spec) == rendered.code_hash
    path = write_rendered(rendered, tmp_path / "out")
    assert path == tmp_path / "out" / "kitchen_sink.py"
    assert path.read_bytes() == rendered.code.encode()
    # Any change of what is deployed changes the hash.
    data = kitchen_sink()
    data["crons"]["refresh-environment"]["timeout"] = "11m"
    assert app_code_hash(spec_of(data)) != rendered.code_hash


# -- every YAML string is a literal ----------------------------------------------------
def test_hostile_strings_arrive_byte_for_byte_in_the_code() -> None:
    code = render_app(spec_of(kitchen_sink())).code
    assert code.isascii()
    runs = [[ast.literal_eval(a) for a in c.args] for c in calls(code, "run_commands")]
    assert sorted(runs) == sorted([["echo built > /built.txt"], HOSTILE_RUN])
    envs = [ast.literal_eval(c.args[0]) for c in calls(code, "env")]
    assert sorted(envs, key=repr) == sorted(
        [{"PYTHONUNBUFFERED": "1", "MODE": "it's \"quoted\""}, {"HOSTILE": HOSTILE[2]}], key=repr)
    [command] = [ast.literal_eval(c.args[0]) for c in calls(code, "_run_command")]
    assert command == ["python", "-c", HOSTILE[4], *HOSTILE]


def test_importing_the_module_runs_nothing_from_the_yaml(tmp_path: Path) -> None:
    PWNED.unlink(missing_ok=True)
    spec = spec_of(kitchen_sink())
    module = import_module(write_rendered(render_app(spec), tmp_path), "kitchen_sink_import")
    assert not PWNED.exists()
    assert module.SNAPSHOTS["warm"]["setup"] == list(spec.snapshots["warm"].setup)
    assert module.SNAPSHOTS["warm"]["published_name"] == snapshot_image_name("warm")
    assert module.SNAPSHOTS["warm"]["image"] is module.image_tools
    assert module.SNAPSHOTS["warm"]["volumes"] == {"/mnt/shared": module.volume_agent_state}
    assert list(module.IMAGES) == spec.image_order()
    assert (module.APP_NAME, module.ENVIRONMENT) == ("kitchen-sink", "staging")


def test_a_command_job_receives_its_argv_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    probe = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    data = kitchen_sink()
    argv = [h for h in HOSTILE if "\x00" not in h]  # the OS refuses NUL in arguments
    data["crons"] = {"probe": {"every": "1h", "command": [sys.executable, "-c", probe, str(out), *argv]}}
    module = import_module(write_rendered(render_app(spec_of(data)), tmp_path), "kitchen_sink_probe")
    module.cron_probe.local()
    assert json.loads(out.read_text()) == argv
    assert not PWNED.exists()


def test_a_failing_command_job_fails_the_call(tmp_path: Path) -> None:
    data = kitchen_sink()
    data["crons"] = {"fails": {"every": "1h", "command": [sys.executable, "-c", "raise SystemExit(3)"]}}
    module = import_module(write_rendered(render_app(spec_of(data)), tmp_path), "kitchen_sink_fails")
    with pytest.raises(RuntimeError, match="exited with status 3"):
        module.cron_fails.local()


@pytest.mark.parametrize("value", [*HOSTILE, "", "\ud800", 0, -1, 2.5, True, None,
                                   ["a", {"b": [1, "c'\""]}], {"k\n": "v\\"}])
def test_literals_evaluate_to_the_value(value: Any) -> None:
    literal = py_literal(value)
    assert literal.isascii() and "\n" not in literal
    assert ast.literal_eval(literal) == value


def test_literals_refuse_what_is_not_data() -> None:
    for bad in (float("nan"), object(), {1, 2}):
        with pytest.raises(HarvestError):
            py_literal(bad)


# -- identifiers ------------------------------------------------------------------------
def test_names_become_distinct_identifiers_and_modal_keeps_the_names(tmp_path: Path) -> None:
    ids = identifiers("cron_", ["a-b", "a_b", "a.b", "a_b_2", "9lives"])
    assert ids == {"9lives": "cron_9lives", "a-b": "cron_a_b", "a.b": "cron_a_b_2",
                   "a_b": "cron_a_b_3", "a_b_2": "cron_a_b_2_2"}
    assert len(set(ids.values())) == len(ids) and all(i.isidentifier() for i in ids.values())
    data = kitchen_sink()
    code = render_app(spec_of(data)).code
    module = import_module(write_rendered(render_app(spec_of(data)), tmp_path), "kitchen_sink_names")
    decorated = {kw.value.value: fn.name for fn in ast.parse(code).body if isinstance(fn, ast.FunctionDef)
                 for dec in fn.decorator_list if isinstance(dec, ast.Call)
                 for kw in dec.keywords if kw.arg == "name" and isinstance(kw.value, ast.Constant)}
    tags = sorted([function_tag("cron", n) for n in data["crons"]]
                  + [function_tag("sandbox", n) for n in data["sandboxes"]])
    assert sorted(decorated) == tags
    assert decorated["refresh-environment"] != decorated["refresh_environment"]
    assert all(isinstance(getattr(module, ident), modal.Function) for ident in decorated.values())


def test_two_resources_deploying_one_function_name_are_refused() -> None:
    data = kitchen_sink()
    data["crons"]["sandbox-agent"] = {"every": "1h", "task": "reload-volumes"}
    with pytest.raises(HarvestError, match=r"cron\.sandbox-agent and sandbox\.agent would both deploy "
                                           r"the Modal function 'sandbox-agent'"):
        render_app(spec_of(data))


# -- determinism ------------------------------------------------------------------------
def test_rendering_is_byte_identical_under_any_hash_seed() -> None:
    script = textwrap.dedent("""
        import hashlib, sys
        from harvest_iac.loader import load_file
        from harvest_iac.render import render_app
        from tests.render.specs import kitchen_sink, spec_of
        codes = [render_app(spec_of(kitchen_sink())).code,
                 render_app(load_file('environments/prod.yaml').spec).code]
        print(hashlib.sha256('\\0'.join(codes).encode()).hexdigest())
    """)
    outputs = set()
    for seed in ("0", "4242"):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60, check=True)
        outputs.add(proc.stdout.strip())
    assert len(outputs) == 1
    spec = spec_of(kitchen_sink())
    assert outputs == {hashlib.sha256("\0".join([
        render_app(spec).code,
        render_app(load_file(REPO / "environments" / "prod.yaml").spec).code]).encode()).hexdigest()}


# -- template errors name the template --------------------------------------------------
def _templates(tmp_path: Path, text: str) -> Path:
    (tmp_path / "app.py.j2").write_text(text)
    return tmp_path


@pytest.mark.parametrize("text, message", [
    ("APP = {{ spec.app }}\n", r"templates/app\.py\.j2:1: .*without the `py` filter"),
    ("APP = {{ spec.nope | py }}\n", r"templates/app\.py\.j2:1: .*nope"),
    ("{% for x in %}\n", r"templates/app\.py\.j2:1: "),
    ("def (:\n    {{ spec.app | py }}\n", r"templates/app\.py\.j2 rendered invalid Python at line 1"),
])
def test_template_errors_are_harvest_errors_naming_the_template(tmp_path: Path, text: str,
                                                                message: str) -> None:
    with pytest.raises(HarvestError, match=message):
        render_code(spec_of(kitchen_sink()), templates_dir=_templates(tmp_path, text))


def test_snapshot_image_names_fit_modal_and_stay_distinct() -> None:
    assert snapshot_image_name("warm") == "harvest-snapshot-warm"
    long_a, long_b = "a" * 63 + "x", "a" * 63 + "y"
    names = {snapshot_image_name(long_a), snapshot_image_name(long_b)}
    assert len(names) == 2 and all(len(n) <= 64 for n in names)
    assert snapshot_image_name(long_a) == snapshot_image_name(long_a)


# -- the `render` verb ------------------------------------------------------------------
def _harvest(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    script = ("import sys\nfrom harvest_iac.cli import cli\n"
              "try:\n    cli(sys.argv[1:], prog_name='harvest')\n"
              "finally:\n    sys.stderr.write('modal imported: %s' % ('modal' in sys.modules))\n")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def test_render_verb_prints_one_environment_without_importing_modal() -> None:
    proc = _harvest("render", "environments/dev.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == render_app(load_file(REPO / "environments" / "dev.yaml").spec).code
    assert "modal imported: False" in proc.stderr


def test_render_verb_writes_each_environment(tmp_path: Path) -> None:
    proc = _harvest("render", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for env in ("dev", "prod"):
        path = tmp_path / env / "harvest_agents.py"
        rendered = render_app(load_file(REPO / "environments" / f"{env}.yaml").spec)
        assert path.read_text() == rendered.code
        assert f"Wrote {path} ({rendered.code_hash})" in proc.stdout
    proc = _harvest("render")
    assert proc.returncode == 1
    assert "name one file" in proc.stderr and "Traceback" not in proc.stderr


def test_a_module_rewritten_in_the_same_second_to_the_same_size_runs_its_new_code(
        tmp_path: Path) -> None:
    """Python trusts a cached .pyc while its source keeps its size and whole-second mtime:
    the rewritten module must not run the bytecode of the one it replaced."""
    from harvest_iac.render import RenderedApp

    def write_and_import(code: str, mtime: int) -> str:
        path = write_rendered(RenderedApp("stale_check", code, ""), tmp_path)
        os.utime(path, (mtime, mtime))
        return subprocess.run(
            [sys.executable, "-c", "import stale_check; print(stale_check.EVERY)"], cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            capture_output=True, text=True, check=True).stdout.strip()

    assert write_and_import('EVERY = "*/30"\n', 1_700_000_000) == "*/30"
    assert any((tmp_path / "__pycache__").glob("stale_check.*.pyc"))
    assert write_and_import('EVERY = "*/20"\n', 1_700_000_000) == "*/20"

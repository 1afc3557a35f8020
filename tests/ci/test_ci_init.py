"""`harvest ci init`: the three workflows, golden-tested, checked by actionlint and zizmor, and
never overwritten without --force."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from harvest_iac.ci import PINS, WORKFLOWS
from tests.conftest import REPO
from tests.golden import check_golden
from tests.integration.helpers import harvest

GOLDEN = Path(__file__).parent / "golden"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository with this repository's environment files."""
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    return tmp_path


def init(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return harvest("ci", "init", *args, cwd=project)


def test_workflows_golden(project: Path) -> None:
    proc = init(project)
    assert proc.returncode == 0, proc.stderr
    workflows = project / ".github" / "workflows"
    assert proc.stdout == "".join(f"created {Path('.github/workflows') / name}\n" for name in WORKFLOWS) + (
        "Add these repository secrets: HARVEST_GITHUB_TOKEN, HARVEST_STATE_KEY, MODAL_TOKEN_ID, "
        "MODAL_TOKEN_SECRET, "
        "OPENAI_API_KEY\n")
    for name in WORKFLOWS:
        check_golden(GOLDEN / name, (workflows / name).read_text())


def test_workflows_are_the_same_under_any_hash_seed(project: Path) -> None:
    texts = set()
    for seed in ("0", "1", "12345"):
        out = project / f"out-{seed}"
        proc = harvest("ci", "init", "--dir", str(out), cwd=project, env={"PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        texts.add(tuple((out / name).read_text() for name in WORKFLOWS))
    assert len(texts) == 1


def test_what_the_workflows_do(project: Path) -> None:
    assert init(project, "--branch", "trunk", "--install", ".").returncode == 0
    docs = {name: YAML(typ="safe").load((project / ".github/workflows" / name).read_text())
            for name in WORKFLOWS}
    plan, apply, drift = (docs[n] for n in WORKFLOWS)
    assert plan["on"] == {"pull_request": {"paths": ["environments/**", "templates/**"]}}
    assert apply["on"]["push"] == {"branches": ["trunk"],
                                   "paths": ["environments/**", "templates/**"]}
    assert drift["on"] == {"schedule": [{"cron": "23 */6 * * *"}], "workflow_dispatch": None}
    for doc in docs.values():
        assert doc["permissions"] == {}
    assert plan["jobs"]["plan"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert apply["jobs"]["apply"]["permissions"] == {"contents": "read", "pull-requests": "read",
                                                     "actions": "read"}
    assert drift["jobs"]["drift"]["permissions"] == {"contents": "read", "issues": "write"}

    runs = {name: [s.get("run") for s in doc["jobs"][next(iter(doc["jobs"]))]["steps"]]
            for name, doc in docs.items()}
    assert runs["harvest-plan.yml"][2:] == [
        "python -m pip install .", "harvest validate environments",
        "harvest plan environments --target modal --comment -o plan.json", None]
    assert runs["harvest-apply.yml"][-1] == (
        'if [ -n "$HARVEST_REVIEWED" ]; then set -- --reviewed "$HARVEST_REVIEWED"; fi\n'
        'harvest apply "$HARVEST_FILE" "$@" --target modal --auto-approve --lock-timeout 10m\n')
    assert runs["harvest-drift.yml"][-1] == (
        'harvest drift environments --target modal --issue || test "$?" -eq 2')
    upload = plan["jobs"]["plan"]["steps"][-1]
    assert upload["with"] == {"name": "harvest-plan", "path": "plan.json", "if-no-files-found": "ignore"}
    # the apply job downloads what the merged pull request's plan run uploaded, and applies it
    # with --reviewed; with no reviewed plan it fails unless the repository opts out
    reviewed, *_, last = apply["jobs"]["apply"]["steps"]
    assert reviewed["id"] == "reviewed" and runs["harvest-apply.yml"][0] == reviewed["run"]
    script = reviewed["run"]
    assert 'gh api "repos/$GITHUB_REPOSITORY/commits/$GITHUB_SHA/pulls"' in script
    assert "--workflow harvest-plan.yml --commit \"$head\"" in script
    assert "gh run download \"$run\" --repo \"$GITHUB_REPOSITORY\" --name harvest-plan" in script
    assert 'echo "plan=$RUNNER_TEMP/reviewed/plan.json" >> "$GITHUB_OUTPUT"' in script
    assert 'if [ "$HARVEST_APPLY_UNREVIEWED" = true ]' in script and "exit 1" in script
    assert reviewed["env"] == {"GH_TOKEN": "${{ github.token }}",
                               "HARVEST_APPLY_UNREVIEWED": "${{ vars.HARVEST_APPLY_UNREVIEWED }}"}
    assert last["env"]["HARVEST_REVIEWED"] == "${{ steps.reviewed.outputs.plan }}"

    job = apply["jobs"]["apply"]
    assert job["strategy"]["matrix"]["include"] == [
        {"environment": "dev", "file": "environments/dev.yaml"},
        {"environment": "prod", "file": "environments/prod.yaml"}]
    assert job["concurrency"] == {"group": "harvest-apply-${{ matrix.environment }}",
                                  "cancel-in-progress": False}
    for doc in docs.values():
        for step in doc["jobs"][next(iter(doc["jobs"]))]["steps"]:
            if "uses" in step:
                action, _, sha = step["uses"].partition("@")
                assert len(sha) == 40 and sha in {p.sha for p in PINS.values()}, step
            assert "${{" not in (step.get("run") or ""), step  # values reach scripts via env
            for name, value in (step.get("env") or {}).items():
                if name not in ("GITHUB_TOKEN", "HARVEST_FILE", "GH_TOKEN", "HARVEST_REVIEWED",
                                "HARVEST_APPLY_UNREVIEWED"):
                    assert value == f"${{{{ secrets.{name} }}}}"


def lint(workflows: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    files = sorted(str(p) for p in workflows.glob("*.yml"))
    actionlint = subprocess.run([tool("actionlint"), "-no-color", f"-shellcheck={tool('shellcheck')}",
                                 *files],
                                capture_output=True, text=True, timeout=120)
    zizmor = subprocess.run(
        [tool("zizmor"), "--offline", "--persona", "pedantic", "--no-progress", "--color", "never",
         "--config", str(Path(__file__).parent / "zizmor.yml"), *files],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    return actionlint, zizmor


def test_actionlint_and_zizmor_find_nothing(project: Path) -> None:
    assert init(project).returncode == 0
    actionlint, zizmor = lint(project / ".github" / "workflows")
    assert actionlint.returncode == 0, actionlint.stdout + actionlint.stderr
    assert zizmor.returncode == 0, zizmor.stdout + zizmor.stderr
    assert "No findings to report" in zizmor.stdout + zizmor.stderr


def test_the_linters_do_catch_what_ci_init_avoids(tmp_path: Path) -> None:
    """The check above can fail: an unpinned action and a PR title in a script are caught."""
    (tmp_path / "bad.yml").write_text(
        "name: bad\non: pull_request\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
        '      - run: gh run download $RUN\n')
    actionlint, zizmor = lint(tmp_path)
    assert actionlint.returncode != 0 and "potentially untrusted" in actionlint.stdout
    assert "SC2086" in actionlint.stdout  # shellcheck runs on the scripts
    assert zizmor.returncode != 0
    assert "template-injection" in zizmor.stdout and "unpinned-uses" in zizmor.stdout


def test_existing_files_are_never_overwritten_without_force(project: Path) -> None:
    workflows = project / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "harvest-drift.yml").write_text("# ours\n")
    refused = init(project)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (f"Error: {Path('.github/workflows/harvest-drift.yml')} already "
                              "exists with other content; nothing was written. Pass --force to "
                              "overwrite\n")
    assert sorted(p.name for p in workflows.iterdir()) == ["harvest-drift.yml"]
    assert (workflows / "harvest-drift.yml").read_text() == "# ours\n"
    forced = init(project, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "overwrote .github/workflows/harvest-drift.yml" in forced.stdout
    again = init(project)
    assert again.returncode == 0
    assert again.stdout.count("unchanged ") == 3


def test_variables_ci_cannot_provide_are_reported(project: Path) -> None:
    prod = project / "environments" / "prod.yaml"
    text = prod.read_text()
    (project / "environments" / "dev.yaml").write_text(
        "harvest: 1\nenvironment: dev\napp: a\nsecrets:\n  local:\n    from_dotenv: .env\n")
    prod.write_text(text + "\nsecrets:\n  gh:\n    from_env: {TOKEN: GITHUB_TOKEN}\n")
    refused = init(project)
    assert refused.returncode == 1
    assert ("secret 'gh' reads GITHUB_TOKEN, but GitHub refuses secrets named GITHUB_*: rename "
            "the variable") in refused.stderr
    assert not (project / ".github").exists()
    prod.write_text(text)
    warned = init(project)
    assert warned.returncode == 0, warned.stderr
    assert warned.stderr == ("Warning: environments/dev.yaml: secret 'local' reads a dotenv "
                             "file, which CI does not have: use `from_env` for what CI applies\n")


def test_the_wheel_ships_every_template() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = {Path(f).relative_to("templates").as_posix()
               for patterns in config["tool"]["setuptools"]["data-files"].values()
               for pattern in patterns for f in glob.glob(pattern, root_dir=REPO)}
    present = {p.relative_to(REPO / "templates").as_posix()
               for p in (REPO / "templates").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped == present

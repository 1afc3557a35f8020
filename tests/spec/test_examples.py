"""The example environments in environments/ validate, and differ where dev and prod should."""

from __future__ import annotations

from pathlib import Path

from harvest_iac.loader import LoadedEnvironment, check_paths, load_file, load_paths

ENVIRONMENTS = Path(__file__).resolve().parents[2] / "environments"


def _by_name() -> dict[str, LoadedEnvironment]:
    return {e.spec.environment: e for e in load_paths([ENVIRONMENTS])}


def test_the_folder_holds_two_environments_and_a_base_file() -> None:
    reports = {r.path.name: r for r in check_paths([ENVIRONMENTS])}
    assert sorted(reports) == ["base.yaml", "dev.yaml", "prod.yaml"]
    assert reports["base.yaml"].environment is None
    assert [p.name for p in reports["base.yaml"].extended_by] == ["dev.yaml", "prod.yaml"]
    assert sorted(_by_name()) == ["dev", "prod"]


def test_the_harvest_platform_as_the_issue_describes_it() -> None:
    for env in _by_name().values():
        spec = env.spec
        assert spec.app == "harvest-agents"
        base = spec.images["base"]
        assert (base.base, base.python) == ("debian_slim", "3.11")
        assert base.apt == ["git", "curl", "build-essential"]
        assert base.pip == ["requests", "numpy", "pandas"]
        assert spec.images["agent"].parent == "base"  # the frequently changing layer comes last
        assert spec.volumes["agent-state"].version == 2
        assert spec.sandboxes["agent"].volumes == {"/mnt/shared": "agent-state"}
        assert all(s.from_env for s in spec.secrets.values())  # read from CI variables
        assert spec.snapshots["warm"].image == "agent"
        cron = spec.crons["refresh-environment"]
        assert (cron.schedule, cron.timezone, cron.task) == ("*/30 * * * *", "UTC", "refresh-snapshots")
        assert cron.retries is not None and cron.retries.max_retries == 3
        assert env.files[-1].name == "base.yaml"


def test_dev_is_cheap_and_disposable_and_prod_is_protected_and_bigger() -> None:
    envs = _by_name()
    dev, prod = envs["dev"].spec, envs["prod"].spec
    assert dev.volumes["agent-state"].protect is False
    assert prod.volumes["agent-state"].protect is True
    agent = dev.sandboxes["agent"]
    assert (agent.cpu, agent.memory, agent.timeout) == (0.5, 1024, 3600)
    assert prod.sandboxes["agent"].cpu > agent.cpu and prod.sandboxes["agent"].memory > agent.memory
    assert dev.snapshots["warm"].keep < prod.snapshots["warm"].keep
    assert prod.crons["refresh-environment"].retries.backoff_coefficient > 1.0  # type: ignore[union-attr]


def test_load_file_of_an_environment_and_of_a_base_file() -> None:
    assert load_file(ENVIRONMENTS / "prod.yaml").spec.environment == "prod"
    try:
        load_file(ENVIRONMENTS / "base.yaml")
    except Exception as exc:
        assert "base file" in str(exc)
    else:
        raise AssertionError("a base file loaded as an environment")


def test_locate_points_at_the_file_that_declares_the_thing() -> None:
    prod = _by_name()["prod"]
    base_text = (ENVIRONMENTS / "base.yaml").read_text().splitlines()
    prod_text = (ENVIRONMENTS / "prod.yaml").read_text().splitlines()

    def text_at(address: str) -> str:
        file, line, col = prod.locate(address)
        lines = base_text if file.endswith("base.yaml") else prod_text
        return lines[line - 1][col - 1:]

    assert text_at("image.base").startswith("base:")
    assert text_at("secret.openai").startswith("openai:")
    assert text_at("secret.openai.from_env.OPENAI_API_KEY").startswith("OPENAI_API_KEY]")
    assert text_at("secret.github.from_env.GITHUB_TOKEN").startswith("GITHUB_TOKEN: HARVEST_GITHUB_TOKEN")
    assert text_at("secret.github.from_env.HARVEST_GITHUB_TOKEN").startswith("GITHUB_TOKEN: HARVEST_GITHUB_TOKEN")
    assert text_at("snapshot.warm").startswith("warm:")
    assert text_at("sandbox.agent.cpu").startswith("cpu: 1.0")
    assert text_at("cron.refresh-environment").startswith("refresh-environment:")
    assert text_at("volume.agent-state").startswith("agent-state:")
    assert text_at("environment").startswith("environment: prod")
    assert prod.locate("volume.agent-state")[0].endswith("prod.yaml")  # prod overrides it
    assert prod.locate("image.base")[0].endswith("base.yaml")
    problem = prod.problem("secret.openai.from_env.OPENAI_API_KEY", "OPENAI_API_KEY is not set")
    assert str(problem).endswith(": OPENAI_API_KEY is not set") and "base.yaml:" in str(problem)


def test_locate_falls_back_to_the_nearest_known_place() -> None:
    prod = _by_name()["prod"]
    assert prod.locate("cron.refresh-environment.no-such-field") == prod.locate("cron.refresh-environment")
    file, line, col = prod.locate("volume.not-declared")
    assert file.endswith("prod.yaml")

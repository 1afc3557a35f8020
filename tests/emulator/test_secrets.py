"""Secrets in the local Modal, driven by the real `modal` CLI and SDK."""

from __future__ import annotations

import json
import logging

import modal
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from tests.conftest import modal_cli, raw_rpc


def _keys(name: str, env: str) -> set[str]:
    secret = modal.Secret.from_name(name, environment_name=env)
    secret.hydrate()
    return set(secret._get_keys())  # type: ignore[attr-defined]


def test_cli_create_list_force_delete(modal_environment: str) -> None:
    env = modal_environment
    modal_cli("secret", "create", "api", "TOKEN=s3cr3t-one", "USER=me", "--env", env)
    listed_text = modal_cli("secret", "list", "--env", env, "--json").stdout
    assert [row["name"] for row in json.loads(listed_text)] == ["api"]
    assert "s3cr3t-one" not in listed_text

    again = modal_cli("secret", "create", "api", "TOKEN=x", "--env", env, check=False)
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr

    before = modal.Secret.from_name("api", environment_name=env).hydrate().object_id
    modal_cli("secret", "create", "api", "OTHER=v", "--env", env, "--force")
    assert _keys("api", env) == {"OTHER"}
    assert modal.Secret.from_name("api", environment_name=env).hydrate().object_id == before

    modal_cli("secret", "delete", "api", "--env", env, "--yes")
    assert json.loads(modal_cli("secret", "list", "--env", env, "--json").stdout) == []
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name("api", environment_name=env).hydrate()


def test_sdk_create_list_update_delete(modal_environment: str) -> None:
    env = modal_environment
    modal.Secret.objects.create("db", {"HOST": "h", "PASSWORD": "p"}, environment_name=env)
    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Secret.objects.create("db", {"HOST": "h2"}, environment_name=env)
    modal.Secret.objects.create("db", {"NEW": "ignored"}, environment_name=env, allow_existing=True)
    assert _keys("db", env) == {"HOST", "PASSWORD"}

    secret = modal.Secret.from_name("db", environment_name=env)
    secret.update({"PORT": "5432", "HOST": "h3"})
    assert _keys("db", env) == {"HOST", "PASSWORD", "PORT"}
    info = secret.info()
    assert info.name == "db" and info.environment_name == env

    modal.Secret.objects.create("other", {"A": "1"}, environment_name=env)
    listed = modal.Secret.objects.list(environment_name=env)
    assert [s.name for s in listed] == ["other", "db"]  # newest first
    assert [s.name for s in modal.Secret.objects.list(environment_name=env, max_objects=1)] == ["other"]

    modal.Secret.objects.delete("db", environment_name=env)
    modal.Secret.objects.delete("db", environment_name=env, allow_missing=True)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.objects.delete("db", environment_name=env)
    assert [s.name for s in modal.Secret.objects.list(environment_name=env)] == ["other"]


def test_required_keys_are_checked_by_the_server(modal_environment: str) -> None:
    env = modal_environment
    modal.Secret.objects.create("svc", {"A": "1", "B": "2"}, environment_name=env)
    modal.Secret.from_name("svc", environment_name=env, required_keys=["A", "B"]).hydrate()
    with pytest.raises(modal.exception.NotFoundError) as err:
        modal.Secret.from_name("svc", environment_name=env, required_keys=["A", "C", "D"]).hydrate()
    assert "missing required key(s): C, D" in str(err.value)


def test_secrets_are_scoped_per_environment(modal_environment: str) -> None:
    modal.Secret.objects.create("scoped", {"K": "v"}, environment_name=modal_environment)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Secret.from_name("scoped", environment_name="main").hydrate()
    modal.Environment.objects.delete(modal_environment)
    modal.Environment.objects.create(modal_environment)
    assert modal.Secret.objects.list(environment_name=modal_environment) == []


def test_bad_names_are_refused_by_the_server(local_modal: object) -> None:
    for bad in ("has space", "x" * 65, "ap-" + "a" * 22, ""):
        req = api_pb2.SecretGetOrCreateRequest(
            deployment_name=bad,
            object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
            env_dict={"K": "v"},
        )
        with pytest.raises(GRPCError) as err:
            raw_rpc("SecretGetOrCreate", req)
        assert err.value.status == Status.INVALID_ARGUMENT, bad


def test_values_never_leave_the_server_or_reach_the_logs(
    modal_environment: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = modal_environment
    value = "do-not-leak-3f9a1c"
    caplog.set_level(logging.DEBUG, logger="harvest.emulator")
    modal.Secret.objects.create("leak", {"PASSWORD": value}, environment_name=env)
    resp = raw_rpc(
        "SecretGetOrCreate",
        api_pb2.SecretGetOrCreateRequest(deployment_name="leak", environment_name=env),
    )
    assert value.encode() not in resp.SerializeToString()  # type: ignore[attr-defined]
    listed = raw_rpc("SecretList", api_pb2.SecretListRequest(environment_name=env))
    assert value.encode() not in listed.SerializeToString()  # type: ignore[attr-defined]
    assert list(resp.metadata.keys) == ["PASSWORD"]  # type: ignore[attr-defined]
    assert value not in caplog.text


def test_anonymous_secret_from_dict_is_not_listed(modal_environment: str) -> None:
    req = api_pb2.SecretGetOrCreateRequest(
        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
        env_dict={"K": "v"},
        environment_name=modal_environment,
    )
    resp = raw_rpc("SecretGetOrCreate", req)
    assert resp.secret_id.startswith("st-")  # type: ignore[attr-defined]
    assert modal.Secret.objects.list(environment_name=modal_environment) == []

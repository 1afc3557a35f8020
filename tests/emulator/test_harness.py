"""The emulator's harness: auth, UNIMPLEMENTED, environments, idempotency, fault injection."""

from __future__ import annotations

import modal
import pytest

from tests.conftest import modal_cli, raw_rpc


def test_environment_create_list_delete_with_cli(local_modal: object) -> None:
    modal_cli("environment", "create", "harness-env")
    out = modal_cli("environment", "list", "--json").stdout
    assert '"harness-env"' in out
    again = modal_cli("environment", "create", "harness-env", check=False)
    assert again.returncode != 0
    assert "already exists" in (again.stdout + again.stderr)
    modal_cli("environment", "delete", "harness-env", "--yes")
    assert '"harness-env"' not in modal_cli("environment", "list", "--json").stdout


def test_environment_sdk(modal_environment: str) -> None:
    names = [e.name for e in modal.Environment.objects.list()]
    assert modal_environment in names and "main" in names


def test_bad_environment_name_is_refused_by_the_server(local_modal: object) -> None:
    """The client checks names too; send the RPC directly to prove the server does."""
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError
    from modal_proto import api_pb2

    with pytest.raises(GRPCError) as err:
        raw_rpc("EnvironmentCreate", api_pb2.EnvironmentCreateRequest(name="en-nope"))
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "Invalid environment name" in str(err.value.message)


def test_idempotency_key_replays_the_first_answer(local_modal: object) -> None:
    """The same idempotency key twice: one effect, the second call answered from cache."""
    from modal_proto import api_pb2

    md = {"x-idempotency-key": "key-env-once"}
    raw_rpc("EnvironmentCreate", api_pb2.EnvironmentCreateRequest(name="once-env"), metadata=md)
    raw_rpc("EnvironmentCreate", api_pb2.EnvironmentCreateRequest(name="once-env"), metadata=md)
    names = [e.name for e in modal.Environment.objects.list()]
    assert names.count("once-env") == 1


def test_wrong_token_is_refused(local_modal: object) -> None:
    proc = modal_cli("environment", "list", check=False,
                     env_extra={"MODAL_TOKEN_SECRET": "as-wrong"})
    assert proc.returncode != 0
    assert "Invalid token" in (proc.stdout + proc.stderr)


def test_unimplemented_rpc_names_the_method(local_modal: object) -> None:
    proc = modal_cli("token", "info", check=False)
    assert proc.returncode != 0
    assert "does not implement" in (proc.stdout + proc.stderr)


def test_injected_faults_are_retried_without_doubling(local_modal: object) -> None:
    """With a 25% error rate (half of them after the effect landed), creating an
    environment through the client's retries happens exactly once."""
    lm = local_modal
    faults = lm.faults  # type: ignore[attr-defined]
    before = lm.stats()  # type: ignore[attr-defined]
    lm.emulator._rng.seed(7)  # type: ignore[attr-defined]  # deterministic faults
    # Only this flow's calls fail: other clients of the session's local Modal (warm
    # containers polling for inputs) must not draw from the seeded faults.
    faults.methods = frozenset({"EnvironmentCreate"})
    faults.error_rate = 0.25
    try:
        for i in range(6):
            modal.Environment.objects.create(f"fault-env-{i}")
    finally:
        faults.error_rate = 0.0
        faults.methods = frozenset()
    after = lm.stats()  # type: ignore[attr-defined]
    names = [e.name for e in modal.Environment.objects.list()]
    assert sorted(n for n in names if n.startswith("fault-env-")) == [f"fault-env-{i}" for i in range(6)]
    assert after["injected_errors"] > before["injected_errors"]

"""Dicts and queues in the local Modal, driven by the real `modal` CLI and SDK."""

from __future__ import annotations

import json
import queue as stdlib_queue

import modal
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_pb2

from tests.conftest import modal_cli, raw_rpc


def test_dict_sdk_operations(modal_environment: str) -> None:
    env = modal_environment
    d = modal.Dict.from_name("store", environment_name=env, create_if_missing=True)
    d["a"] = 1
    d.update({"b": [2, 3]}, c={"x": 1})
    assert d["a"] == 1 and d.get("b") == [2, 3] and d.get("zz", "dflt") == "dflt"
    assert d.contains("c") and "c" in d and not d.contains("zz")
    assert d.len() == 3
    assert dict(d.items()) == {"a": 1, "b": [2, 3], "c": {"x": 1}}
    assert sorted(d.keys()) == ["a", "b", "c"]
    assert sorted(map(str, d.values())) == sorted(map(str, [1, [2, 3], {"x": 1}]))

    assert d.put("lock", {"owner": "me"}, skip_if_exists=True) is True
    assert d.put("lock", {"owner": "you"}, skip_if_exists=True) is False
    assert d["lock"] == {"owner": "me"}
    assert d.pop("lock") == {"owner": "me"}
    assert d.pop("lock", None) is None
    with pytest.raises(KeyError):
        d.pop("lock")
    d.clear()
    assert d.len() == 0

    other = modal.Dict.from_name("store", environment_name=env)
    assert other.hydrate().object_id == d.object_id
    with pytest.raises(modal.exception.NotFoundError):
        modal.Dict.from_name("nope", environment_name=env).hydrate()


def test_dict_objects_and_cli(modal_environment: str) -> None:
    env = modal_environment
    modal.Dict.objects.create("one", environment_name=env)
    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Dict.objects.create("one", environment_name=env)
    modal.Dict.objects.create("one", environment_name=env, allow_existing=True)
    modal_cli("dict", "create", "two", "--env", env)
    assert [x.name for x in modal.Dict.objects.list(environment_name=env)] == ["two", "one"]
    listed = json.loads(modal_cli("dict", "list", "--json", "--env", env).stdout)
    assert [row["name"] for row in listed] == ["two", "one"]

    modal.Dict.from_name("two", environment_name=env)["greeting"] = "hello"
    got = modal_cli("dict", "get", "two", "greeting", "--env", env).stdout
    assert "hello" in got
    items = json.loads(modal_cli("dict", "items", "two", "--json", "--env", env).stdout)
    assert items == [{"key": "greeting", "value": "hello"}]
    modal_cli("dict", "clear", "two", "--yes", "--env", env)
    assert modal.Dict.from_name("two", environment_name=env).len() == 0

    modal_cli("dict", "delete", "two", "--yes", "--env", env)
    modal.Dict.objects.delete("one", environment_name=env)
    assert modal.Dict.objects.list(environment_name=env) == []


def test_put_if_absent_is_atomic_at_the_server(modal_environment: str) -> None:
    """DictUpdate(if_not_exists) answers `created` once for the same key."""
    d = modal.Dict.from_name("lock", environment_name=modal_environment, create_if_missing=True)
    d.hydrate()
    entry = api_pb2.DictEntry(key=b"k", value=b"v1")
    answers = [
        raw_rpc("DictUpdate", api_pb2.DictUpdateRequest(dict_id=d.object_id, updates=[entry],
                                                        if_not_exists=True)).created  # type: ignore[attr-defined]
        for _ in range(3)
    ]
    assert answers == [True, False, False]


def test_queue_sdk_operations(modal_environment: str) -> None:
    env = modal_environment
    q = modal.Queue.from_name("jobs", environment_name=env, create_if_missing=True)
    q.put(1)
    q.put_many([2, 3])
    q.put("p", partition="side")
    assert q.len() == 3 and q.len(partition="side") == 1 and q.len(total=True) == 4
    assert list(q.iterate()) == [1, 2, 3]  # peeking does not remove
    assert q.get() == 1
    assert q.get_many(5) == [2, 3]
    assert q.get(block=False) is None
    with pytest.raises(stdlib_queue.Empty):
        q.get(timeout=0.2)
    assert q.get(partition="side") == "p"
    q.put_many([4, 5])
    q.put(6, partition="side")
    q.clear()
    assert q.len() == 0 and q.len(partition="side") == 1
    q.clear(all=True)
    assert q.len(total=True) == 0


def test_queue_objects_and_cli(modal_environment: str) -> None:
    env = modal_environment
    modal.Queue.objects.create("q1", environment_name=env)
    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Queue.objects.create("q1", environment_name=env)
    modal_cli("queue", "create", "q2", "--env", env)
    assert [x.name for x in modal.Queue.objects.list(environment_name=env)] == ["q2", "q1"]
    q = modal.Queue.from_name("q2", environment_name=env)
    q.put_many(["first", "second", "third"])
    assert modal_cli("queue", "len", "q2", "--env", env).stdout.strip() == "3"
    peek = modal_cli("queue", "peek", "q2", "2", "--env", env).stdout
    assert "first" in peek and "second" in peek and "third" not in peek
    assert q.len() == 3
    listed = modal_cli("queue", "list", "--json", "--env", env).stdout
    assert "q1" in listed and "q2" in listed
    modal_cli("queue", "delete", "q2", "--yes", "--env", env)
    modal.Queue.objects.delete("q1", environment_name=env)
    assert modal.Queue.objects.list(environment_name=env) == []


def test_queue_partition_is_bounded(modal_environment: str) -> None:
    q = modal.Queue.from_name("full", environment_name=modal_environment, create_if_missing=True)
    q.put_many(list(range(5000)), block=False)
    with pytest.raises(stdlib_queue.Full):
        q.put("one too many", block=False)


def test_dicts_and_queues_are_scoped_and_dropped_with_their_environment(modal_environment: str) -> None:
    env = modal_environment
    modal.Dict.objects.create("d", environment_name=env)
    modal.Queue.objects.create("q", environment_name=env)
    assert "d" not in [x.name for x in modal.Dict.objects.list(environment_name="main")]
    modal.Environment.objects.delete(env)
    modal.Environment.objects.create(env)
    assert modal.Dict.objects.list(environment_name=env) == []
    assert modal.Queue.objects.list(environment_name=env) == []


def test_bad_dict_and_queue_names_are_refused(local_modal: object) -> None:
    for method, req_type in (("DictGetOrCreate", api_pb2.DictGetOrCreateRequest),
                             ("QueueGetOrCreate", api_pb2.QueueGetOrCreateRequest)):
        req = req_type(deployment_name="no spaces!",
                       object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING)
        with pytest.raises(GRPCError) as err:
            raw_rpc(method, req)
        assert err.value.status == Status.INVALID_ARGUMENT


def test_ephemeral_objects_and_lookup_by_id(modal_environment: str) -> None:
    env = modal_environment
    with modal.Dict.ephemeral() as d, modal.Queue.ephemeral() as q, modal.Volume.ephemeral() as v:
        d["k"] = "v"
        q.put("item")
        assert modal.Dict.from_id(d.object_id)["k"] == "v"
        assert modal.Queue.from_id(q.object_id).get() == "item"
        assert modal.Volume.from_id(v.object_id).listdir("/") == []
    assert all(x.object_id != d.object_id for x in modal.Dict.objects.list(environment_name="main"))
    modal_cli("queue", "create", "to-clear", "--env", env)
    modal.Queue.from_name("to-clear", environment_name=env).put_many([1, 2])
    modal_cli("queue", "clear", "to-clear", "--yes", "--env", env)
    assert modal.Queue.from_name("to-clear", environment_name=env).len() == 0

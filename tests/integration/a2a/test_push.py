"""Push notifications end to end: an echo agent with push on and a real HTTPS webhook receiver
process (tests.support.webhook) that verifies each notification's signature.

Config CRUD on JSON-RPC, REST and gRPC; hostile URLs refused with each transport's
invalid-params error; delivery with the config's token and authentication, one idempotency id
per event kept across retries, 500s retried, a hung or absent receiver and a redirect failing
alone while another task's notifications arrive.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from a2a.types import a2a_pb2 as pb
from a2a.types import a2a_pb2_grpc

from tests.conftest import ECHO_SERVICE
from tests.support.procs import ServiceProcess, free_port

HEADERS = {"A2A-Version": "1.0"}


@pytest.fixture
def agent(
    request: pytest.FixtureRequest,
    spawn: Callable[..., ServiceProcess],
    receiver: tuple[int, Path, Path, Path],
) -> ServiceProcess:
    """An echo agent with push on, on the default SQLite store (durable: its outbox) unless a
    test asks for another (``memory``: in-process queues)."""
    _, _, ca, key_file = receiver
    return spawn(
        ECHO_SERVICE,
        env={
            "SLMESH_TASK_STORE": getattr(request, "param", "sqlite"),
            "SLMESH_PUSH_NOTIFICATIONS": "true",
            "SLMESH_PUSH_ALLOW": "127.0.0.1",
            "SLMESH_PUSH_CA_FILE": str(ca),
            "SLMESH_PUSH_TIMEOUT_S": "1",
            "SLMESH_PUSH_MAX_ATTEMPTS": "3",
            "SLMESH_PUSH_BACKOFF_S": "0.1",
            "SLMESH_SIGNING_KEYS": str(key_file),
        },
    )


async def _rpc(http: httpx.AsyncClient, url: str, method: str, params: dict[str, Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply = (await http.post(url + "/", json=body, headers=HEADERS)).json()
    return reply


def _message(text: str, push: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "message": {"role": "ROLE_USER", "messageId": uuid.uuid4().hex, "parts": [{"text": text}]}
    }
    if push:
        params["configuration"] = {"taskPushNotificationConfig": push}
    return params


def _hits(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line]


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_push_configs_on_all_three_transports_and_hostile_urls_refused(
    agent: ServiceProcess, receiver: tuple[int, Path, Path, Path]
) -> None:
    port = receiver[0]
    hook = f"https://127.0.0.1:{port}/ok"
    async with httpx.AsyncClient(timeout=10) as http:
        card = (await http.get(agent.http_url + "/.well-known/agent-card.json")).json()
        assert card["capabilities"]["pushNotifications"] is True
        task = (await _rpc(http, agent.http_url, "SendMessage", _message("hi")))["result"]["task"]
        tid = task["id"]

        # JSON-RPC
        made = await _rpc(
            http,
            agent.http_url,
            "CreateTaskPushNotificationConfig",
            {"taskId": tid, "id": "j1", "url": hook, "token": "t-j"},
        )
        assert made["result"]["url"] == hook, made
        got = await _rpc(
            http, agent.http_url, "GetTaskPushNotificationConfig", {"taskId": tid, "id": "j1"}
        )
        assert got["result"]["token"] == "t-j"
        # REST
        rest = f"{agent.http_url}/tasks/{tid}/pushNotificationConfigs"
        created = await http.post(rest, json={"id": "r1", "url": hook}, headers=HEADERS)
        assert created.status_code == 200, created.text
        listed = await http.get(rest, headers=HEADERS)
        assert {c["id"] for c in listed.json()["configs"]} == {"j1", "r1"}
        assert (await http.delete(rest + "/r1", headers=HEADERS)).status_code == 200
        # gRPC
        async with grpc.aio.insecure_channel(agent.grpc_target) as channel:
            stub = a2a_pb2_grpc.A2AServiceStub(channel)
            await stub.CreateTaskPushNotificationConfig(
                pb.TaskPushNotificationConfig(task_id=tid, id="g1", url=hook)
            )
            configs = await stub.ListTaskPushNotificationConfigs(
                pb.ListTaskPushNotificationConfigsRequest(task_id=tid)
            )
            assert {c.id for c in configs.configs} == {"j1", "g1"}
            await stub.DeleteTaskPushNotificationConfig(
                pb.DeleteTaskPushNotificationConfigRequest(task_id=tid, id="g1")
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CreateTaskPushNotificationConfig(
                    pb.TaskPushNotificationConfig(task_id=tid, id="g2", url="https://[::1]/x")
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        after = await _rpc(http, agent.http_url, "ListTaskPushNotificationConfigs", {"taskId": tid})
        assert [c["id"] for c in after["result"]["configs"]] == ["j1"]

        hostile = [
            f"http://127.0.0.1:{port}/ok",  # not HTTPS
            "https://169.254.169.254/latest/meta-data",
            "https://10.1.2.3/hook",
            "https://[::ffff:192.168.0.1]/hook",
            "https://user:pw@example.invalid/hook",
            "https://" + "a" * 3000 + ".example/",
        ]
        for url in hostile:
            refused = await _rpc(
                http,
                agent.http_url,
                "CreateTaskPushNotificationConfig",
                {"taskId": tid, "id": "bad", "url": url},
            )
            assert refused["error"]["code"] == -32602, (url, refused)
            rest_refused = await http.post(rest, json={"id": "bad", "url": url}, headers=HEADERS)
            assert rest_refused.status_code == 400, (url, rest_refused.text)
        # The agent still serves.
        again = await _rpc(http, agent.http_url, "SendMessage", _message("still"))
        assert again["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert "refused push URL https://169.254.169.254" in agent.output()


@pytest.mark.parametrize("agent", ["sqlite", "memory"], indirect=True)
async def test_notifications_arrive_signed_and_retried_while_bad_receivers_fail_alone(
    agent: ServiceProcess, receiver: tuple[int, Path, Path, Path]
) -> None:
    port, log = receiver[0], receiver[1]
    base = f"https://127.0.0.1:{port}"
    auth = {"scheme": "Bearer", "credentials": "receiver-secret"}
    async with httpx.AsyncClient(timeout=10) as http:
        slow, down, moved = await asyncio.gather(
            _rpc(http, agent.http_url, "SendMessage", _message("a", {"url": base + "/slow"})),
            _rpc(
                http,
                agent.http_url,
                "SendMessage",
                _message("b", {"url": f"https://127.0.0.1:{free_port()}/gone"}),
            ),
            _rpc(http, agent.http_url, "SendMessage", _message("c", {"url": base + "/redirect"})),
        )
        flaky = await _rpc(
            http, agent.http_url, "SendMessage", _message("d", {"url": base + "/flaky"})
        )
        started = time.monotonic()
        ok = await _rpc(
            http,
            agent.http_url,
            "SendMessage",
            _message("e", {"url": base + "/ok", "token": "tok-e", "authentication": auth}),
        )
        ok_task = ok["result"]["task"]["id"]

        def task_of(hit: dict[str, Any]) -> str:
            body = hit["body"]
            inner = body.get("task") or body.get("statusUpdate") or body.get("artifactUpdate")
            return str(inner.get("id") or inner.get("taskId"))

        def completed(path: str, task: str) -> bool:
            return any(
                h["path"] == path
                and task_of(h) == task
                and "TASK_STATE_COMPLETED" in json.dumps(h["body"])
                and (path != "/flaky" or h["try"] == 3)
                for h in _hits(log)
            )

        await _until(lambda: completed("/ok", ok_task))
        # Delivered while the slow receiver hangs (1 s per try, 3 tries): not queued behind it.
        assert time.monotonic() - started < 2.5
        ok_hits = [h for h in _hits(log) if h["path"] == "/ok"]
        assert all(h["verified"] for h in ok_hits), ok_hits
        assert {(h["token"], h["authorization"]) for h in ok_hits} == {
            ("tok-e", "Bearer receiver-secret")
        }
        assert len({h["id"] for h in ok_hits}) == len(ok_hits)  # one id per event
        assert {h["host"] for h in ok_hits} == {f"127.0.0.1:{port}"}

        flaky_task = flaky["result"]["task"]["id"]
        await _until(lambda: completed("/flaky", flaky_task))
        retried = [h for h in _hits(log) if h["path"] == "/flaky"]
        by_id: dict[str, list[int]] = {}
        for hit in retried:
            by_id.setdefault(hit["id"], []).append(hit["try"])
        assert all(tries == [1, 2, 3] for tries in by_id.values()), by_id

        await _until(lambda: "failed after 3 tries" in agent.output(), timeout=30)
        await _until(
            lambda: (
                agent.output().count("failed after 3 tries") >= 2
                and "redirect (not followed)" in agent.output()
            ),
            timeout=30,
        )
        redirects = [h for h in _hits(log) if h["path"] == "/redirect"]
        assert redirects
        assert all(h["try"] == 1 for h in redirects)
        assert not [h for h in _hits(log) if h["path"] == "/ok" and task_of(h) != ok_task]
        for answer in (slow, down, moved):
            assert answer["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"

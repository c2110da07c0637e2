"""Hostile input on every interface of a real agent and of the planner (processes on 127.0.0.1).

Each case must get the protocol's own error (JSON-RPC error object, HTTP 4xx, a gRPC status
other than UNKNOWN/INTERNAL, a rejected or failed task), the services must stay healthy, and
every task the mesh accepted must still be there afterwards. Case counts are printed at the
end (``-s``) and recorded in docs/reliability.md. Bounded: a fixed number of examples per
interface, no shrinking-heavy search (``derandomize``, few examples).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
import schemathesis
from a2a.types import a2a_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from mesh.a2a.client import MeshClient, StaticReplicas
from tests.integration.planner.test_planner import Mesh, data_request, error_of

pytestmark = pytest.mark.integration

CASES: Counter[str] = Counter()
BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
V1 = {"A2A-Version": "1.0", "content-type": "application/json"}
METHODS = [
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "SubscribeToTask",
    "GetExtendedAgentCard",
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
]
FINAL = {
    pb.TaskState.TASK_STATE_COMPLETED,
    pb.TaskState.TASK_STATE_FAILED,
    pb.TaskState.TASK_STATE_REJECTED,
    pb.TaskState.TASK_STATE_CANCELED,
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**400)
    | st.floats()
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=16,
)
parts = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "text": st.text(max_size=60) | json_values,
            "data": json_values,
            "mediaType": st.text(max_size=20),
            "raw": st.text(max_size=20),
            "url": st.text(max_size=20),
        },
    ),
    max_size=3,
)
messages = st.fixed_dictionaries(
    {
        "messageId": st.text(max_size=20) | st.integers(),
        "role": st.sampled_from(["ROLE_USER", "ROLE_AGENT", "x"]) | st.integers(),
        "parts": parts,
    },
    optional={
        "taskId": st.text(max_size=12),
        "contextId": st.text(max_size=12),
        "metadata": json_values,
    },
)
valid_messages = st.builds(
    lambda mid, text: {"messageId": mid, "role": "ROLE_USER", "parts": [{"text": text}]},
    st.uuids().map(str),
    st.text(max_size=200),
)
params = (
    st.fixed_dictionaries({"message": valid_messages})
    | st.fixed_dictionaries(
        {"message": messages}, optional={"configuration": json_values, "metadata": json_values}
    )
    | st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=20) | json_values,
            "pageSize": st.integers() | json_values,
            "historyLength": st.integers(),
        },
    )
    | json_values
)
ids = (
    st.none()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**400)
    | st.text(max_size=10)
    | json_values
)
requests_ = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | st.text(max_size=4) | json_values,
        "id": ids,
        "method": st.sampled_from(METHODS) | st.text(max_size=30),
        "params": params,
    },
)


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


well_formed = st.builds(
    lambda i, m: {"jsonrpc": "2.0", "id": i, "method": "SendMessage", "params": {"message": m}},
    st.integers(0, 10**6),
    valid_messages,
)
bodies = st.one_of(
    well_formed.map(_dump),
    requests_.map(_dump),
    json_values.map(_dump),
    st.binary(max_size=2048),
    requests_.map(_dump).map(lambda b: b[: len(b) // 2]),
)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    world = Mesh(tmp_path_factory.mktemp("fuzz-mesh"))
    try:
        world.boot()
        yield world
    finally:
        world.stop()
        print(
            "\nFUZZ cases per interface: " + ", ".join(f"{k}={v}" for k, v in sorted(CASES.items()))
        )


def _healthy(url: str) -> None:
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200


def _accepted(reply: httpx.Response) -> str | None:
    """The task id an HTTP answer accepted, if any."""
    if "json" not in reply.headers.get("content-type", ""):
        return None
    body = reply.json()
    result = body.get("result", body) if isinstance(body, dict) else None
    task = result.get("task") if isinstance(result, dict) else None
    return task.get("id") if isinstance(task, dict) else None


def _check_tasks_kept(url: str, task_ids: set[str]) -> None:
    with httpx.Client(base_url=url, headers=V1, timeout=30) as http:
        for task_id in task_ids:
            reply = http.get(f"/tasks/{task_id}")
            assert reply.status_code == 200
            assert reply.json()["id"] == task_id


def test_jsonrpc_fuzz(mesh: Mesh) -> None:
    agent = mesh.echoes[0]
    accepted: set[str] = set()
    with httpx.Client(base_url=agent.http_url, headers=V1, timeout=30) as http:

        @BOUNDED
        @given(body=bodies)
        def case(body: bytes) -> None:
            CASES["jsonrpc"] += 1
            reply = http.post("/", content=body)
            assert reply.status_code < 500, (body[:200], reply.status_code, reply.text[:300])
            if "text/event-stream" in reply.headers.get("content-type", ""):
                return
            answer = reply.json()
            assert isinstance(answer, dict)
            assert "result" in answer or isinstance(answer["error"]["code"], int)
            if task_id := _accepted(reply):
                accepted.add(task_id)

        case()
        special = [
            b"",
            b"null",
            b"[]",
            b'{"jsonrpc":"2.0","id":1e400,"method":"GetTask","params":{"id":"x"}}',
            b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ListTasks","params":{}}',
            b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"\xed\xa0\x80"}}',
            b"[" * 100_000,
            b'{"jsonrpc":"2.0","id":1,"method":"' + b"M" * 100_000 + b'"}',
        ]
        for body in special:
            CASES["jsonrpc"] += 1
            reply = http.post("/", content=body)
            assert reply.status_code < 500, body[:80]
            assert "error" in reply.json(), (
                body[:80],
                reply.text[:200],
            )
        CASES["jsonrpc"] += 1
        huge = http.post(
            "/",
            content=b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"x":"'
            + b"a" * (10 * 1024 * 1024)
            + b'"}}',
        )
        assert huge.status_code == 413
    _healthy(agent.http_url)
    _check_tasks_kept(agent.http_url, accepted)
    CASES["jsonrpc-accepted-tasks-kept"] += len(accepted)


REST_ROUTES = [
    ("POST", "/message:send"),
    ("POST", "/message:stream"),
    ("GET", "/tasks/{id}"),
    ("POST", "/tasks/{id}:cancel"),
    ("GET", "/tasks"),
    ("POST", "/tasks/{id}/pushNotificationConfigs"),
    ("GET", "/extendedAgentCard"),
    ("PUT", "/tasks/{id}"),
    ("POST", "/{id}"),
]


def test_rest_fuzz(mesh: Mesh) -> None:
    agent = mesh.echoes[0]
    accepted: set[str] = set()
    with httpx.Client(base_url=agent.http_url, headers=V1, timeout=30) as http:

        @BOUNDED
        @given(
            route=st.sampled_from(REST_ROUTES),
            path_id=st.text(max_size=30),
            query=json_values,
            body=st.one_of(
                st.fixed_dictionaries({"message": valid_messages}).map(_dump),
                st.fixed_dictionaries(
                    {"message": messages}, optional={"configuration": json_values}
                ).map(_dump),
                json_values.map(_dump),
                st.binary(max_size=1024),
            ),
        )
        def case(route: tuple[str, str], path_id: str, query: Any, body: bytes) -> None:
            CASES["rest"] += 1
            method, path = route
            url = path.replace("{id}", quote(path_id, safe="") or "x")
            extra = (
                {"params": query}
                if isinstance(query, dict)
                and all(isinstance(v, (str, int, float)) for v in query.values())
                else {}
            )
            reply = http.request(method, url, content=body if method != "GET" else None, **extra)
            assert reply.status_code < 500, (
                method,
                url,
                body[:200],
                reply.status_code,
                reply.text[:300],
            )
            if reply.status_code == 200 and (task_id := _accepted(reply)):
                accepted.add(task_id)

        case()
    _healthy(agent.http_url)
    _check_tasks_kept(agent.http_url, accepted)
    CASES["rest-accepted-tasks-kept"] += len(accepted)


def _schemathesis(url: str, interface: str, examples: int) -> None:
    """Every operation of the service's OpenAPI doc, cases generated by schemathesis from it."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def case(case: Any) -> None:
            CASES[interface] += 1
            case.call_and_validate(base_url=url, checks=[not_a_server_error], timeout=60)

        case()
    _healthy(url)


def test_schemathesis_agent_rest(mesh: Mesh) -> None:
    _schemathesis(mesh.echoes[1].http_url, "openapi-agent", 25)


def test_schemathesis_planner_rest(mesh: Mesh) -> None:
    _schemathesis(mesh.planner.http_url, "openapi-planner", 10)


UNARY = {
    "SendMessage": pb.SendMessageResponse,
    "GetTask": pb.Task,
    "ListTasks": pb.ListTasksResponse,
    "CancelTask": pb.Task,
    "GetExtendedAgentCard": pb.AgentCard,
}
STREAMING = ["SendStreamingMessage", "SubscribeToTask"]
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def test_grpc_fuzz(mesh: Mesh) -> None:
    agent = mesh.echoes[0]
    accepted: set[str] = set()
    structured = st.builds(
        lambda mid, role, text, meta: pb.SendMessageRequest(
            message=pb.Message(message_id=mid, role=role, parts=[pb.Part(text=text)]),
            metadata={"k": meta},
        ).SerializeToString(),
        st.text(max_size=20),
        st.integers(min_value=0, max_value=2**31 - 1),
        st.text(max_size=50),
        st.text(max_size=20),
    )
    with grpc.insecure_channel(agent.grpc_target) as channel:
        identity = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
        unary = {
            name: channel.unary_unary(f"/lf.a2a.v1.A2AService/{name}", **identity) for name in UNARY
        }
        streams = {
            name: channel.unary_stream(f"/lf.a2a.v1.A2AService/{name}", **identity)
            for name in STREAMING
        }

        @BOUNDED
        @given(
            method=st.sampled_from(sorted(UNARY) + STREAMING),
            payload=st.binary(max_size=512) | structured,
        )
        def case(method: str, payload: bytes) -> None:
            CASES["grpc"] += 1
            try:
                if method in UNARY:
                    raw = unary[method](payload, timeout=30)
                    if method == "SendMessage":
                        response = pb.SendMessageResponse.FromString(raw)
                        if response.HasField("task"):
                            accepted.add(response.task.id)
                else:
                    for _ in streams[method](payload, timeout=30):
                        pass
            except grpc.RpcError as exc:
                # Refusing is fine, crashing is not; a case may also succeed, so no pytest.raises.
                assert exc.code() not in BAD_CODES, (  # noqa: PT017 - see above
                    method,
                    payload[:64],
                    exc.code(),
                    exc.details(),
                )

        case()
        CASES["grpc"] += 1
        with pytest.raises(grpc.RpcError) as info:
            unary["SendMessage"](os.urandom(5 * 1024 * 1024), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _healthy(agent.http_url)
    _check_tasks_kept(agent.http_url, accepted)
    CASES["grpc-accepted-tasks-kept"] += len(accepted)


# Plans travel as protobuf Structs (doubles): no integers beyond what a double holds.
struct_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=16,
)
STEP_IDS = ["a", "b", "c", "d"]
refs = st.sampled_from(
    [f"${i}" for i in STEP_IDS] + ["$input", "$input.items", "$nope", "$item", "plain"]
)
steps = st.fixed_dictionaries(
    {"id": st.sampled_from([*STEP_IDS, "", "bad id", "x" * 200])},
    optional={
        "skill": st.sampled_from(["echo", "no_such_skill", ""]),
        "fn": st.sampled_from(["identity", "__import__", "eval"]),
        "input": refs | struct_values,
        "when": refs,
        "for_each": refs,
        "plan": st.just({"steps": [{"id": "s", "skill": "echo", "input": "$input"}]}),
        "timeout_s": st.floats(min_value=-1, max_value=5) | st.just(1e300),
        "retries": st.integers(min_value=-5, max_value=50),
        "on_error": st.sampled_from(["fail", "continue", "x"]),
        "workflow": st.sampled_from(["support_batch", "nope"]),
    },
)
plans = st.fixed_dictionaries(
    {
        "plan": st.fixed_dictionaries(
            {"steps": st.lists(steps, max_size=5)}, optional={"output": refs | struct_values}
        )
    },
    optional={
        "input": st.fixed_dictionaries({"items": st.lists(st.text(max_size=8), max_size=6)})
        | struct_values
    },
)


async def test_hostile_plans(mesh: Mesh) -> None:
    """Cycles, unknown skills and functions, bad references, nonsense fields and a fan-out past
    the planner's cap: each task ends rejected or failed with a reason (or completes), never
    hangs."""
    source = StaticReplicas.from_urls(
        "planner", mesh.planner.http_url, f"grpc://{mesh.planner.grpc_target}"
    )
    outcomes: Counter[str] = Counter()
    tasks: dict[str, int] = {}
    async with MeshClient(source) as client:
        examples: list[dict[str, Any]] = []

        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=plans)
        def collect(body: dict[str, Any]) -> None:
            examples.append(body)

        collect()
        huge = {
            "plan": {
                "steps": [
                    {
                        "id": "each",
                        "for_each": "$input.items",
                        "input": "$item",
                        "plan": {"steps": [{"id": "f", "fn": "identity", "input": "$input"}]},
                    }
                ],
                "output": "$each",
            },
            "input": {"items": list(range(10_001))},
        }
        nested = {
            "plan": {
                "steps": [
                    {
                        "id": "outer",
                        "for_each": "$input.items",
                        "input": "$input",
                        "plan": {
                            "steps": [
                                {
                                    "id": "inner",
                                    "for_each": "$input.items",
                                    "input": "$item",
                                    "plan": {
                                        "steps": [{"id": "f", "fn": "identity", "input": "$input"}]
                                    },
                                }
                            ]
                        },
                    }
                ]
            },
            "input": {"items": list(range(200))},
        }
        for body in [*examples, huge, nested]:
            CASES["plans"] += 1
            response = await client.send_message("planner", data_request(body), timeout=120)
            state = response.task.status.state
            assert state in FINAL, pb.TaskState.Name(state)
            if state != pb.TaskState.TASK_STATE_COMPLETED:
                assert error_of(response.task), body
            outcomes[pb.TaskState.Name(state)] += 1
            tasks[response.task.id] = state
        for body in (huge, nested):
            last = await client.send_message("planner", data_request(body), timeout=120)
            assert last.task.status.state == pb.TaskState.TASK_STATE_FAILED
            assert "limit of 10000" in error_of(last.task), error_of(last.task)
        for task_id, state in tasks.items():
            assert (await client.get_task("planner", task_id)).status.state == state
    print(f"\nFUZZ plans: {dict(outcomes)}")
    _healthy(mesh.planner.http_url)

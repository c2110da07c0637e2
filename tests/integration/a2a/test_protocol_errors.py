"""A2A 1.0's error mappings and media types where stock a2a-sdk 1.3.0 differs (found by the
A2A TCK, docs/conformance.md): content types, HTTP+JSON media type, gRPC status codes."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb
from a2a.types import a2a_pb2_grpc
from google.rpc import error_details_pb2, status_pb2

from tests.conftest import ECHO_SERVICE
from tests.support.procs import ServiceProcess, start_service

V1 = {"A2A-Version": "1.0"}
SEND = {"message": {"role": "ROLE_USER", "parts": [{"text": "hi"}], "messageId": "m-1"}}


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = start_service(ECHO_SERVICE, tmp_path_factory.mktemp("errors"))
    yield proc
    proc.kill()


def _post(proc: ServiceProcess, path: str, content_type: str, body: bytes) -> httpx.Response:
    return httpx.post(
        proc.http_url + path, content=body, headers={**V1, "Content-Type": content_type}
    )


def test_jsonrpc_unsupported_content_type_is_32005(echo: ServiceProcess) -> None:
    reply = _post(echo, "/", "text/plain", b"{'jsonrpc': '2.0'}")
    assert reply.status_code == 415
    assert reply.json()["error"]["code"] == -32005


def test_rest_unsupported_content_type_is_415(echo: ServiceProcess) -> None:
    reply = _post(echo, "/message:send", "text/plain", b"hello")
    assert reply.status_code == 415
    error = reply.json()["error"]
    assert (error["code"], error["status"]) == (415, "INVALID_ARGUMENT")
    assert error["details"][0]["reason"] == "CONTENT_TYPE_NOT_SUPPORTED"


@pytest.mark.parametrize("media", ["application/json", "application/a2a+json"])
def test_rest_answers_in_the_media_type_of_the_request(echo: ServiceProcess, media: str) -> None:
    reply = httpx.post(
        echo.http_url + "/message:send", json=SEND, headers={**V1, "Content-Type": media}
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].split(";")[0] == media
    task_id = reply.json()["task"]["id"]
    got = httpx.get(f"{echo.http_url}/tasks/{task_id}", headers={**V1, "Accept": media})
    assert (got.status_code, got.headers["content-type"].split(";")[0]) == (200, media)
    missing = httpx.get(f"{echo.http_url}/tasks/no-such-task", headers={**V1, "Accept": media})
    assert (missing.status_code, missing.headers["content-type"].split(";")[0]) == (404, media)


def test_jsonrpc_accepts_the_a2a_media_type(echo: ServiceProcess) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": SEND}
    reply = httpx.post(
        echo.http_url + "/", json=body, headers={**V1, "Content-Type": "application/a2a+json"}
    )
    assert reply.status_code == 200
    assert reply.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


def _grpc_error(call: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    details = next(m.value for m in call.trailing_metadata() if m.key == "grpc-status-details-bin")
    status = status_pb2.Status.FromString(bytes(details))
    assert status.code == call.code().value[0]  # the rich status agrees with the call's
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.domain == "a2a-protocol.org"
    return call.code(), info.reason


def test_grpc_push_config_without_push_is_unimplemented(echo: ServiceProcess) -> None:
    with grpc.insecure_channel(echo.grpc_target) as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateTaskPushNotificationConfig(
                pb.TaskPushNotificationConfig(task_id="t-1", url="https://example.com"),
                metadata=(("a2a-version", "1.0"),),
                timeout=10,
            )
    assert _grpc_error(info.value) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "PUSH_NOTIFICATION_NOT_SUPPORTED",
    )


def test_grpc_refuses_another_major_version(echo: ServiceProcess) -> None:
    request = pb.SendMessageRequest(message=new_text_message("v?"))
    with grpc.insecure_channel(echo.grpc_target) as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.SendMessage(request, metadata=(("a2a-version", "99.0"),), timeout=10)
        assert _grpc_error(info.value) == (grpc.StatusCode.UNIMPLEMENTED, "VERSION_NOT_SUPPORTED")
        for metadata in ((("a2a-version", "1.0"),), ()):  # 1.x, or none said: served
            reply = stub.SendMessage(request, metadata=metadata, timeout=10)
            assert reply.task.status.state == pb.TaskState.TASK_STATE_COMPLETED

"""Agent cards as clients meet them: a gRPC URL every client dials, public URLs behind a proxy,
and the caching headers of the card endpoint (ETag, Last-Modified, Cache-Control)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email.utils import format_datetime, parsedate_to_datetime

import grpc
import httpx
import pytest
from a2a.helpers.proto_helpers import new_text_message
from a2a.types import a2a_pb2 as pb
from a2a.types import a2a_pb2_grpc

from mesh.a2a.client import GRPC, MeshClient, Replica, StaticReplicas
from mesh.config import Settings
from tests.conftest import ECHO_SERVICE
from tests.support.procs import ServiceProcess, start_service

CARD = "/.well-known/agent-card.json"
PUBLIC = {
    "SLMESH_PUBLIC_JSONRPC_URL": "https://agents.example.com/echo/rpc",
    "SLMESH_PUBLIC_HTTP_JSON_URL": "https://agents.example.com/echo",
    "SLMESH_PUBLIC_GRPC_URL": "grpc.agents.example.com:443",
}


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = start_service(ECHO_SERVICE, tmp_path_factory.mktemp("cards"))
    yield proc
    proc.kill()


def _interfaces(http_url: str) -> dict[str, str]:
    card = httpx.get(http_url + CARD).json()
    return {i["protocolBinding"]: i["url"] for i in card["supportedInterfaces"]}


def test_grpc_url_is_what_a_plain_grpc_channel_dials(echo: ServiceProcess) -> None:
    url = _interfaces(echo.http_url)["GRPC"]
    assert url == f"localhost:{echo.grpc_port}"
    # As the A2A TCK's gRPC client does: the card's URL straight into grpc.
    with grpc.insecure_channel(url) as channel:
        reply = a2a_pb2_grpc.A2AServiceStub(channel).SendMessage(
            pb.SendMessageRequest(message=new_text_message("dial me")),
            metadata=(("a2a-version", "1.0"),),
            timeout=10,
        )
    assert reply.task.status.state == pb.TaskState.TASK_STATE_COMPLETED
    assert reply.task.artifacts[0].parts[0].text == "DIAL ME"


@pytest.mark.parametrize(
    "form",
    ["{host}:{port}", "grpc://{host}:{port}", "dns:///{host}:{port}", "http://{host}:{port}"],
)
async def test_mesh_client_dials_every_grpc_url_form(echo: ServiceProcess, form: str) -> None:
    url = form.format(host="localhost", port=echo.grpc_port)
    replicas = StaticReplicas([Replica(agent="echo", replica_id="r1", urls={GRPC: url})])
    async with MeshClient(replicas, Settings(), bindings=[GRPC]) as client:
        reply = await client.send_text("echo", "any form")
    assert reply.task.artifacts[0].parts[0].text == "ANY FORM"


def test_card_behind_a_proxy_advertises_public_urls(
    spawn: Callable[..., ServiceProcess],
) -> None:
    proc = spawn(ECHO_SERVICE, env=PUBLIC)
    assert _interfaces(proc.http_url) == {
        "JSONRPC": PUBLIC["SLMESH_PUBLIC_JSONRPC_URL"],
        "HTTP+JSON": PUBLIC["SLMESH_PUBLIC_HTTP_JSON_URL"],
        "GRPC": PUBLIC["SLMESH_PUBLIC_GRPC_URL"],
    }


def test_public_url_of_one_binding_leaves_the_others(
    spawn: Callable[..., ServiceProcess],
) -> None:
    proc = spawn(ECHO_SERVICE, env={"SLMESH_PUBLIC_GRPC_URL": "lb.internal:7000"})
    urls = _interfaces(proc.http_url)
    assert urls["GRPC"] == "lb.internal:7000"
    assert urls["JSONRPC"] == f"http://localhost:{proc.http_port}/"


def test_card_carries_cache_control_etag_and_last_modified(echo: ServiceProcess) -> None:
    reply = httpx.get(echo.http_url + CARD)
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "public, max-age=300"
    assert reply.headers["etag"]
    parsedate_to_datetime(reply.headers["last-modified"])  # an HTTP date


def test_card_revalidation_answers_304(echo: ServiceProcess) -> None:
    first = httpx.get(echo.http_url + CARD)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    by_etag = httpx.get(echo.http_url + CARD, headers={"If-None-Match": etag})
    assert (by_etag.status_code, by_etag.content) == (304, b"")
    assert by_etag.headers["etag"] == etag
    by_date = httpx.get(echo.http_url + CARD, headers={"If-Modified-Since": modified})
    assert (by_date.status_code, by_date.headers["last-modified"]) == (304, modified)
    older = parsedate_to_datetime(modified).replace(year=2000)
    stale = httpx.get(
        echo.http_url + CARD, headers={"If-Modified-Since": format_datetime(older, usegmt=True)}
    )
    assert (stale.status_code, stale.json()["name"]) == (200, "echo")
    # If-None-Match takes precedence: a changed ETag gets the card even with a fresh date.
    changed = httpx.get(
        echo.http_url + CARD, headers={"If-None-Match": '"other"', "If-Modified-Since": modified}
    )
    assert changed.status_code == 200


def test_card_max_age_is_a_setting(spawn: Callable[..., ServiceProcess]) -> None:
    proc = spawn(ECHO_SERVICE, env={"SLMESH_CARD_MAX_AGE_S": "30"})
    assert httpx.get(proc.http_url + CARD).headers["cache-control"] == "public, max-age=30"

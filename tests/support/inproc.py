"""Servers inside the test's own process and event loop, on real 127.0.0.1 sockets.

* :func:`start_mesh`: the mesh's ``AgentServer`` (lean request path, admission gates, sqlite
  task store by default) with the test-only :class:`ScriptedExecutor`.
* :class:`StockServer`: the reference - a2a-sdk's own ``DefaultRequestHandler`` behind
  a2a-sdk's own ``GrpcHandler`` and JSON-RPC routes, with its ``InMemoryTaskStore``; nothing
  of the mesh in the serving path. Driven by the same client on the same requests, the two
  must give the same observable results.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.routes import add_a2a_routes_to_fastapi, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import a2a_pb2_grpc
from fastapi import FastAPI

from mesh.a2a import AgentServer
from mesh.a2a.cards import Endpoints, build_card
from mesh.a2a.client import StaticReplicas
from mesh.a2a.executor import to_sdk
from mesh.config import ServiceSpec, Settings, SkillSpec
from tests.support.scripted import ScriptedExecutor

AGENT = "scripted"
SPEC = ServiceSpec(
    name=AGENT,
    description="Scripted test agent",
    skills=[SkillSpec(id="script", name="Script", description="Does what the first word says.")],
    input_modes=["text/plain"],
    output_modes=["text/plain"],
)


async def start_mesh(data_dir: Path, **settings: Any) -> AgentServer:
    """A started mesh replica on free ports (``settings`` override the defaults)."""
    server = AgentServer(
        SPEC,
        Settings(data_dir=data_dir, http_port=0, grpc_port=0, **settings),
        executor=ScriptedExecutor(),
    )
    await server.start()
    return server


def replicas(http_port: int, grpc_port: int) -> StaticReplicas:
    return StaticReplicas.from_urls(
        AGENT, f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}"
    )


class _QuietUvicorn(uvicorn.Server):
    """uvicorn without its signal handlers (they belong to pytest here)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class StockServer:
    """a2a-sdk's default handler on JSON-RPC and gRPC, as a plain a2a-sdk agent would serve it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self._sock.setblocking(False)
        self.http_port = self._sock.getsockname()[1]
        self._grpc = grpc.aio.server()
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self.card = build_card(
            SPEC, Endpoints.for_host("127.0.0.1", self.http_port, self.grpc_port), bearer_auth=False
        )
        self.task_store = InMemoryTaskStore()
        self.handler = DefaultRequestHandler(
            agent_executor=to_sdk(ScriptedExecutor()),
            task_store=self.task_store,
            agent_card=self.card,
        )
        a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(self.handler), self._grpc)
        app = FastAPI()
        add_a2a_routes_to_fastapi(
            app, jsonrpc_routes=create_jsonrpc_routes(self.handler, rpc_url="/")
        )
        self._http = _QuietUvicorn(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        )
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> StockServer:
        await self._grpc.start()
        self._serving = asyncio.create_task(self._http.serve(sockets=[self._sock]))
        while not self._http.started:
            if self._serving.done():
                await self._serving
                raise RuntimeError("reference HTTP server exited during start-up")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        self._http.should_exit = True
        if self._serving is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._serving, 5)
        await self._grpc.stop(grace=0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.handler.aclose(), 5)

"""The conformance executor served by stock a2a-sdk: the baseline ``make conformance`` scores
the mesh runtime against.

``DefaultRequestHandler`` with an in-memory store, a2a-sdk's own card, JSON-RPC and REST routes
on one Starlette app, its ``GrpcHandler`` on grpc.aio; the card is the one the mesh builds from
the same spec, so only the runtime differs. Run: ``python -m tests.conformance.stock HTTP_PORT
GRPC_PORT`` (serves until SIGTERM).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import grpc
import uvicorn
from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.routes import (
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import a2a_pb2_grpc
from starlette.applications import Starlette

from mesh.a2a.cards import Endpoints, build_card
from mesh.a2a.executor import to_sdk
from mesh.config import ServiceSpec
from tests.conformance.executor import ConformanceExecutor

SPEC_DIR = Path(__file__).resolve().parent


async def serve(http_port: int, grpc_port: int) -> None:
    spec = ServiceSpec.load(SPEC_DIR)
    card = build_card(
        spec, Endpoints.for_host("localhost", http_port, grpc_port), bearer_auth=False
    )
    handler = DefaultRequestHandler(
        agent_executor=to_sdk(ConformanceExecutor()),
        task_store=InMemoryTaskStore(),
        agent_card=card,
    )
    app = Starlette(
        routes=[
            *create_agent_card_routes(card),
            *create_jsonrpc_routes(handler, rpc_url="/"),
            *create_rest_routes(handler),
        ]
    )
    server = grpc.aio.server()
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)
    await server.start()
    http = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning")
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(http.serve())
    await stop.wait()
    http.should_exit = True
    await serving
    await server.stop(grace=1.0)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))

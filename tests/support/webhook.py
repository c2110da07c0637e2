"""A real push-notification receiver for tests: HTTPS, one behaviour per path.

``python -m tests.support.webhook CERT KEY BUNDLE LOG`` serves on a free 127.0.0.1 port, prints
``listening PORT``, and appends one JSON line per request to LOG, saying whether the
``X-Slmesh-Signature`` verified against the agent key pinned in BUNDLE (for agent ``echo``).
Paths: ``/ok`` answers 204; ``/flaky`` answers 500 to the first two tries of each notification
id, then 204; ``/slow`` never answers in time; ``/redirect`` answers 307 to ``/ok``;
``/gated`` hangs while the file ``LOG.closed`` exists (a receiver that is stuck), then 204.
Each record says the status answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mesh.trust import TrustBundle, TrustError


def _verified(bundle: TrustBundle, request: Request, body: bytes) -> bool:
    token = request.headers.get("x-slmesh-signature")
    if not token:
        return False
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = bundle.key_for(kid, "echo").key
        claims = jwt.api_jws.decode(token, key, algorithms=["EdDSA", "ES256", "RS256"])
        stated = json.loads(claims)
    except (jwt.PyJWTError, TrustError, ValueError):
        return False
    return stated.get("sha256") == hashlib.sha256(body).hexdigest() and stated.get(
        "id"
    ) == request.headers.get("idempotency-key")


def app(bundle: TrustBundle, log: Path) -> Starlette:
    tries: Counter[str] = Counter()
    gate = log.with_name(log.name + ".closed")

    async def receive(request: Request) -> Response:
        body = await request.body()
        key = request.headers.get("idempotency-key", "")
        tries[key] += 1
        record = {
            "path": request.url.path,
            "id": key,
            "try": tries[key],
            "token": request.headers.get("x-a2a-notification-token"),
            "authorization": request.headers.get("authorization"),
            "host": request.headers.get("host"),
            "verified": _verified(bundle, request, body),
            "at": time.time(),
            "body": json.loads(body) if body else None,
        }
        path = request.url.path
        status = 204
        if path == "/flaky" and tries[key] <= 2:
            status = 500
        if path == "/redirect":
            status = 307
        if path == "/gated" and gate.exists():
            status = 0  # never answered: the sender gives up waiting
        record["status"] = status
        with log.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        if path == "/slow" or status == 0:
            await asyncio.sleep(3600)
        if status == 307:
            return Response(status_code=307, headers={"location": "/ok"})
        return Response(status_code=status)

    paths = ("/ok", "/flaky", "/slow", "/redirect", "/gated")
    return Starlette(routes=[Route(p, receive, methods=["POST"]) for p in paths])


def main(cert: str, key: str, bundle: str, log: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(f"listening {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app(TrustBundle.load(Path(bundle)), Path(log)),
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_level="warning",
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(*sys.argv[1:5])

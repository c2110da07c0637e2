"""A hostile process for the spoofing test: tries to take over or remove a registered replica.

``python -m tests.support.spoof REGISTRY REPLICA_ID [TOKEN [KEY_FILE AGENT]]`` prints one JSON
object: the gRPC status (or "OK") of each attempt. With a key file, every write carries a valid
registration proof for AGENT (a credential for another agent than the victim's).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc

from mesh.registry import Endpoint, RegistryClient, Replica
from mesh.trust import SigningKey


async def attempts(
    address: str, victim: str, token: str | None, identity: tuple[SigningKey, str] | None = None
) -> dict[str, str]:
    fake = Replica(
        agent="echo",
        replica_id=victim,
        endpoints=[Endpoint(transport="JSONRPC", url="http://127.0.0.1:9/")],
    )
    calls = {
        "register_victim_id": lambda c: c.register(fake),
        "register_new_replica": lambda c: c.register(
            Replica(agent="echo", replica_id="intruder", endpoints=fake.endpoints)
        ),
        "register_victim_id_as_own_agent": lambda c: c.register(
            Replica(
                agent=identity[1] if identity else "echo",
                replica_id=victim,
                endpoints=fake.endpoints,
            )
        ),
        "heartbeat_draining": lambda c: c.heartbeat(victim, draining=True),
        "deregister": lambda c: c.deregister(victim),
        "list": lambda c: c.list(),
    }
    outcome = {}
    async with RegistryClient(address, token=token, identity=identity) as client:
        for name, call in calls.items():
            try:
                await call(client)
                outcome[name] = "OK"
            except grpc.aio.AioRpcError as exc:
                outcome[name] = exc.code().name
    return outcome


if __name__ == "__main__":
    address, victim, *rest = sys.argv[1:]
    identity = (SigningKey.load(Path(rest[1])), rest[2]) if len(rest) == 3 else None
    outcome = asyncio.run(attempts(address, victim, rest[0] if rest else None, identity))
    print(json.dumps(outcome))

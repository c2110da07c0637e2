"""A small TCP proxy for client tests: counts the connections a client opens, closes them on
demand the way a server closes idle keep-alive connections (FIN to the client), and cuts the
path silently, as a network partition does (:meth:`Proxy.cut`)."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``, byte for byte."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def cut(self) -> None:
        """A partition: connections stay open but no byte gets through either way, and new
        connections are accepted but never reach the target (nothing is closed or reset, so
        the client learns only from its own timeouts)."""
        self._flowing.clear()

    def heal(self) -> None:
        """Ends the partition: what was held back is delivered, as TCP's retransmissions would."""
        self._flowing.set()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        await self._flowing.wait()
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self._target())
        pair = (client_w, upstream_w)
        self._open.add(pair)
        pipes = [
            asyncio.create_task(self._pipe(client_r, upstream_w)),
            asyncio.create_task(self._pipe(upstream_r, client_w)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._close(pair)
            for pipe in pipes:
                pipe.cancel()
                self._pipes.discard(pipe)

    def _target(self) -> int:
        return self.target_port

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()

    def _close(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        self._open.discard(pair)
        for writer in pair:
            writer.close()

    def close_all(self) -> None:
        """Closes every open connection now, as a server does when its keep-alive timeout passes."""
        for pair in list(self._open):
            self._close(pair)

    async def stop(self) -> None:
        self.close_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pipe in list(self._pipes):
            pipe.cancel()


class RoundRobinProxy(Proxy):
    """An L4 load balancer: each new connection goes to the next of ``target_ports`` (set them
    after :meth:`start` when the targets must know the proxy's port first)."""

    def __init__(self, target_ports: list[int] | None = None) -> None:
        super().__init__(0)
        self.target_ports = list(target_ports or [])
        self.per_target: dict[int, int] = {}

    def _target(self) -> int:
        port = self.target_ports[(self.accepted - 1) % len(self.target_ports)]
        self.per_target[port] = self.per_target.get(port, 0) + 1
        return port

"""Test-only executor that forwards each task to another agent through a MeshClient.

Two in-process agents, ``relay`` -> ``echo``, give a request two hops over transports the
test chooses (one per client), which is what the tracing tests need: one trace across both.
"""

from __future__ import annotations

from a2a.helpers.proto_helpers import new_text_part

from mesh.a2a.client import MeshClient, text_of
from mesh.a2a.executor import Executor, Reporter, Request


class RelayExecutor(Executor):
    """Sends the input text to ``target`` and completes with the answer's text."""

    def __init__(self, client: MeshClient, target: str, *, streaming: bool = False) -> None:
        self.client = client
        self.target = target
        self.streaming = streaming

    async def execute(self, request: Request, task: Reporter) -> None:
        text = request.text
        await task.working()
        if self.streaming:
            from a2a.helpers.proto_helpers import new_text_message
            from a2a.types import a2a_pb2 as pb

            answer = ""
            request = pb.SendMessageRequest(message=new_text_message(text))
            async for event in self.client.send_streaming_message(self.target, request):
                if event.HasField("artifact_update"):
                    answer += "".join(p.text for p in event.artifact_update.artifact.parts)
        else:
            answer = text_of(await self.client.send_text(self.target, text))
        await task.artifact([new_text_part(f"relayed: {answer}")], name="relay")
        await task.complete()

    async def cancel(self, request: Request, task: Reporter) -> None:
        await task.cancel()

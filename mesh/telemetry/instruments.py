"""The mesh's metric instruments, created once per process by ``configure()``."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from mesh.telemetry import names

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Instruments:
    """Request latency/count per agent and transport, in-flight, SLM and tool metrics."""

    def __init__(self, meter: Meter) -> None:
        self.server_duration = meter.create_histogram(
            names.M_SERVER_DURATION,
            unit="s",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            description="A2A requests served by an agent replica, by agent, transport and outcome.",
        )
        self.client_duration = meter.create_histogram(
            names.M_CLIENT_DURATION,
            unit="s",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            description=(
                "A2A calls made by the mesh client (retries included), by agent and transport."
            ),
        )
        self.genai_duration = meter.create_histogram(
            names.M_GENAI_DURATION,
            unit="s",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            description="SLM generations, queueing included.",
        )
        self.genai_tokens = meter.create_histogram(
            names.M_GENAI_TOKENS,
            unit="{token}",
            description="Input and output tokens per generation.",
        )
        self.genai_ttft = meter.create_histogram(
            names.M_GENAI_TTFT,
            unit="s",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            description="Time to the first generated token, queueing included.",
        )
        self.slm_batch = meter.create_histogram(
            names.M_SLM_BATCH,
            unit="{request}",
            explicit_bucket_boundaries_advisory=_BATCH_BUCKETS,
            description="Requests decoding together when a generation joined the batch.",
        )
        self.slm_tokens_per_s = meter.create_histogram(
            names.M_SLM_TOKENS_PER_S,
            unit="{token}/s",
            description="Output tokens per second of each generation (whole call).",
        )
        self.slm_queue_wait = meter.create_histogram(
            names.M_SLM_QUEUE_WAIT,
            unit="s",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            description="Time a generation waited before joining the running batch.",
        )
        self.tool_duration = meter.create_histogram(
            names.M_TOOL_DURATION,
            unit="s",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
            description="Tool executions, by tool and outcome.",
        )
        self._meter = meter

    def observe_in_flight(self, agent: str, read: Callable[[], int]) -> None:
        """Reports ``read()`` as the agent's in-flight requests whenever metrics are collected."""

        def callback(_: CallbackOptions) -> Iterable[Observation]:
            yield Observation(read(), {names.AGENT_NAME: agent})

        self._meter.create_observable_up_down_counter(
            names.M_SERVER_IN_FLIGHT,
            callbacks=[callback],
            unit="{request}",
            description="A2A requests in flight on this replica.",
        )

"""W3C trace context and baggage across process boundaries (the global propagator).

The propagator is the SDK's: ``tracecontext,baggage`` unless ``OTEL_PROPAGATORS`` says
otherwise. Agents extract it from HTTP headers and gRPC metadata at their admission gate;
the mesh client injects it into every call; the planner carries it into Ray tasks and
actors with :func:`carrier` and :func:`attached`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.propagators.textmap import Getter


def carrier(ctx: Context | None = None) -> dict[str, str]:
    """The current (or ``ctx``'s) trace context and baggage as a plain, picklable dict.

    Empty when there is nothing to carry. Send it with a Ray task or actor call and enter
    it on the other side with :func:`attached`.
    """
    out: dict[str, str] = {}
    inject(out, context=ctx)
    return out


@contextlib.contextmanager
def attached(carrier: Mapping[str, str] | None) -> Iterator[Context]:
    """Makes the context in ``carrier`` current for the block (spans started inside are its children).

    ``None`` or an empty carrier leaves the current context as it is.
    """
    if not carrier:
        yield otel_context.get_current()
        return
    ctx = extract(dict(carrier))
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)


class _AsgiHeaders(Getter[Mapping[bytes, bytes]]):
    """Reads an ASGI header dict (lower-case byte names)."""

    def get(self, carrier: Mapping[bytes, bytes], key: str) -> list[str] | None:
        value = carrier.get(key.encode("latin-1"))
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Mapping[bytes, bytes]) -> list[str]:
        return [k.decode("latin-1") for k in carrier]


ASGI_HEADERS = _AsgiHeaders()


def from_asgi(headers: Mapping[bytes, bytes]) -> Context:
    """The remote parent context sent in HTTP request headers."""
    return extract(headers, getter=ASGI_HEADERS)  # type: ignore[arg-type]


def from_grpc(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context:
    """The remote parent context sent in gRPC metadata.

    One dict of the text entries, read by the default getter: each propagator looks up its
    keys (traceparent, tracestate, baggage) in it instead of scanning the metadata each time.
    Binary (``-bin``) entries carry no W3C context and are left out.
    """
    return extract({k: v for k, v in metadata or () if isinstance(v, str)})

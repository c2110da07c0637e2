"""The tools domain: the order database and the tool calls an SLM may propose against it.

The A2A executor lives in :mod:`mesh.tools.executor` and is not re-exported here, so
that building SLM prompts from :func:`tool_specs` does not import the A2A server.
"""

from __future__ import annotations

from mesh.tools.catalog import (
    FACT_KINDS,
    TOOLS,
    ArgumentProblem,
    Execution,
    IdempotencyConflictError,
    InvalidArgumentsError,
    MalformedCallError,
    MissingIdempotencyKeyError,
    Policy,
    Principal,
    Tool,
    ToolCall,
    ToolCallError,
    UnknownToolError,
    execute_call,
    fact_kinds,
    parse_call,
    result_facts,
    run_tool_call,
    tool_specs,
)
from mesh.tools.orders import create_demo_database, is_initialized

__all__ = [
    "FACT_KINDS",
    "TOOLS",
    "ArgumentProblem",
    "Execution",
    "IdempotencyConflictError",
    "InvalidArgumentsError",
    "MalformedCallError",
    "MissingIdempotencyKeyError",
    "Policy",
    "Principal",
    "Tool",
    "ToolCall",
    "ToolCallError",
    "UnknownToolError",
    "create_demo_database",
    "execute_call",
    "fact_kinds",
    "is_initialized",
    "parse_call",
    "result_facts",
    "run_tool_call",
    "tool_specs",
]

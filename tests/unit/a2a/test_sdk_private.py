"""Every private name of a2a-sdk the mesh uses (mesh.a2a.sdk_private) still exists, with the shape
the mesh relies on; one failure lists everything that moved."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

from a2a.server.agent_execution.active_task import ActiveTask
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore, TaskManager
from a2a.types import a2a_pb2 as pb

from mesh.a2a import sdk_private
from mesh.a2a.executor import to_sdk
from tests.support.echo import EchoExecutor


def _instances() -> dict[str, Any]:
    """One instance per class whose instance attributes are accessed (set in ``__init__``)."""
    store = InMemoryTaskStore()
    handler = DefaultRequestHandler(
        agent_executor=to_sdk(EchoExecutor()), task_store=store, agent_card=pb.AgentCard()
    )
    manager = TaskManager(store, ServerCallContext(), "t", "c", None)
    active = ActiveTask(to_sdk(EchoExecutor()), "t", manager)
    return {
        "DefaultRequestHandlerV2": handler,
        "TaskManager": manager,
        "ActiveTask": active,
    }


def _type_matches(value: Any, shape: str) -> bool:
    """``shape`` is a union of type names ('Task | None'); the value's class (or a base) is one."""
    names = {part.strip() for part in shape.split("|")}
    if value is None:
        return "None" in names
    return any(cls.__name__ in names for cls in type(value).__mro__)


def _moved(access: sdk_private.Access, instances: dict[str, Any]) -> str | None:
    module_name, _, class_name = access.owner.partition(":")
    where = f"{access.owner}.{access.name}"
    try:
        owner: Any = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
    except (ImportError, AttributeError) as exc:
        return f"{where}: owner gone ({exc})"
    if isinstance(access.shape, tuple):
        target = getattr(owner, access.name, None)
        if module_name == "a2a.utils.telemetry":  # swapped by install(): check a2a-sdk's own
            target = sdk_private.REPLACED.get(access.name, target)
        if not callable(target):
            return f"{where}: no longer a callable"
        params = [p for p in inspect.signature(target).parameters if p != "self"]
        if params != list(access.shape):
            return f"{where}: parameters {params}, expected {list(access.shape)}"
        return None
    instance = instances.get(class_name)
    if instance is None:
        return f"{where}: the test builds no {class_name} to check it on"
    if not hasattr(instance, access.name):
        return f"{where}: attribute gone"
    value = getattr(instance, access.name)
    if not _type_matches(value, access.shape):
        return f"{where}: a {type(value).__name__}, expected {access.shape}"
    return None


async def test_every_private_access_still_has_its_shape() -> None:
    instances = _instances()
    moved = [m for a in sdk_private.ACCESSES if (m := _moved(a, instances)) is not None]
    assert not moved, (
        "a2a-sdk changed names mesh/a2a/sdk_private.py relies on (see each entry's 'upstream' "
        "there for the public replacement to look for):\n  " + "\n  ".join(moved)
    )
    await instances["DefaultRequestHandlerV2"].aclose()
    await asyncio.sleep(0)


def test_the_table_names_every_private_the_module_reads() -> None:
    """A new access added to a function of the module is listed in ACCESSES too."""
    source = inspect.getsource(sdk_private)
    listed = {a.name for a in sdk_private.ACCESSES}
    used = {
        word.split("(")[0]
        for line in source.splitlines()
        if "noqa: SLF001" in line or "import _" in line
        for word in line.replace(".", " ").split()
        if word.startswith("_") and not word.startswith("__")
    }
    assert used <= listed, f"read in mesh/a2a/sdk_private.py but not in ACCESSES: {used - listed}"

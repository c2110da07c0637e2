"""The planner's Ray side: start or join a cluster, host the step runners, dispatch steps.

Locally (the embedded default) ``ray.init()`` starts a private Ray instance for the
planner process; with ``RAY_ADDRESS`` set (read by Ray itself) the planner joins that
cluster instead, e.g. a KubeRay ``RayCluster``. Steps are calls on async actors hosting a
:class:`~mesh.planner.steps.StepRunner`: an actor call costs less than a task round trip
(docs/benchmarks.md, "Planner"), and an actor keeps its pooled mesh
client and registry view between steps.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mesh.config import Settings
from mesh.errors import MeshError
from mesh.planner.steps import StepCall, StepRunner

log = logging.getLogger(__name__)

#: What joining a cluster with token authentication takes: Ray's own variables (Ray sends a
#: token to an explicit address only in token mode, never by default).
TOKEN_SETTINGS = (
    "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, or in a file named by "
    "RAY_AUTH_TOKEN_PATH (`ray get-auth-token` on the head node prints it)"
)


class RayClusterError(MeshError):
    """The planner cannot join the Ray cluster at ``RAY_ADDRESS``."""


class RayOptions(BaseModel):
    """``options.ray`` of the planner's spec."""

    model_config = ConfigDict(extra="forbid")

    runners: int = Field(
        1, ge=1, description="Step-runner actors; each runs many steps concurrently."
    )
    max_concurrency: int = Field(1000, ge=1, description="Steps one runner works on at once.")
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs of a local Ray instance (default: all)."
    )
    object_store_mb: int = Field(256, ge=80, description="Object store of a local Ray instance.")
    namespace: str = "slmesh"


WORKER_ENV = {"worker_process_setup_hook": "mesh.a2a.install"}
"""Each Ray worker is an entry point: it installs the mesh's a2a-sdk set-up before it
unpickles a step runner (whose module imports the mesh client)."""


class RayRuntime:
    """Ray for one planner process: connection, runner actors, step dispatch."""

    def __init__(self, settings: Settings, options: RayOptions) -> None:
        self.settings = settings
        self.options = options
        self.ray: Any = None
        self._runners: list[Any] = []
        self._next = itertools.count()
        self._started_local = False

    def start(self) -> None:
        """Connects (or starts a local instance) and starts the runner actors."""
        import ray

        self.ray = ray
        if not ray.is_initialized():
            if self.settings.ray_address:
                self._join(ray, self.settings.ray_address)
            else:
                ray.init(
                    namespace=self.options.namespace,
                    num_cpus=self.options.num_cpus,
                    object_store_memory=self.options.object_store_mb * 1024 * 1024,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    runtime_env=WORKER_ENV,
                )
            self._started_local = True
            log.info(
                "ray %s connected (%s)",
                ray.__version__,
                self.settings.ray_address or "local instance",
            )
        # Ray's overloads of remote() omit actor options such as max_concurrency.
        actor = ray.remote(  # type: ignore[call-overload]  # see above
            num_cpus=0, max_concurrency=self.options.max_concurrency
        )(StepRunner)
        self._runners = [actor.remote(self.settings) for _ in range(self.options.runners)]

    def _join(self, ray: Any, address: str) -> None:
        """``ray.init`` on an existing cluster; a refusal becomes one line saying what to set."""
        from ray.exceptions import AuthenticationError

        try:
            ray.init(
                address=address,
                namespace=self.options.namespace,
                log_to_driver=False,
                runtime_env=WORKER_ENV,
            )
        except AuthenticationError as exc:
            raise RayClusterError(
                f"cannot join the Ray cluster at {address}: it needs a token the planner "
                f"lacks; {TOKEN_SETTINGS}"
            ) from exc
        except ConnectionError as exc:
            # Without RAY_AUTH_MODE=token, Ray reports a token cluster's refusal only as this.
            raise RayClusterError(
                f"cannot join the Ray cluster at {address} ({exc}): if it uses token "
                f"authentication, {TOKEN_SETTINGS}; else check RAY_ADDRESS (the head's host:port)"
            ) from exc

    async def ready(self) -> bool:
        """Waits until every runner is up (and connected to the registry); returns whether every
        worker installed the mesh's a2a-sdk set-up (:data:`WORKER_ENV`), warning if not."""
        installed = [await runner.ping.remote() for runner in self._runners]
        if not all(installed):
            log.warning(
                "Ray workers run without mesh.a2a.install() (their setup hook did not run): "
                "a2a-sdk's span wrappers cost CPU on every step call"
            )
        return all(installed)

    def submit(self, call: StepCall, dep_refs: list[Any]) -> Any:
        """Dispatches one step; returns the ``ObjectRef`` of its :class:`Outcome`."""
        runner = self._runners[next(self._next) % len(self._runners)]
        return runner.run.remote(call, *dep_refs)

    async def stop(self) -> None:
        for runner in self._runners:
            try:
                await runner.close.remote()
            except Exception:  # noqa: BLE001 - the actor may already be gone
                pass
            self.ray.kill(runner)
        self._runners = []
        if self._started_local and self.ray is not None:
            self.ray.shutdown()

"""The one configuration model of the mesh.

Every process builds a :class:`Settings` once at start-up (from ``SLMESH_*`` environment
variables) and passes it down; per-service behaviour comes from the service's YAML spec
(:class:`ServiceSpec`). Nothing else in ``mesh`` reads the environment, except the
OpenTelemetry SDK for the standard ``OTEL_*`` variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

SPEC_FILE = "agent.yaml"
_CONTENT_MODES = {
    "SPAN_ONLY": True,
    "SPAN_AND_EVENT": True,
    "NO_CONTENT": False,
    "EVENT_ONLY": False,
}
"""OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT's named modes (besides true/false)."""
"""Name of the spec file inside each ``services/<name>/`` folder."""


class Settings(BaseSettings):
    """Process-wide settings, read from ``SLMESH_*`` environment variables and the standard
    ``OTEL_*`` ones the mesh acts on (the SDK reads the others itself)."""

    model_config = SettingsConfigDict(env_prefix="SLMESH_", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", description="Interface the servers bind to.")
    advertise_host: str = Field(
        "localhost",
        description="Host name written into agent cards and registry entries "
        "(service DNS name in Kubernetes; never a raw private IP).",
    )
    public_jsonrpc_url: str | None = Field(
        None,
        description="JSON-RPC URL the agent card advertises instead of its own (a replica "
        "behind a proxy or load balancer); the registry keeps the replica's own endpoints.",
    )
    public_http_json_url: str | None = Field(
        None, description="HTTP+JSON (REST) URL the agent card advertises instead of its own."
    )
    public_grpc_url: str | None = Field(
        None,
        description="gRPC URL the agent card advertises instead of its own (host:port, the "
        "form grpc clients dial, as the card's own).",
    )
    grpc_max_connection_age_s: float = Field(
        0.0,
        ge=0,
        description="After this long a gRPC connection is closed gracefully (GOAWAY; calls in "
        "flight finish), so clients behind an L4 load balancer reconnect and spread over the "
        "replicas; 0: a connection lives as long as its client keeps it.",
    )
    card_max_age_s: int = Field(
        300,
        ge=0,
        description="Cache-Control max-age of the agent card (ETag and Last-Modified come with "
        "it; a client revalidates with If-None-Match / If-Modified-Since and gets 304).",
    )
    http_port: int = Field(
        0, ge=0, le=65535, description="JSON-RPC + REST port; 0 picks a free one."
    )
    grpc_port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    registry: str | None = Field(
        None,
        description="host:port of the registry; agents register there when set. Several "
        "registry replicas (on one registry_database): host1:port1,host2:port2, tried in turn "
        "when one is unreachable.",
    )
    replica_id: str | None = Field(
        None, description="Replica id announced to the registry; defaults to name-host-pid."
    )
    data_dir: Path = Field(Path(".slmesh"), description="Where SQLite files and state live.")
    task_store: str = Field(
        "sqlite",
        description="'sqlite' (a file under data_dir), 'memory', or an SQLAlchemy async URL "
        "(e.g. postgresql+asyncpg://127.0.0.1/test).",
    )
    task_events: Literal["local", "database"] = Field(
        "local",
        description="'database' makes tasks replica-agnostic: with an SQLAlchemy task_store URL, "
        "a2a-sdk's versioned task store and its event log in that database let GetTask, ListTasks, "
        "CancelTask and SubscribeToTask reach a task from any replica. 'local' keeps a task's "
        "live events in the process running it.",
    )
    task_event_feed: Literal["notify", "poll"] = Field(
        "notify",
        description="With task_events='database' on PostgreSQL: how a replica hears of the task "
        "events other replicas commit, for its SubscribeToTask callers. 'notify': a trigger on "
        "the event log NOTIFYs at each commit and one LISTEN connection per replica wakes the "
        "subscribers, which read the log (it stays the truth; after a reconnect they read what "
        "they missed). 'poll': a2a-sdk's stream reads the log every 0.5 s; for a PostgreSQL "
        "reached through a transaction-pooling PgBouncer, where LISTEN does not work.",
    )
    task_store_pool_size: int = Field(
        5,
        ge=1,
        description="With a PostgreSQL task_store: connections one agent replica keeps open to it "
        "(tasks, their event log, leases and push configs share them).",
    )
    task_store_max_overflow: int = Field(
        10,
        ge=0,
        description="Connections a replica may open beyond task_store_pool_size under load, "
        "closed again when returned; the most a replica holds is their sum plus, with shared "
        "tasks, one LISTEN connection (docs/scaling.md sums them against max_connections).",
    )
    task_lease_s: float = Field(
        10.0,
        gt=0,
        description="With task_events='database' on PostgreSQL: how long a replica's lease on a "
        "task it executes lasts without renewal. A replica killed mid-task is noticed this long "
        "after its last renewal; another replica then takes the task over and re-executes its "
        "request.",
    )
    task_lease_renew_s: float = Field(
        2.0,
        gt=0,
        description="How often a replica renews the leases of the tasks it executes and looks for "
        "expired leases to take over (below task_lease_s, so a pause of one beat does not lose a "
        "lease).",
    )
    task_max_takeovers: int = Field(
        3,
        ge=0,
        description="How many times one task may be taken over from a replica that died; past it "
        "the task fails with a reason naming the limit (a request that kills every replica that "
        "runs it stops there).",
    )
    orders_database: SecretStr | None = Field(
        None,
        description="The tools agent's order database on PostgreSQL "
        "(postgresql://USER:PASSWORD@HOST:5432/DB), shared by every tools replica; `slmesh db "
        "upgrade` creates and migrates its schema, and a replica on an older schema refuses to "
        "start. Unset: a SQLite file per options.database under data_dir (the embedded default, "
        "one host only).",
    )
    orders_pool_size: int = Field(
        5,
        ge=1,
        description="Connections one tools replica opens to the PostgreSQL order database at most "
        "(calls beyond it wait for one); the HPA's maxReplicas times this must fit the server's "
        "max_connections (docs/scaling.md).",
    )
    planner_pool_size: int = Field(
        3,
        ge=1,
        description="Connections one planner replica opens to the run store when runs are shared "
        "(task_events='database' on a PostgreSQL task_store: runs and their finished steps live "
        "there, so any planner replica resumes a run it takes over); beside the task store's own "
        "pool (docs/scaling.md).",
    )
    registry_database: SecretStr | None = Field(
        None,
        description="The registry's replicas in PostgreSQL "
        "(postgresql://USER:PASSWORD@HOST:5432/DB): registry processes on one database serve one "
        "truth, and Watch is fed by LISTEN/NOTIFY on its change log, so several registry replicas "
        "can run. The registry creates its tables. Unset: in memory, one registry process.",
    )
    registry_pool_size: int = Field(
        5,
        ge=1,
        description="Connections one registry replica opens to registry_database at most, plus "
        "one that listens for changes (docs/scaling.md).",
    )
    registry_lease_s: float = Field(
        3.0,
        gt=0,
        description="With registry_database: a registry replica that has had no answer from the "
        "database for this long (a network partition closes nothing) ends its watches, fails "
        "calls UNAVAILABLE and reports NOT_SERVING until the database answers again, so it "
        "never serves an old picture while the others serve the truth. Keep it well below "
        "registry_ttl_s.",
    )
    max_request_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="Largest accepted request body / gRPC message."
    )
    drain_timeout_s: float = Field(
        30.0, gt=0, description="How long SIGTERM waits for in-flight requests."
    )
    heartbeat_interval_s: float = Field(2.0, gt=0, description="Registry heartbeat period.")
    registry_ttl_s: float = Field(
        10.0, gt=0, description="A replica without heartbeat for this long is expired."
    )
    accept_a2a_v03: bool = Field(
        False,
        description="Also accept A2A 0.3 requests (no A2A-Version header) on JSON-RPC and REST.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token every A2A call must carry (declared in the agent card); "
        "unset means an open mesh (local development only).",
    )
    registration_token: SecretStr | None = Field(
        None,
        description="Token the registry requires on Register/Heartbeat/Deregister (agents send "
        "it); unset falls back to api_token, and with neither the registry is open (local "
        "development only).",
    )
    max_in_flight: int = Field(
        0,
        ge=0,
        description="Requests one agent replica runs at once; beyond it new ones are shed with "
        "HTTP 503 / gRPC UNAVAILABLE and a retry hint (the client retries another replica). 0: no "
        "limit.",
    )
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain: with tls_key_file, serves HTTPS and gRPC over TLS and "
        "is the client certificate on outbound calls (registry, agents).",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle: servers then require client certificates it signed (mutual "
        "TLS) and clients verify servers against it.",
    )
    signing_keys: str = Field(
        "",
        description="Comma-separated PEM private key files (mounted secrets; Ed25519, EC P-256 "
        "or RSA) this agent signs with: its card (one JWS per key, over the RFC 8785 canonical "
        "form), its registry writes and its push notifications. Two keys rotate: verifiers "
        "pinned to either accept. Key ids are RFC 7638 thumbprints.",
    )
    trust_bundle: Path | None = Field(
        None,
        description="JWK Set file of pinned public keys (each with 'agents': the names it may "
        "speak for, optional 'exp'). The registry and the mesh client verify card signatures "
        "against it, never against a key URL a card names (jku); `slmesh trust KEYFILE --agent "
        "NAME` prints an entry.",
    )
    require_signed_cards: bool = Field(
        False,
        description="Refuse an agent card without a valid signature by a trust-bundle key bound "
        "to its agent name: at registration (the registry) and before calling (the mesh client).",
    )
    registration_identity: Literal["token", "agent"] = Field(
        "token",
        description="Registry writes: 'token' takes any holder of the registration token; "
        "'agent' also needs a credential bound to the replica's agent name: a registration proof "
        "signed by a trust-bundle key bound to it, or a client certificate (mutual TLS) with the "
        "URI SAN slmesh://agent/NAME. A replica may then register, heartbeat and deregister only "
        "under its own agent's names.",
    )
    push_notifications: bool = Field(
        False,
        description="Offer A2A push notifications: configs (create, get, list, delete) on all "
        "three transports, kept next to the task store, and delivery of task updates to their "
        "HTTPS webhooks, signed with SLMESH_SIGNING_KEYS. Cards then say pushNotifications.",
    )
    push_allow: str = Field(
        "",
        description="Comma-separated addresses or CIDR networks push URLs may reach although "
        "they are loopback, private, link-local or otherwise non-public (the SSRF guard refuses "
        "those by default), e.g. 10.0.0.0/8 for in-cluster receivers.",
    )
    push_allow_http: bool = Field(
        False,
        description="Also accept plain http push URLs, only to addresses SLMESH_PUSH_ALLOW "
        "names (a receiver inside a network you trust; never a public address). Off: HTTPS "
        "only.",
    )
    push_ca_file: Path | None = Field(
        None, description="PEM CA bundle webhook receivers are verified with (default: system)."
    )
    push_timeout_s: float = Field(10.0, gt=0, description="Timeout of one push delivery try.")
    push_max_attempts: int = Field(
        5,
        ge=1,
        description="Tries per notification (retries on connection errors, timeouts, "
        "429 and 5xx, with exponential backoff).",
    )
    push_backoff_s: float = Field(
        0.5, gt=0, description="Wait before the first retry of a push; doubles per try."
    )
    push_poll_s: float = Field(
        1.0,
        gt=0,
        description="How often a replica looks in the push outbox for notifications due again "
        "or left by a replica that died (its own new events are delivered at once). A dead "
        "replica's notifications are taken over once their lease (2 x SLMESH_PUSH_TIMEOUT_S "
        "+ 1 s) ends.",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="Default client deadline per call.")
    log_level: str = Field("INFO", description="Python logging level.")
    ray_address: str | None = Field(
        None,
        validation_alias=AliasChoices("SLMESH_RAY_ADDRESS", "RAY_ADDRESS"),
        description="Ray cluster the planner joins (also read from Ray's own RAY_ADDRESS); "
        "unset starts a private local Ray instance in the planner process.",
    )
    otel_sdk_disabled: bool = Field(
        False,
        validation_alias="OTEL_SDK_DISABLED",
        description="Standard OTEL_SDK_DISABLED: true installs no OpenTelemetry SDK at all (no "
        "spans, no metrics: /metrics answers an empty exposition, no logs). Wins over "
        "SLMESH_OTEL_ENABLED.",
    )
    otel_enabled: bool | None = Field(
        None,
        description="Deprecated alias, kept for one release: true exports the signals of "
        "SLMESH_OTEL_EXPORT over OTLP (as OTEL_<SIGNAL>_EXPORTER=otlp would, which wins where "
        "set); false is OTEL_SDK_DISABLED=true (which wins where set).",
    )
    otel_traces_exporter: str | None = Field(
        None,
        validation_alias="OTEL_TRACES_EXPORTER",
        description="Standard OTEL_TRACES_EXPORTER: otlp, console or none (comma-separated). "
        "Unset: none (the mesh records no spans and pays nothing per request), unless "
        "SLMESH_OTEL_ENABLED=true.",
    )
    otel_metrics_exporter: str | None = Field(
        None,
        validation_alias="OTEL_METRICS_EXPORTER",
        description="Standard OTEL_METRICS_EXPORTER: otlp, console, prometheus or none "
        "(comma-separated) for pushed metrics; /metrics (Prometheus) is served either way. "
        "Unset: none, unless SLMESH_OTEL_ENABLED=true.",
    )
    otel_logs_exporter: str | None = Field(
        None,
        validation_alias="OTEL_LOGS_EXPORTER",
        description="Standard OTEL_LOGS_EXPORTER: otlp, console or none (comma-separated). "
        "Unset: none, unless SLMESH_OTEL_ENABLED=true.",
    )
    otlp_protocol: Literal["grpc", "http/protobuf"] = Field(
        "grpc",
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_PROTOCOL", "SLMESH_OTLP_PROTOCOL"),
        description="Standard OTEL_EXPORTER_OTLP_PROTOCOL: OTLP exporter transport (its "
        "endpoint: OTEL_EXPORTER_OTLP_ENDPOINT). SLMESH_OTLP_PROTOCOL is a deprecated alias; "
        "the standard variable wins when both are set.",
    )
    otel_export: str = Field(
        "traces,metrics,logs",
        description="Deprecated alias, kept for one release: with SLMESH_OTEL_ENABLED=true, the "
        "signals exported over OTLP, comma-separated from traces, metrics, logs; each "
        "OTEL_<SIGNAL>_EXPORTER set wins over it.",
    )
    otel_project: str = Field(
        "slmesh",
        description="Project the traces land in (openinference.project.name, for Phoenix).",
    )
    environment: str = Field("local", description="deployment.environment.name of every process.")
    trace_content: bool = Field(
        False,
        validation_alias=AliasChoices(
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SLMESH_TRACE_CONTENT"
        ),
        description="Standard OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: record prompts, "
        "completions and tool arguments/results on spans (may hold personal data; off by "
        "default; true, or SPAN_ONLY / SPAN_AND_EVENT). SLMESH_TRACE_CONTENT is a deprecated "
        "alias; the standard variable wins when both are set.",
    )
    http_spans: bool = Field(
        False,
        description="Also record FastAPI's own HTTP server spans and http.server.* metrics on "
        "agents (the hop's invoke_agent span exists on every transport without them).",
    )
    prometheus: bool = Field(
        True,
        description="Serve Prometheus metrics at /metrics: agents on their HTTP port, the "
        "registry on metrics_port.",
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="HTTP port of the registry's /metrics (it serves gRPC only otherwise); 0 "
        "picks a free one. Agents serve /metrics on http_port.",
    )
    record_db: Path | None = Field(
        None,
        description="Opt-in call recorder of the conversion loop: SQLite file where SLM agents "
        "store each call, redacted (input, output, skill, model, latency, outcome); unset records "
        "nothing.",
    )
    record_names_from: str | None = Field(
        None,
        description="Agent (e.g. extractor) the call recorder asks over the mesh, through the "
        "registry, for the names in each recorded call's input, so they are redacted too; a call "
        "whose names cannot be looked up is dropped, never written unredacted. Unset: only the "
        "names in a call's own output (the extractor's name field) are known.",
    )
    ui: bool = Field(
        True, description="`slmesh up` also starts the tracing UI (Arize Phoenix) when installed."
    )

    @field_validator("otel_export")
    @classmethod
    def _signals(cls, value: str) -> str:
        signals = [s.strip() for s in value.split(",") if s.strip()]
        unknown = set(signals) - {"traces", "metrics", "logs"}
        if unknown:
            raise ValueError(
                f"otel_export: unknown signals {sorted(unknown)}; use traces, metrics, logs"
            )
        return ",".join(signals)

    @field_validator("otel_traces_exporter", "otel_metrics_exporter", "otel_logs_exporter")
    @classmethod
    def _exporters(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        names = [n.strip().lower() for n in value.split(",") if n.strip()]
        known = {"otlp", "console", "none"}
        if info.field_name == "otel_metrics_exporter":
            known.add("prometheus")
        unknown = set(names) - known
        if unknown:
            env = info.field_name.upper() if info.field_name else "exporter"
            raise ValueError(f"{env}: unknown exporters {sorted(unknown)}; use {sorted(known)}")
        return ",".join(names)

    @field_validator("trace_content", mode="before")
    @classmethod
    def _capture_content(cls, value: Any) -> Any:
        # The GenAI semantic conventions also name where content goes; spans are where the
        # mesh records it.
        if isinstance(value, str) and value.strip().upper() in _CONTENT_MODES:
            return _CONTENT_MODES[value.strip().upper()]
        return value

    def otel_disabled(self) -> bool:
        """No SDK at all: OTEL_SDK_DISABLED, else SLMESH_OTEL_ENABLED=false (its alias)."""
        if "otel_sdk_disabled" in self.model_fields_set:
            return self.otel_sdk_disabled
        return self.otel_enabled is False

    def exporters(self, signal: Literal["traces", "metrics", "logs"]) -> list[str]:
        """Where ``signal`` goes (otlp, console, prometheus), from OTEL_<SIGNAL>_EXPORTER, else
        from the SLMESH_OTEL_ENABLED / SLMESH_OTEL_EXPORT aliases; empty: nowhere."""
        if self.otel_disabled():
            return []
        chosen = getattr(self, f"otel_{signal}_exporter")
        if chosen is None:
            chosen = "otlp" if self.otel_enabled and signal in self.otel_export.split(",") else ""
        return [n for n in chosen.split(",") if n and n != "none"]

    @model_validator(mode="after")
    def _lease_timing(self) -> Settings:
        if self.task_lease_renew_s >= self.task_lease_s:
            raise ValueError(
                f"task_lease_renew_s ({self.task_lease_renew_s}) must be below task_lease_s "
                f"({self.task_lease_s}): a lease renewed less often than it lasts expires while "
                "its task still runs"
            )
        return self

    def signing_key_files(self) -> list[Path]:
        """The files of ``signing_keys``, in order (the first signs registration proofs)."""
        return [Path(p.strip()) for p in self.signing_keys.split(",") if p.strip()]

    @model_validator(mode="after")
    def _signed_cards_need_keys(self) -> Settings:
        if self.require_signed_cards and self.trust_bundle is None:
            raise ValueError(
                "require_signed_cards needs trust_bundle (SLMESH_TRUST_BUNDLE: a JWK Set of the "
                "public keys to verify cards with)"
            )
        return self

    @field_validator("orders_database", "registry_database")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        scheme = value.get_secret_value().split("://", 1)[0]
        if scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
            unset = (
                "the SQLite file of options.database"
                if info.field_name == "orders_database"
                else "the in-memory store"
            )
            raise ValueError(
                f"{info.field_name} must be a PostgreSQL URL (postgresql://...), got {scheme}://; "
                f"leave it unset for {unset}"
            )
        return value

    @field_validator("registry")
    @classmethod
    def _strip_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None
        addresses = [a.strip().split("://", 1)[-1] for a in value.split(",")]
        return ",".join(a for a in addresses if a) or None


class SkillSpec(BaseModel):
    """One A2A skill as written in a service spec."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    description: str
    tags: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)
    input_modes: list[str] = Field(default_factory=list)
    output_modes: list[str] = Field(default_factory=list)


class ServiceSpec(BaseModel):
    """A deployable service: ``services/<name>/agent.yaml``.

    ``kind: agent`` services are served by the A2A runtime with the executor named by
    ``executor`` (``module:Class``), constructed with ``options``. ``kind: registry`` is
    the discovery service.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    kind: Literal["agent", "registry"] = "agent"
    description: str = ""
    version: str = "0.1.0"
    executor: str | None = Field(None, pattern=r"^[\w.]+:\w+$")
    skills: list[SkillSpec] = Field(default_factory=list)
    input_modes: list[str] = Field(default_factory=lambda: ["text/plain", "application/json"])
    output_modes: list[str] = Field(default_factory=lambda: ["application/json", "text/plain"])
    options: dict[str, Any] = Field(default_factory=dict)
    path: Path | None = Field(None, exclude=True, description="Folder the spec was read from.")

    @classmethod
    def load(cls, path: str | Path) -> ServiceSpec:
        """Reads a spec from a service folder or a YAML file; errors say which file and field."""
        path = Path(path)
        file = path / SPEC_FILE if path.is_dir() else path
        if not file.is_file():
            raise SpecError(f"no service spec at {file} (expected a folder with {SPEC_FILE})")
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            spec = cls.model_validate(raw)
        except (yaml.YAMLError, ValidationError) as exc:
            raise SpecError(f"invalid service spec {file}: {exc}") from exc
        if spec.kind == "agent" and not spec.executor:
            raise SpecError(f"invalid service spec {file}: an agent needs 'executor: module:Class'")
        spec.path = file.parent.resolve()
        return spec


class SpecError(ValueError):
    """A service spec is missing or invalid."""


def discover_services(root: str | Path = "services") -> list[ServiceSpec]:
    """All service specs under ``root``, registry first, then agents by name."""
    specs = [ServiceSpec.load(p) for p in sorted(Path(root).glob(f"*/{SPEC_FILE}"))]
    return sorted(specs, key=lambda s: (s.kind != "registry", s.name))


def postgres_connections(
    settings: Settings, service: Literal["agent", "planner", "registry"]
) -> int:
    """The most PostgreSQL connections one replica of ``service`` opens with ``settings``:
    every pool at its bound and each ``LISTEN`` connection. The connection arithmetic of
    docs/scaling.md and the deploy checks sum this over replicas."""
    if service == "registry":
        return settings.registry_pool_size + 1 if settings.registry_database else 0
    total = 0
    scheme = settings.task_store.split("+", 1)[0].split(":", 1)[0]
    if scheme in ("postgresql", "postgres"):
        total += settings.task_store_pool_size + settings.task_store_max_overflow
        if settings.task_events == "database":
            # Shared tasks: the event feed's LISTEN connection; the planner's run store.
            total += 1 if settings.task_event_feed == "notify" else 0
            total += settings.planner_pool_size if service == "planner" else 0
    if settings.orders_database is not None:
        total += settings.orders_pool_size
    return total


def registry_credential(settings: Settings) -> str | None:
    """The token this process sends to the registry: the registration token, else the API token."""
    token = settings.registration_token or settings.api_token
    return token.get_secret_value() if token else None

"""Span, attribute and metric names of the mesh, in one place.

GenAI names follow the OpenTelemetry GenAI semantic conventions (development status);
``a2a.*`` and ``mesh.*`` are the mesh's own. Phoenix files dotted attribute keys as nested
objects, so no key here is the prefix of another key (``a2a.task.id``, not ``a2a.task``).
"""

from __future__ import annotations

# -- GenAI semantic conventions -------------------------------------------------------
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
AGENT_DESCRIPTION = "gen_ai.agent.description"
CONVERSATION_ID = "gen_ai.conversation.id"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_SEED = "gen_ai.request.seed"
OUTPUT_TYPE = "gen_ai.output.type"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT = "gen_ai.tool.call.result"
TOKEN_TYPE = "gen_ai.token.type"

OP_INVOKE_AGENT = "invoke_agent"
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_EXECUTE_TOOL = "execute_tool"

# -- RPC / network ----------------------------------------------------------------------
RPC_SYSTEM = "rpc.system"
RPC_METHOD = "rpc.method"
SERVER_ADDRESS = "server.address"
ERROR_TYPE = "error.type"

# -- A2A and the mesh ---------------------------------------------------------------------
TASK_ID = "a2a.task.id"
CONTEXT_ID = "a2a.context.id"
TASK_STATE = "a2a.task.state"
TRANSPORT = "mesh.transport"
"""The A2A binding a call used: GRPC, JSONRPC or HTTP+JSON."""
REPLICA = "mesh.replica.id"
RETRIES = "mesh.retries"
BATCH_SIZE = "mesh.slm.batch_size"
QUEUE_WAIT = "mesh.slm.queue_wait_s"
TOKENS_PER_S = "mesh.slm.tokens_per_s"
PARAMETERS = "mesh.slm.parameters"
MEAN_LOGPROB = "mesh.slm.mean_logprob"
TOOL_REPLAYED = "mesh.tool.replayed"
TOOL_OUTCOME = "mesh.tool.outcome"

# Phoenix (OpenInference) reads its own span kind to pick icons and views.
OPENINFERENCE_KIND = "openinference.span.kind"
OPENINFERENCE_PROJECT = "openinference.project.name"

# -- resource -------------------------------------------------------------------------
DEPLOYMENT_ENVIRONMENT = "deployment.environment.name"

# -- metrics --------------------------------------------------------------------------
M_SERVER_DURATION = "mesh.agent.request.duration"
M_SERVER_IN_FLIGHT = "mesh.agent.requests.in_flight"
M_CLIENT_DURATION = "mesh.client.request.duration"
M_GENAI_DURATION = "gen_ai.server.request.duration"
M_GENAI_TOKENS = "gen_ai.client.token.usage"
M_GENAI_TTFT = "gen_ai.server.time_to_first_token"
M_SLM_BATCH = "mesh.slm.batch_size"
M_SLM_TOKENS_PER_S = "mesh.slm.tokens_per_second"
M_SLM_QUEUE_WAIT = "mesh.slm.queue_wait"
M_TOOL_DURATION = "mesh.tool.duration"
M_REGISTRY_REPLICAS = "mesh.registry.replicas"
M_REGISTRY_REGISTRATIONS = "mesh.registry.registrations"
M_REGISTRY_EXPIRIES = "mesh.registry.expiries"
M_REGISTRY_WATCH_CLIENTS = "mesh.registry.watch_clients"

# -- the planner ----------------------------------------------------------------------
PLAN_SOURCE = "mesh.plan.source"
"""Where the plan came from: request, workflow or router."""
PLAN_WORKFLOW = "mesh.plan.workflow"
PLAN_STEPS = "mesh.plan.steps"
STEP_ID = "mesh.step.id"
STEP_SKILL = "mesh.step.skill"
STEP_FN = "mesh.step.fn"
STEP_STATUS = "mesh.step.status"
STEP_ATTEMPTS = "mesh.step.attempts"

# -- the SLM-first router and the cost ledger -------------------------------------------
ESCALATION = "escalation"
"""Span event on a step that went on to a larger model."""
ESCALATION_FROM = "mesh.escalation.from"
ESCALATION_TO = "mesh.escalation.to"
ESCALATION_REASON = "mesh.escalation.reason"
STEP_ESCALATIONS = "mesh.step.escalations"
COST_FLOPS = "mesh.cost.flops"
"""Estimated FLOPs of every model call of the task (2 x parameters x tokens)."""
COST_BASELINE_FLOPS = "mesh.cost.baseline_flops"
"""The same calls priced with the largest model offering each skill."""
COST_RATIO = "mesh.cost.ratio"
COST_ESCALATIONS = "mesh.cost.escalations"

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAN_SOURCE_UNSPECIFIED: _ClassVar[PlanSource]
    PLAN_SOURCE_REQUEST: _ClassVar[PlanSource]
    PLAN_SOURCE_WORKFLOW: _ClassVar[PlanSource]
    PLAN_SOURCE_ROUTER: _ClassVar[PlanSource]
    PLAN_SOURCE_PLANNER_SLM: _ClassVar[PlanSource]
    PLAN_SOURCE_LLM: _ClassVar[PlanSource]
PLAN_SOURCE_UNSPECIFIED: PlanSource
PLAN_SOURCE_REQUEST: PlanSource
PLAN_SOURCE_WORKFLOW: PlanSource
PLAN_SOURCE_ROUTER: PlanSource
PLAN_SOURCE_PLANNER_SLM: PlanSource
PLAN_SOURCE_LLM: PlanSource

class Plan(_message.Message):
    __slots__ = ("steps", "output")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    output: _struct_pb2.Value
    def __init__(self, steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("id", "skill", "fn", "for_each", "plan", "workflow", "input", "when", "timeout_s", "retries", "idempotency_key", "on_error", "expect", "check", "fallback")
    ID_FIELD_NUMBER: _ClassVar[int]
    SKILL_FIELD_NUMBER: _ClassVar[int]
    FN_FIELD_NUMBER: _ClassVar[int]
    FOR_EACH_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ON_ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPECT_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    id: str
    skill: str
    fn: str
    for_each: _struct_pb2.Value
    plan: Plan
    workflow: str
    input: _struct_pb2.Value
    when: _struct_pb2.Value
    timeout_s: float
    retries: int
    idempotency_key: bool
    on_error: str
    expect: _struct_pb2.Struct
    check: str
    fallback: str
    def __init__(self, id: _Optional[str] = ..., skill: _Optional[str] = ..., fn: _Optional[str] = ..., for_each: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., workflow: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., when: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., timeout_s: _Optional[float] = ..., retries: _Optional[int] = ..., idempotency_key: _Optional[bool] = ..., on_error: _Optional[str] = ..., expect: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., check: _Optional[str] = ..., fallback: _Optional[str] = ...) -> None: ...

"""LangChain messages <-> effagent records, shared by the LangChain and LangGraph integrations: a step's
messages become a :class:`~effagent.records.Step`, an ``AIMessage`` a :class:`~effagent.step.Reply`, and the
answer gets its decision in ``response_metadata["effagent"]``. What the graph's state keeps is in :mod:`.state`,
the budget check-ins' interrupts in :mod:`.interrupts`, the tiers' chat models in :mod:`.tier_models`."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from effagent.records import History, Message, Step, StepStats, ToolCall
from effagent.step import Reply

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",  # message type -> role
          "HumanMessageChunk": "user", "AIMessageChunk": "assistant", "SystemMessageChunk": "system",
          "ToolMessageChunk": "tool"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        parts = []
        for b in content:
            if isinstance(b, str):
                parts.append(b)
            elif isinstance(b, Mapping) and isinstance(b.get("text"), str):
                parts.append(b["text"])
        return "\n".join(parts)
    return "" if content is None else str(content)


def tool_calls_of(msg: AIMessage) -> list[ToolCall]:
    """The tool calls an AIMessage asks for, as effagent's records."""
    calls = []
    for c in msg.tool_calls or ():
        args = c.get("args")
        calls.append(ToolCall(name=str(c.get("name") or ""), args=dict(args) if isinstance(args, dict) else {}))
    return calls


def to_message(m: BaseMessage) -> Message:
    role = _ROLES.get(m.type, "user")
    content = _text(m.content)
    calls: list[ToolCall] = []
    reasoning = ""
    is_error = False
    tier = None
    context = 0
    if role == "assistant":
        if isinstance(m, AIMessage):
            calls = tool_calls_of(m)
            reasoning = reasoning_text(m)
            meta = (m.response_metadata or {}).get("effagent")
            tier = meta.get("tier") if isinstance(meta, Mapping) and isinstance(meta.get("tier"), str) else None
            inp, out, _ = usage_of(m)
            context = (inp or 0) + (out or 0)
    elif role == "tool":
        is_error = isinstance(m, ToolMessage) and (getattr(m, "status", "success") == "error"
                                                    or content[:5].lower() == "error")
    name = m.name
    return Message(role=role, content=content, tool_calls=calls,
                   name=name if isinstance(name, str) else None, is_error=is_error, reasoning=reasoning, tier=tier,
                   context_tokens=context)


@dataclass
class _RunHistory:
    """What the cache keeps of one run: its converted messages, their statistics, and which messages they were."""

    length: int = 0
    first_id: str = ""
    last_id: str = ""
    converted: list[Message] = field(default_factory=list)
    history: History = field(default_factory=History)
    steps: int = 0  # steps of the run seen so far


def _continues(prev: _RunHistory, messages: Sequence[BaseMessage]) -> bool:
    """Whether ``messages`` continue the run's converted history: the message it ended with is still at its place."""
    return (0 < prev.length <= len(messages) and messages[prev.length - 1].id == prev.last_id
            and messages[0].id == prev.first_id)


class MessageCache:
    """Converted messages by LangChain message id: an agent's history is re-read every step, but each message
    is converted once. Bounded; messages without an id are converted every time.

    ``history`` converts a run's whole conversation: a run's history only grows between its steps, so when
    the message the run's previous step ended with is still at the same place, the converted prefix is
    reused and only the new messages are converted and added to the run's :class:`History`."""

    def __init__(self, size: int = 4096, runs: int = 256) -> None:
        self.size = size
        self.runs = runs
        self._by_id: OrderedDict[str, Message] = OrderedDict()
        self._runs: OrderedDict[str, _RunHistory] = OrderedDict()
        self._schemas: dict[str, str] = {}

    def history(self, run_id: str, messages: Sequence[BaseMessage]) -> tuple[list[Message], StepStats | None, int]:
        """The run's messages converted, their statistics (None when they cannot be kept: no ids), and how many
        steps of the run came before this one (as far as this cache has seen the run)."""
        prev = self._runs.get(run_id)
        if prev is None:
            prev = _RunHistory()
            self._runs[run_id] = prev
            if len(self._runs) > self.runs:
                self._runs.popitem(last=False)
        index = prev.steps
        n = len(messages)
        grown = _continues(prev, messages)
        new = [self.convert(m) for m in (messages[prev.length:] if grown else messages)]
        converted = prev.converted + new if grown else new
        first, last = (messages[0].id, messages[-1].id) if n else (None, None)
        if not (first and last):  # without ids the next step cannot tell what is new: keep only the count
            self._runs[run_id] = _RunHistory(steps=index + 1)
            return converted, None, index
        hist = prev.history if grown else History()
        for m in new:
            hist.add(m)
        self._runs[run_id] = _RunHistory(n, first, last, converted, hist, index + 1)
        self._runs.move_to_end(run_id)
        return converted, hist.stats(), index

    def forget(self, run_id: str) -> None:
        """Drop a run's converted history once the run ended (its messages stay cached by id, for the thread's next
        run): what a run no longer needs is freed while it is still in memory's fast caches."""
        self._runs.pop(run_id, None)

    def tool_schemas(self, names: list[str], tools: Sequence[Any]) -> str:
        """:func:`tool_schemas`, worked out once per set of tool names (an agent offers the same tools each step)."""
        key = "\x00".join(names)
        got = self._schemas.get(key)
        if got is None:
            got = self._schemas[key] = tool_schemas(tools)
            if len(self._schemas) > 64:
                self._schemas.pop(next(iter(self._schemas)))
        return got

    def convert(self, m: BaseMessage) -> Message:
        if not m.id:
            return to_message(m)
        got = self._by_id.get(m.id)
        if got is None:
            got = self._by_id[m.id] = to_message(m)
            if len(self._by_id) > self.size:
                self._by_id.popitem(last=False)
        return got


def tool_names(tools: Sequence[Any]) -> list[str]:
    names = []
    for t in tools:
        name = getattr(t, "name", None) or (t.get("name") if isinstance(t, Mapping) else None)
        if name:
            names.append(str(name))
    return names


def to_step(messages: Sequence[BaseMessage], tools: Sequence[Any] = (), cache: MessageCache | None = None,
            run_id: str | None = None) -> Step:
    """The step an estimator sees. With a cache and a run id, the run's history is converted incrementally."""
    stats, index = None, 0
    if cache is None:
        converted = [to_message(m) for m in messages]
    elif run_id is not None:  # the run's position comes with its history (the governor checks it)
        converted, stats, index = cache.history(run_id, messages)
    else:
        converted = [cache.convert(m) for m in messages]
    names = tool_names(tools)
    schemas = cache.tool_schemas(names, tools) if cache is not None else tool_schemas(tools)
    return Step(messages=converted, tools=names, index=index, known_stats=stats, tool_schemas=schemas)


def tool_schemas(tools: Sequence[Any]) -> str:
    """The tools' definitions as the model is sent them (OpenAI JSON), for the prompt's token count."""
    if not tools:
        return ""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    out = []
    for t in tools:
        try:
            out.append(convert_to_openai_tool(t))
        except Exception:  # a tool LangChain cannot describe: its name stands in
            out.append({"name": str(getattr(t, "name", t))})
    return json.dumps(out, default=str)


def reasoning_text(msg: AIMessage) -> str:
    kw = msg.additional_kwargs or {}
    for key in ("reasoning_content", "reasoning"):
        val = kw.get(key)
        if isinstance(val, str) and val:
            return val
    return ""


MAX_TOKENS_PER_CALL = 2**31  # a reported count above this is not believable


def usage_of(msg: AIMessage) -> tuple[int | None, int | None, int]:
    """(input, output, reasoning) tokens from ``usage_metadata``; an input/output count that is missing,
    negative, non-finite or not a number is None (the caller estimates it), a bad reasoning count is 0."""
    um = msg.usage_metadata
    if not isinstance(um, dict):  # a TypedDict is a dict; anything else is read as a mapping or ignored
        um = dict(um) if isinstance(um, Mapping) else {}
    details = um.get("output_token_details") or {}
    reasoning = (_count(details.get("reasoning")) or 0) if isinstance(details, Mapping) else 0
    return _count(um.get("input_tokens")), _count(um.get("output_tokens")), reasoning


def cache_usage_of(msg: AIMessage) -> tuple[int, int]:
    """(cache-read, cache-write) prompt tokens from ``usage_metadata["input_token_details"]`` (LangChain's
    ``cache_read`` and ``cache_creation``, which ChatLiteLLM fills from litellm's usage for Anthropic, Bedrock,
    OpenAI and Gemini); both are parts of ``input_tokens``. A missing or bad count is 0."""
    um = msg.usage_metadata
    if not isinstance(um, dict):
        um = dict(um) if isinstance(um, Mapping) else {}
    details = um.get("input_token_details") or {}
    if not isinstance(details, Mapping):
        return 0, 0
    return _count(details.get("cache_read")) or 0, _count(details.get("cache_creation")) or 0


def _count(v: Any) -> int | None:
    """A token count as reported, or None when it is not a believable one."""
    if type(v) is int:  # the common case
        return v if 0 <= v < MAX_TOKENS_PER_CALL else None
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return int(v) if ok and 0 <= v < MAX_TOKENS_PER_CALL else None


def reply_of(msg: AIMessage | None) -> Reply | None:
    """The answer as the step procedure reads it."""
    if msg is None:
        return None
    inp, out, reasoning = usage_of(msg)
    cache_read, cache_write = cache_usage_of(msg)
    return Reply(text=_text(msg.content), tool_calls=tuple(tool_calls_of(msg)), input_tokens=inp, output_tokens=out,
                 reasoning_tokens=reasoning, reasoning=reasoning_text(msg),
                 model=(msg.response_metadata or {}).get("model_name"), cache_read_tokens=cache_read,
                 cache_write_tokens=cache_write)


def tag_answer(msg: AIMessage | None, meta: dict[str, Any], final_note: str | None) -> None:
    """``response_metadata["effagent"] = meta``; on a finalize step, tool calls the model still asked for are
    dropped (the answer must end the run) and ``final_note`` stands in for an empty text."""
    if msg is None:
        return
    if final_note is not None and msg.tool_calls:
        msg.tool_calls = []
        msg.content = msg.content or final_note
    msg.response_metadata = {**(msg.response_metadata or {}), "effagent": meta}


def answer_message(reply: Reply) -> AIMessage:
    """An AIMessage for an answer effagent obtained from the server itself (early exit)."""
    usage: dict[str, Any] = {"input_tokens": reply.input_tokens or 0, "output_tokens": reply.output_tokens or 0,
                             "total_tokens": (reply.input_tokens or 0) + (reply.output_tokens or 0),
                             "output_token_details": {"reasoning": reply.reasoning_tokens}}
    if reply.cache_read_tokens or reply.cache_write_tokens:
        usage["input_token_details"] = {"cache_read": reply.cache_read_tokens,
                                        "cache_creation": reply.cache_write_tokens}
    return AIMessage(content=reply.text, additional_kwargs={"reasoning_content": reply.reasoning},
                     usage_metadata=usage,  # type: ignore[arg-type]
                     response_metadata={"model_name": reply.model, "finish_reason": "stop"})

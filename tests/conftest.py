import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# governors built without an observer would write effagent-out/traces.jsonl; telemetry tests enable it themselves
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EFFAGENT_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture
def policy_text() -> str:
    return (ROOT / "examples" / "policy.yaml").read_text()

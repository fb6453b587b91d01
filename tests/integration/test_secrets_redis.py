"""Secrets never reach the shared ledger: the agent run of tests/unit/test_secrets.py (an endpoint error quoting
a URL password, a ``?key=`` parameter and an api key) on a real Redis, then every value under the ledger's key
prefix is read back and searched for each secret."""

from __future__ import annotations

import pytest

pytest.importorskip("redis", reason="the redis client is not installed: pip install 'effagent[redis]'")

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from effagent.integrations.langchain import EfficiencyMiddleware
from effagent.ledger.redis import RedisLedger
from effagent.policy import load_policy
from tests.fakes import FakeTierModel
from tests.integration import redis_fixture
from tests.integration.redis_fixture import unique_prefix
from tests.unit import test_secrets as leaky

redis_url = redis_fixture.redis_url  # fixtures
env = leaky.env


def _dump(client, prefix: str) -> str:
    """Every key of the ledger with this ``key_prefix``, with its whole value, whatever its type."""
    out = []
    for key in client.scan_iter(match=f"{{{prefix}}}*"):  # the ledger's keys are {PREFIX}:...
        kind = client.type(key).decode()
        read = {"string": lambda k: client.get(k), "hash": client.hgetall, "set": client.smembers,
                "list": lambda k: client.lrange(k, 0, -1), "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
                "stream": client.xrange}[kind]
        value = read(key)
        out.append(f"{key!r} {kind} {value!r}")
    return "\n".join(out)


def test_no_secret_is_written_to_the_redis_ledger(tmp_path, env, redis_url):
    import redis

    policy = load_policy(leaky.write_policy(tmp_path))
    prefix = unique_prefix("secrets")
    ledger = RedisLedger(redis_url, key_prefix=prefix, on_unavailable="fail_closed",
                         journal=tmp_path / "journal.jsonl")
    small = FakeTierModel(tier="small", responder=leaky.leaky_failure)
    large = FakeTierModel(tier="large", responder=leaky.answering)
    mw = EfficiencyMiddleware(policy, models={"small": small, "large": large}, ledger=ledger)
    agent = create_agent(mw.default_model, tools=[leaky.lookup], middleware=[mw])
    result = agent.invoke({"messages": [HumanMessage("What is the answer?")]})
    assert "ANSWER-MARKER" in result["messages"][-1].content

    failed = [r for r in ledger.records() if not r.ok]
    assert failed and "ConnectionError" in failed[0].error  # the small tier's error is recorded...
    stored = _dump(redis.Redis.from_url(redis_url), prefix)
    assert "ConnectionError" in stored and "[REDACTED]" in stored  # ...in Redis, with the secrets masked
    assert leaky.leaks(stored) == []
    journal = tmp_path / "journal.jsonl"
    assert leaky.leaks(journal.read_text() if journal.exists() else "") == []

"""A run paused for a check-in (``on_exhausted: interrupt``) and resumed on another worker whose ledger is the
shared Redis one: the pause is honoured before anything is spent, a grant counts once for every worker (it is the
ledger's, not graph state's), a refusal stays a refusal, and hostile answers spend nothing."""

from __future__ import annotations

import pytest

pytest.importorskip("redis", reason="the redis client is not installed: pip install 'effagent[redis]'")

from effagent.ledger.redis import RedisLedger
from tests.integration import redis_fixture
from tests.integration.redis_fixture import unique_prefix
from tests.unit.test_budget_checkins import (
    BUILDERS,
    check_grant_on_another_worker,
    check_hostile_resumes_spend_nothing,
    check_refusal_on_another_worker,
)

redis_url = redis_fixture.redis_url  # fixtures

pytestmark = pytest.mark.redis


def shared(url: str):
    prefix = unique_prefix()
    return lambda: RedisLedger(url, key_prefix=prefix, on_unavailable="fail_closed")


@pytest.mark.parametrize("kind", BUILDERS)
def test_a_grant_given_to_another_worker_is_honoured_once(redis_url, kind):
    check_grant_on_another_worker(kind, f"redis-grant-{kind}", shared(redis_url))


@pytest.mark.parametrize("kind", BUILDERS)
def test_a_refusal_given_to_another_worker_stays_a_refusal(redis_url, kind):
    check_refusal_on_another_worker(kind, f"redis-refuse-{kind}", shared(redis_url))


@pytest.mark.parametrize("kind", BUILDERS)
def test_hostile_resumes_on_another_worker_spend_nothing(redis_url, kind):
    check_hostile_resumes_spend_nothing(kind, f"redis-hostile-{kind}", shared(redis_url))

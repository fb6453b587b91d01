"""Every fake the unit tests use, one module per kind (each a stand-in named as a fake: no server, no model,
scripted answers, every call recorded).

- ``tests.fakes.chat_models``: ``FakeTierModel`` (a LangChain chat model for one tier: scripted or computed
  answers, usage reported, the settings of every call recorded, can fail like a dead endpoint),
  ``FakeEndpointDown`` (the endpoint error it raises then), ``ai`` / ``call`` (answers and tool calls with
  usage as a provider fills them). Re-exported here: ``from tests.fakes import FakeTierModel, ai, call``.
- ``tests.fakes.estimators``: ``FakeEstimator`` (a difficulty estimator giving fixed scores per prompt).
- ``tests.fakes.completions``: completion functions in place of ``effagent.llm.client.complete`` --
  ``FakeCompletions`` (scripted Completions in order), ``FakeComplete`` (logprobs per prompt, for the probe
  estimator), ``FakeEndpoint`` (a thinking endpoint continuing partial turns, for early exit).
- ``tests.fakes.thinking``: ``fake_thinker`` (think/probe callables for the early-exit lever).
- ``tests.fakes.servers``: ``FakeServer`` / ``fake_server()`` (an OpenAI-compatible HTTP server on loopback).
- ``tests.fakes.step_endpoints``: ``FakeStepEndpoint`` (an ``effagent.step.Endpoint`` answering per tier, or
  raising each tier's error, for the step procedure without a framework).

The vLLM launcher's fakes stay in ``tests/unit/test_vllm_local.py``.
"""

from tests.fakes.chat_models import FakeEndpointDown, FakeTierModel, ai, call

__all__ = ["FakeEndpointDown", "FakeTierModel", "ai", "call"]

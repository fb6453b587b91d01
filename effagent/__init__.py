"""effagent: per-step efficiency decisions for LLM agents.

Public surface: ``load_policy``, ``Policy``, ``decide``, ``Decision``, ``Governor``, ledgers and errors.
Framework adapters live in ``effagent.integrations`` (LangChain middleware, LangGraph nodes, vLLM).
"""

import os

# litellm (imported lazily by the pricing, token counting and wire modules, and by langchain-litellm) would fetch
# its price map from the internet at import; effagent prices with the table bundled in the installed package.
# Set before any import of litellm; an application that set the variable itself keeps its value.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from effagent.decide import Decision, decide
from effagent.difficulty import Difficulty, Step, build_estimator
from effagent.errors import BudgetExceeded, EffagentError, EndpointError, PolicyError, UnknownTierError
from effagent.governor import Governor
from effagent.ledger import InMemoryLedger, Ledger, LedgerState, StepRecord, Usage
from effagent.policy import Policy, load_policy, parse_policy

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded", "Decision", "Difficulty", "EffagentError", "EndpointError", "Governor", "InMemoryLedger",
    "Ledger", "LedgerState", "Policy", "PolicyError", "Step", "StepRecord", "UnknownTierError", "Usage",
    "build_estimator", "decide", "load_policy", "parse_policy",
]

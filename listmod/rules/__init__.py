"""The rule language: loading rules/*.toml and the pure decide() function."""

from .engine import decide
from .loader import load_rules
from .model import ACTIONS, Context, Decision, OutOfSlice, Rule, RuleOutcome, RuleSet

__all__ = ["ACTIONS", "Context", "Decision", "OutOfSlice", "Rule", "RuleOutcome", "RuleSet", "decide", "load_rules"]

"""Layer 2, the judge: run logs read (`logs`), checked against a track's rules (`verify`), tabled (`tidy`),
and the one verdict — record or not — with rule 4's speed evidence (`verdict`, `speed`).

Imports only `harness.core`. `from harness import judge; judge.decide(…)` is the verdict's API.
"""
from harness.judge.speed import SIDE_BY_SIDE, Speed
from harness.judge.verdict import OUTCOMES, RULES, SPEED_TESTS, Decision, decide, reason, speed_rule, with_reason

__all__ = ["OUTCOMES", "RULES", "SIDE_BY_SIDE", "SPEED_TESTS", "Decision", "Speed", "decide", "reason", "speed_rule",
           "with_reason"]

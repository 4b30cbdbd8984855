"""Rule 4's evidence in one type: how much faster than the parent, measured how (`Speed`).

Every speedup the project shows is a `Speed`, built here from train times in ms and written by
`Speed.to_json()` in one shape: attempt.json, record.json and the audit report carry the same keys.
Standard library only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import fmean, stdev

from harness.core import stats

SIDE_BY_SIDE = ("paired", "unpaired")


@dataclass
class Speed:
    """Rule 4's evidence: how much faster than `against`, measured how.

    kind: `paired` (interleaved A/B by seed on one node), `unpaired` (a baseline cohort timed beside the
    runs, e.g. in a record folder), `logged` (the parent's own logged times: another node, not side by side).
    estimate/lo/hi: time_baseline / time_candidate (> 1: faster), the interval at `level`."""
    against: str
    kind: str
    estimate: float
    lo: float | None
    hi: float | None
    n: int                          # pairs (paired), else the smaller side
    baseline_mean_ms: float
    candidate_mean_ms: float
    level: float = 0.95
    looks: int = 1                  # how many times this attempt's interval was looked at (`--extend`)
    log_sd: float | None = None     # spread of the log ratios (paired) or the pooled log times (unpaired)
    runs: tuple[int, int] = (0, 0)  # timed runs behind it: (baseline, candidate)

    @classmethod
    def paired(cls, against: str, pairs: list[tuple[float, float]], level: float = 0.95, looks: int = 1) -> "Speed":
        s = stats.speedup(pairs, level)
        ratios = [math.log(a / b) for a, b in pairs]
        return cls(against, "paired", s.estimate, s.lo, s.hi, len(pairs), fmean(a for a, _ in pairs),
                   fmean(b for _, b in pairs), level, looks, stdev(ratios) if len(ratios) > 1 else None,
                   (len(pairs), len(pairs)))

    @classmethod
    def from_pairs_by_seed(cls, against: str, runs: list[dict], looks: int = 1) -> "Speed | None":
        """Paired by seed from an attempt's runs ({role, seed, outcome, train_time_ms}); None without a pair."""
        by_seed = {}
        for r in runs:
            if r["outcome"] == "ok" and r["train_time_ms"]:
                by_seed.setdefault(r["seed"], {})[r["role"]] = r["train_time_ms"]
        pairs = [(t["baseline"], t["candidate"]) for t in by_seed.values() if len(t) == 2]
        return cls.paired(against, pairs, looks=looks) if pairs else None

    @classmethod
    def unpaired(cls, against: str, base_ms: list[float], cand_ms: list[float], level: float = 0.95,
                 kind: str = "unpaired") -> "Speed":
        s = stats.speedup_unpaired(base_ms, cand_ms, level)
        la, lb = [math.log(x) for x in base_ms], [math.log(x) for x in cand_ms]
        sd = math.sqrt((stdev(la) ** 2 + stdev(lb) ** 2) / 2) if len(la) > 1 and len(lb) > 1 else None
        return cls(against, kind, s.estimate, s.lo, s.hi, min(len(la), len(lb)), fmean(base_ms), fmean(cand_ms),
                   level, 1, sd, (len(la), len(lb)))

    @property
    def side_by_side(self) -> bool:
        return self.kind in SIDE_BY_SIDE

    def more_needed(self, cap: int = 999) -> int | None:
        """How many more pairs (or runs a side) the observed spread needs for the interval to clear 1 at
        this estimate; None when the estimate is not above 1 or there is no spread to go by."""
        if self.estimate <= 1 or not self.log_sd:
            return None
        effect, scale = math.log(self.estimate), self.log_sd * (1 if self.kind == "paired" else math.sqrt(2))

        def clears(n: int) -> bool:  # the half-width shrinks as n grows: bisect, not a walk of t_ppf calls
            return stats.t_ppf(1 - (1 - self.level) / 2, n - 1) * scale / math.sqrt(n) < effect

        lo, hi = max(self.n, 2), cap
        if not clears(hi):
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if clears(mid) else (mid + 1, hi)
        return lo - self.n

    def describe(self) -> str:
        ci = "" if self.lo is None else f" ({self.level:.0%} CI {self.lo:.3f}–{self.hi:.3f}×)"
        how = {"paired": f"{self.n} interleaved A/B pair(s)", "unpaired": f"runs timed beside it ({self.n}+ a side)",
               "logged": "its logged times (another node)"}[self.kind]
        return f"{self.estimate:.3f}×{ci} over {self.against}, from {how}"

    def to_json(self) -> dict:
        """The one shape: the fields, plus the names record.json and attempt.json have always used."""
        d = asdict(self) | {"baseline": self.against, "speedup": self.estimate, "ci95": [self.lo, self.hi],
                            "runs": list(self.runs), "paired": self.kind == "paired",
                            "more_pairs_needed": self.more_needed()}
        if self.kind == "paired":
            d["pairs"] = self.n
        return d

"""Layer 3, the ledger: record folders and their schema, the hash-chained ledger.jsonl, crash-safe stores,
README prose, the leaderboard. It stores what the judge decided; it never judges and never spawns."""
from harness.ledger.store import *  # noqa: F401,F403  (split below)

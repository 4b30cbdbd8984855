"""Layer 3, the ledger: record folders and their schema (`record`), the hash-chained ledger.jsonl and its
lock (`chain`), crash-safe stores (`store`), README prose (`readme`), the leaderboard (`leaderboard`).
It stores what the judge decided; it never judges and never spawns. `from harness import ledger` gives
the functions below."""
from harness.ledger.chain import (GENESIS, LEDGER, LOCK, STAGING, Report, canonical, check, default_parent, find,
                                  ledger_path, line_hash, locked, make_line, read_lines, records, recover,
                                  render_check)
from harness.ledger.record import (DATE, FOLDER, ID, RESERVED, SCHEMA_VERSION, Record, RecordError, read_record,
                                   record_bytes, slugify, validate)
from harness.ledger.store import (Added, add, held, parent_for, record_reference, reference, render_added,
                                  summarize)

__all__ = ["DATE", "FOLDER", "GENESIS", "ID", "LEDGER", "LOCK", "RESERVED", "SCHEMA_VERSION", "STAGING", "Added",
           "Record", "RecordError", "Report", "add", "canonical", "check", "default_parent", "find", "held",
           "ledger_path", "line_hash", "locked", "make_line", "parent_for", "read_lines", "read_record", "record_reference",
           "record_bytes", "records", "recover", "reference", "render_added", "render_check", "slugify",
           "summarize", "validate"]

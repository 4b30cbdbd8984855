"""Where the public speedrun's logs and record folders are read from: ../shared/fixtures beside the
checkout, or $SPEEDRUN_FIXTURES. Tests that need them skip when they are absent."""
import os
from pathlib import Path

SHARED = Path(os.environ.get("SPEEDRUN_FIXTURES") or Path(__file__).resolve().parents[2] / "shared" / "fixtures")
LOGS = SHARED / "modded_nanogpt_logs"      # real run logs, every era
RECORDS = SHARED / "modded_records"        # real record folders, the README's rows and rules

"""Layer 4, logs from outside: a public record folder in any layout (`layout`), its review (`audit`), its
import into the ledger (`importer`), and deltas between runs or records (`diff`). Spawns nothing."""

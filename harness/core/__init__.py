"""Layer 1, the core: errors and exit codes, atomic files and hashes, text formats, statistics, tracks and
their rules. Imports nothing else of the project; standard library (and tomli) only."""

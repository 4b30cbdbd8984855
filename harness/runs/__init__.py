"""Layer 4, runs on this node: child processes (`proc`), the trainer's command line (`launch`), an
attempt's manifest, run loop and verdict, the node check (`doctor`) and kernel benchmarks (`bench`).
The only package that spawns processes."""

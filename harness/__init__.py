"""speedrun's harness: everything around the trainer (`speedrun --help`). For notebooks:

    import harness
    df = harness.frame(["records/track_1_short"])   # every step line of every log, one tidy pandas table
"""


def frame(paths):
    """Every step line of every run log in `paths` (files or folders) as a pandas DataFrame
    (harness/judge/tidy.py lists the columns). Imports pandas on first use, never at `import harness`."""
    from harness.judge.tidy import frame as _frame

    return _frame(paths)

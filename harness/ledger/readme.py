"""A record's README.md: what changed and why, its statistics, its speed evidence, why it is or is not a
record (as the judge said). Prose only: it decides nothing."""
from __future__ import annotations

from harness.core.text import fmt, md


def render_readme(rid, track, title, date, contributors, parent, v, summary, text, notes,
                  unofficial_reason: str | None = None, evidence=(), speedup: dict | None = None,
                  decision=None) -> str:
    s = summary
    ci = s["train_time_ms_ci95"]
    out = [f"# {md(title)}", "",
           f"Record `{rid}` on track `{track['name']}` (version {track['version']}), {date}: "
           + (f"**unofficial** ({md(unofficial_reason)}; see the notes)." if unofficial_reason else
              ("**official**: every check passed, and it is faster than its parent side by side." if parent else
               "**official**: every check passed (the first record of its track).") if v.ok else
              "**unofficial** (verification failed)."), "",
           f"Contributors: {md(', '.join(contributors)) or '-'}  ", f"Parent: {f'`{parent}`' if parent else '-'}", "",
           "## What changed and why", "", (text.rstrip() if text and text.strip() else "_Not stated._"), "",
           "## Summary", "",
           "| runs (distinct) | mean val loss | std | p-value | mean train time | 95% CI |", "|---|---|---|---|---|---|",
           f"| {s['n']} | {fmt(s['mean_val_loss'], '.4f')} | {fmt(s['std_val_loss'], '.4f')} | "
           f"{fmt(s['p_value'], '.3g')} | {fmt(s['mean_train_time_ms'], '.3f', 1e-3, ' s')} | "
           + (f"{ci[0] / 1000:.3f}–{ci[1] / 1000:.3f} s" if ci and None not in ci else "-") + " |", ""]
    if speedup:
        lo, hi = speedup["ci95"]
        looks = speedup.get("looks") or 1
        out += [f"Speedup over {md(speedup['baseline'])}: **{speedup['speedup']:.3f}×**"
                + (f" (95% CI {lo:.3f}–{hi:.3f}×" if lo is not None else " (one run a side: no interval")
                + (f", {speedup['pairs']} interleaved A/B pairs on one node, paired by seed)" if speedup.get("paired")
                   else ", runs timed beside it, unpaired)")
                + f". Verdict reached after {looks} look{'s' if looks != 1 else ''} at the interval"
                + (" (the attempt was extended after an inconclusive look: each look is disclosed, since adding "
                   "runs until the interval clears 1 inflates false records)." if looks > 1 else "."), ""]
    elif parent:
        out += ["Speed against its parent: not measured side by side.", ""]
    if decision is not None and decision.reasons:
        out += ["## Why it is not a record", ""] + [f"- {md(r['rule'])}: {md(r['detail'])}" for r in decision.reasons]
        out.append("")
    rules = v.rules or {}
    out += [f"Judged under the rules of `{md(rules.get('name', 'current'))}`"
            + (f" (in force since {rules['since']})" if rules.get("since") else "") + ".", ""]
    if evidence:
        out += ["## Other runs kept as evidence", "", "| role | runs | mean val loss | p-value | mean train time | "
                "verdict | why |", "|---|---|---|---|---|---|---|"]
        for e in evidence:
            verdict = "PASS" if e["ok"] else "FAIL: " + ", ".join(sorted(e["failed"]))
            out.append(f"| {md(e['role'])} ({md(e['dir'] or '.')}) | {e['n']} | {fmt(e['mean_val_loss'], '.4f')} | "
                       f"{fmt(e['p_value'], '.3g')} | {fmt(e['mean_train_time_ms'], '.3f', 1e-3, ' s')} | "
                       f"{md(verdict)} | {md(e['why'])} |")
        out.append("")
    out += ["## Verification (`speedrun verify`)", "", "| run | check | ok | detail |", "|---|---|---|---|"]
    for r in v.runs:
        for c in r.checks:
            out.append(f"| {md(r.file)} | {c.name} | {'ok' if c.ok else 'FAIL'} | {md(c.detail)} |")
    if notes:
        out += ["", "Notes:", ""] + [f"- {md(n)}" for n in notes]
    return "\n".join(out) + "\n"

"""The results of a mutation run: ``mutation.json`` (every mutant) and ``mutation.md`` (the
report people read: kill rate, per-file table, survivors, equivalents)."""

import json
import platform
import time
from collections import Counter
from pathlib import Path

from ..params.safe_io import write_atomic


__all__ = ["STATUSES", "summary", "write_report"]


#: Every status a mutant can end in (``killed`` and ``timeout`` are detected).
STATUSES = ("killed", "timeout", "survived", "equivalent", "no-change")


def summary(results):
    """``{status: count, ..., "total", "kill_rate"}`` of a list of result dicts.

    ``kill_rate`` = (killed + timeout) / (total - equivalent - no-change), ``None`` if nothing
    could be detected.
    """
    counts = Counter(r["status"] for r in results)
    row = {s: counts.get(s, 0) for s in STATUSES}
    row["total"] = len(results)
    detectable = row["total"] - row["equivalent"] - row["no-change"]
    row["kill_rate"] = ((row["killed"] + row["timeout"]) / detectable) if detectable else None
    return row


def _rate(row):
    return "-" if row["kill_rate"] is None else f"{100 * row['kill_rate']:.1f} %"


def write_report(out_dir, results, *, seconds, finished, total, baseline, test_map,
                 failing=None):
    """Write ``mutation.json`` and ``mutation.md`` into ``out_dir`` (atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted({r["file"] for r in results})
    overall = summary(results)
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.node()} ({platform.machine()}, {platform.python_version()})",
        "finished": finished, "done": len(results), "total": total,
        "seconds": round(seconds, 1), "baseline_seconds": {f: round(s, 1)
                                                            for f, s in baseline.items()},
        "failing_on_original": {f: t for f, t in (failing or {}).items() if t},
        "summary": overall,
        "files": {f: summary([r for r in results if r["file"] == f]) for f in files},
        "mutants": results,
    }
    write_atomic(out_dir / "mutation.json", json.dumps(doc, indent=1) + "\n")
    write_atomic(out_dir / "mutation.md", _markdown(doc, test_map))


def _markdown(doc, test_map):
    o = doc["summary"]
    state = "finished" if doc["finished"] else f"in progress ({doc['done']} of {doc['total']})"
    lines = [
        "# Mutation testing of rtl/", "",
        f"{doc['date']}, {doc['machine']}; run {state}, {doc['seconds'] / 60:.1f} min.", "",
        f"**Kill rate: {_rate(o)}** = (killed {o['killed']} + timeout {o['timeout']}) / "
        f"(total {o['total']} - equivalent {o['equivalent']} - no-change {o['no-change']}); "
        f"survived {o['survived']}.", "",
        "| file | mutants | killed | timeout | survived | equivalent | no-change | kill rate |"
        " tests (original run, s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f, row in doc["files"].items():
        lines.append(f"| {f} | {row['total']} | {row['killed']} | {row['timeout']} | "
                     f"{row['survived']} | {row['equivalent']} | {row['no-change']} | "
                     f"{_rate(row)} | {doc['baseline_seconds'].get(f, '-')} |")
    by_status = {s: [r for r in doc["mutants"] if r["status"] == s] for s in STATUSES}
    lines += ["", "## Survivors", "",
              "Edits no test caught and no proof showed harmless: a missing check or scenario.",
              ""]
    lines += [f"- `{r['id']}`: {_edit(r)}" + (f" ({r['detail']})" if r["detail"] else "")
              for r in by_status["survived"]] or ["(none)"]
    lines += ["", "## Equivalent", ""]
    lines += [f"- `{r['id']}`: {r['detail']}" for r in by_status["equivalent"]] or ["(none)"]
    lines += ["", "## No change in the generated designs", "",
              "The mutant elaborates to byte-identical RTLIL for every representative design "
              "(elaboration-time code whose result does not depend on the edit for those "
              "configs, or code they do not use).", ""]
    lines += [f"- `{r['id']}`" for r in by_status["no-change"]] or ["(none)"]
    lines += ["", "## Killed by timeout", ""]
    lines += [f"- `{r['id']}`" for r in by_status["timeout"]] or ["(none)"]
    if doc["failing_on_original"]:
        lines += ["", "## Tests failing on the original (left out of the mutants' runs)", ""]
        lines += [f"- {f}: " + " ".join(f"`{t}`" for t in tests)
                  for f, tests in doc["failing_on_original"].items()]
    lines += ["", "## Tests run per file", ""]
    lines += [f"- {f}: " + " ".join(f"`{t}`" for t in test_map[f])
              for f in doc["files"] if f in test_map]
    return "\n".join(lines) + "\n"


def _edit(r):
    before, after = " ".join(r["before"].split()), " ".join(r["after"].split())
    return f"line {r['line']}: `{before[:80]}` → `{after[:80]}`"

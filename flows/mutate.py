"""``mulfree mutate``: mutation testing of ``rtl/`` against the fast tests.

A thin layer over :mod:`mulfree.verify.mutation` (the same options as ``python -m
mulfree.verify.mutation``): mutants of the chosen ``rtl/`` files, one small edit each, run
against the tests that exercise each file; the kill rate, the survivors and the equivalent
mutants go to ``out/mutation/mutation.md`` and ``mutation.json``. ``docs/verification.md``,
"Mutation testing", says how to read them.
"""

from ..verify.mutation import add_arguments, check_arguments, run_from_arguments
from .options import UsageError


__all__ = ["add_parser", "command"]


def add_parser(subparsers):
    """Add the ``mutate`` subcommand to the ``mulfree`` command's ``subparsers``.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers`` of the ``mulfree`` parser returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``mutate`` parser; its ``func`` default is :func:`command`.
    """
    p = subparsers.add_parser(
        "mutate", help="mutation testing of rtl/: how many small edits the tests catch",
        description="Mutate rtl/ one small edit at a time (comparisons, + and -, constants "
                    "off by one, & and |, dropped conditions and inversions, swapped Mux "
                    "inputs, dropped assignments), run the fast tests of the mutated file on a "
                    "scratch copy of the last commit, prove the survivors equivalent where "
                    "Yosys can, and write the kill rate, the survivors and the equivalents to "
                    "--out (mutation.md, mutation.json).")
    add_arguments(p)
    p.set_defaults(func=command)
    return p


def command(args):
    """``mulfree mutate``: exit status 0 once the report is written (survivors are results,
    not errors); a bad option raises :class:`UsageError` (one line, exit status 2)."""
    problem = check_arguments(args)
    if problem:
        raise UsageError(problem)
    return run_from_arguments(args)

"""Benchmarks (placeholder, being written)."""


def add_bench_options(parser):
    parser.add_argument("which", nargs="*", default=["gen", "synth"])


def run_bench(args):
    raise NotImplementedError

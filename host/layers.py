"""Training-time PyTorch layers of multiplication-free networks (float, not yet quantized).

The public face of the layers: the one module a user imports. The arithmetic is the papers'
(``../shared/SEEDS.md``) and the hardware's (``docs/numerics.md``); three modules hold the
code, each re-exported here:

* :class:`ShiftLinear`, :class:`ShiftConv2d` — DeepShift (:mod:`mulfree.host.shift_layers`):
  every weight is ``s * 2^p`` with ``s`` in {-1, 0, +1} and an integer ``p`` in
  ``[-max_shift, 0]``, ``max_shift = 2^(weight_bits-1) - 2``. Mode ``"q"`` trains ordinary
  weights and rounds them in the forward pass, mode ``"ps"`` trains ``shift`` and ``sign``
  directly. That module explains the shift codes and the hardware scale.
* :class:`AdderLinear`, :class:`AdderConv2d` — AdderNet (:mod:`mulfree.host.adder_layers`):
  ``y = -sum |x - w|`` with the full-precision weight gradient ``x - w`` and the
  HardTanh-clipped input gradient ``HardTanh(w - x)``; :class:`AdderLRScaler` applies the
  adaptive per-layer learning rate.
* :class:`Shift2d`, :class:`AddressShift2d`, :class:`ChannelShift` — the zero-FLOP,
  zero-parameter shifts of Shift (CVPR 2018) and AddressNet (WACV 2019)
  (:mod:`mulfree.host.zero_flop_layers`), with exactly the conventions of
  :mod:`mulfree.params.shift_golden` (sampling offset ``out[c, y, x] = in[c, y + dy, x + dx]``).

Torch is imported by these modules only; :mod:`mulfree.host` stays importable without it.
"""

from .adder_layers import AdderConv2d, AdderFunction, AdderLinear, AdderLRScaler, adder_matmul
from .shift_layers import (SQRT_HALF_ABOVE, ShiftConv2d, ShiftLinear, max_shift,
                           ps_params_from_weight, round_log2)
from .zero_flop_layers import AddressShift2d, ChannelShift, Shift2d


__all__ = [
    "max_shift", "ShiftLinear", "ShiftConv2d", "AdderLinear", "AdderConv2d", "AdderLRScaler",
    "Shift2d", "AddressShift2d", "ChannelShift", "ps_params_from_weight", "AdderFunction",
    "adder_matmul", "round_log2", "SQRT_HALF_ABOVE",
]

"""Host side of the core's AXI4-Stream formats: packing a layer, unpacking its results.

The public face of the stream formats (``docs/interface.md``, section "Stream formats"): the
one module a host script imports. Four modules hold the code, each re-exported here:

* the **layer** (:mod:`mulfree.host.core_layer`: :class:`Layer`, :func:`layer_geometry`,
  :func:`choose_m_block`, :func:`check_layer`): one run of the core and the core's checks,
  with its fused tail (``shortcut`` and ``residual``: a residual add; ``clamp``), on a
  multi-engine core the engine it runs on (``engine``; ``docs/runtime.md``), and on a core
  with the lane unit a window run (``window``: max, sum, depthwise; interface 2.3);
* the **packer** (:mod:`mulfree.host.stream_format`: :func:`pack_layer`,
  :func:`descriptor_words`, :func:`stream_beats`): what a host sends on ``s_axis``;
* the **golden output** (:mod:`mulfree.host.stream_results`: :func:`expected_output`,
  :func:`expected_beats`, :func:`unpack_results`): what the core must answer on ``m_axis``,
  computed with the layer golden model (:func:`mulfree.params.shift_golden.table_shift`, then
  :func:`mulfree.params.layer_golden.conv2d_layer`, then
  :func:`mulfree.params.layer_golden.fused_tail`);
* the **emulator** (:mod:`mulfree.host.core_emulator`: :func:`emulate_core`): a NumPy model of
  the core's dataflow that parses a packed stream beat by beat like the hardware (headers,
  ``tlast``, the descriptor's fields), fills the feature-map, weight and shortcut buffers, and
  runs the "Order of work" block by block and tile by tile through
  :func:`mulfree.params.golden.array_forward` (a window run through the lane unit's model,
  :mod:`mulfree.host.lane_model`), then the post-processing and the fused tail.
  It shares no code with the golden output path but the post-processing, so a test comparing
  the two checks the formats, the tiling and the tail.

``PACKET_TYPES`` (:mod:`mulfree.params.core_config`) is re-exported too: the header's type codes.

NumPy only: a host script needs nothing else.
"""

from ..params.core_config import PACKET_TYPES
from .core_emulator import CoreError, CoreState, emulate_core
from .core_layer import (TARGET_BLOCK_PIXELS, Layer, LayerError, check_layer, choose_m_block,
                         hazard_window, layer_geometry)
from .stream_format import MAX_PACKET_VECTORS, Packet, descriptor_words, pack_layer, stream_beats
from .stream_results import expected_beats, expected_output, unpack_results


__all__ = [
    "Layer", "Packet", "LayerError", "CoreError", "CoreState", "TARGET_BLOCK_PIXELS",
    "MAX_PACKET_VECTORS", "hazard_window", "layer_geometry", "check_layer", "choose_m_block",
    "descriptor_words", "pack_layer", "stream_beats", "expected_output", "expected_beats",
    "unpack_results", "emulate_core", "PACKET_TYPES",
]

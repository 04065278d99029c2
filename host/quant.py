"""Post-training integer quantization of PyTorch models into the export format, and an
integer-exact PyTorch inference of that format.

The public face of quantization: the one module a user imports. The code lives in these
modules, each re-exported here:

* :func:`quantize` (:mod:`mulfree.host.ptq`) turns a PyTorch model into an
  :class:`~mulfree.host.export_format.IntModel` (``docs/export_format.md``), choosing every
  scale from calibration data; that module states the quantization rules. An
  ``nn.Sequential`` chain is read by :mod:`mulfree.host.quant_parse`; any other model is
  captured with :mod:`torch.fx` by :func:`capture` (:mod:`mulfree.host.capture`, its ops built
  by :mod:`mulfree.host.capture_ops`) and quantized as a graph
  (:mod:`mulfree.host.graph_quant`); weight layers are quantized by
  :mod:`mulfree.host.quant_weights`. What it accepts (:data:`SUPPORTED`,
  :class:`QuantizeError`) is :mod:`mulfree.host.quant_parse`'s.
* :func:`int_forward` (:mod:`mulfree.host.int_inference`) runs an ``IntModel`` (a graph of
  nodes) in PyTorch on ``int64`` tensors. It is written independently of the NumPy golden
  model (:func:`mulfree.params.model_golden.run_int_model`) and equals it bit for bit.
  :func:`dequantize_output` maps final integer activations back to reals (on the last node's
  scale, :func:`output_scale_exp`); :func:`quantized_forward` is quantize-input,
  :func:`int_forward`, dequantize in one call.
* :class:`QATWrapper` and :func:`fake_quant` (:mod:`mulfree.host.qat`): quantization-aware
  fine-tuning (of ``nn.Sequential`` chains).
"""

from .capture import CapturedGraph, capture
from .int_inference import (dequantize_output, int_forward, layer_acc, output_scale_exp,
                            postprocess_torch, quantized_forward)
from .ptq import quantize, round_half_up
from .qat import QATWrapper, fake_quant
from .quant_parse import SUPPORTED, QuantizeError


__all__ = ["QuantizeError", "SUPPORTED", "quantize", "capture", "CapturedGraph",
           "int_forward", "dequantize_output", "quantized_forward", "output_scale_exp",
           "layer_acc", "postprocess_torch", "QATWrapper", "fake_quant", "round_half_up"]

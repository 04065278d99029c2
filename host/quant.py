"""Post-training integer quantization of PyTorch models into the export format, and an
integer-exact PyTorch inference of that format.

The public face of quantization: the one module a user imports. Four modules hold the code,
each re-exported here:

* :func:`quantize` (:mod:`mulfree.host.ptq`) turns an ``nn.Sequential`` of mulfree / PyTorch
  layers into an :class:`~mulfree.host.export_format.IntModel` (``docs/export_format.md``),
  choosing every scale from calibration data; that module states the quantization rules.
  What it accepts (:data:`SUPPORTED`, :class:`QuantizeError`) is
  :mod:`mulfree.host.quant_parse`'s.
* :func:`int_forward` (:mod:`mulfree.host.int_inference`) runs an ``IntModel`` in PyTorch on
  ``int64`` tensors. It is written independently of the NumPy golden model
  (:func:`mulfree.params.model_golden.run_int_model`) and equals it bit for bit.
  :func:`dequantize_output` maps final integer activations back to reals;
  :func:`quantized_forward` is quantize-input, :func:`int_forward`, dequantize in one call.
* :class:`QATWrapper` and :func:`fake_quant` (:mod:`mulfree.host.qat`): quantization-aware
  fine-tuning.
"""

from .int_inference import (dequantize_output, int_forward, layer_acc, output_scale_exp,
                            postprocess_torch, quantized_forward)
from .ptq import quantize, round_half_up
from .qat import QATWrapper, fake_quant
from .quant_parse import SUPPORTED, QuantizeError


__all__ = ["QuantizeError", "SUPPORTED", "quantize", "int_forward", "dequantize_output",
           "quantized_forward", "output_scale_exp", "layer_acc", "postprocess_torch",
           "QATWrapper", "fake_quant", "round_half_up"]

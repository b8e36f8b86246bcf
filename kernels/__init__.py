"""Triton GPU kernels of tconv, shipped as ``tconv.kernels``.

Launchers take torch tensors (CUDA, or CPU under ``TRITON_INTERPRET=1``) in the layout a
:class:`tconv.ConvTransposeSpec` describes and return new tensors of the input's dtype:

- :func:`forward` ``(x, kernel, bias, spec) -> y``
- :func:`dgrad` ``(dy, kernel, spec) -> dx``
- :func:`wgrad` ``(dy, x, spec) -> dkernel``
- :func:`bias_grad` ``(dy, spec) -> dbias``
- :func:`gradients` ``(dy, x, kernel, spec) -> (dx, dkernel, dbias)``

``INTERPRETED`` says whether triton was imported with its CPU interpreter on.
"""

from ._autotune import INTERPRETED
from ._backward import bias_grad, dgrad, gradients, wgrad
from ._forward import forward

__all__ = ["INTERPRETED", "bias_grad", "dgrad", "forward", "gradients", "wgrad"]

"""Triton GPU kernels of tconv, shipped as ``tconv.kernels``.

Launchers take torch tensors (CUDA, or CPU under ``TRITON_INTERPRET=1``) in the layout a
:class:`tconv.ConvTransposeSpec` of any rank describes (1, 2 or 3 spatial axes: one kernel set
over (depth, height, width), lower ranks viewed with unit leading axes) and return new tensors of
the input's dtype:

- :func:`forward` ``(x, kernel, bias, spec) -> y``
- :func:`dgrad` ``(dy, kernel, spec) -> dx``
- :func:`wgrad` ``(dy, x, spec) -> dkernel``
- :func:`bias_grad` ``(dy, spec) -> dbias``
- :func:`gradients` ``(dy, x, kernel, spec) -> (dx, dkernel, dbias)``

:data:`INTERPRETED` says whether triton was imported with its CPU interpreter on
(``TRITON_INTERPRET=1``): then the launchers take CPU tensors, else CUDA tensors.
"""

from ._autotune import INTERPRETED
from ._backward import bias_grad, dgrad, gradients, wgrad
from ._forward import forward

__all__ = ["INTERPRETED", "bias_grad", "dgrad", "forward", "gradients", "wgrad"]

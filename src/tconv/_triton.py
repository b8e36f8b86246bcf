"""The Triton backend: the front end's backend contract over the kernels of ``tconv.kernels``,
for specs of every rank (1, 2 and 3 spatial axes: the kernels compute over (depth, height,
width), lower ranks as unit axes).

It takes torch tensors on a CUDA device, or on the CPU when Triton's interpreter is on
(``TRITON_INTERPRET=1``, set before triton is first imported: that is how CI runs them).
Anything else is refused with the reason, never silently sent to another backend. Other
frameworks' GPU arrays reach it as torch views (``_interop``). Imported by the dispatcher only
when the Triton backend is chosen, so ``import tconv`` never imports triton.
"""

from __future__ import annotations

import contextlib

import array_api_compat
import torch

from . import kernels
from ._spec import ConvTransposeSpec


def _check_tensor(x) -> None:
    if not array_api_compat.is_torch_array(x):
        raise TypeError(f"backend='triton' runs on torch tensors (other GPU arrays are handed over "
                        f"by the front end), got {type(x).__module__}.{type(x).__name__}")
    if x.device.type == "cuda" and not kernels.INTERPRETED:
        return
    if x.device.type == "cpu" and kernels.INTERPRETED:
        return
    if x.device.type == "cuda":
        raise ValueError("backend='triton' got CUDA tensors, but triton was imported with "
                         "TRITON_INTERPRET=1 (its CPU interpreter, for testing): unset it to run "
                         "the kernels on the GPU")
    raise ValueError(f"backend='triton' needs CUDA tensors, got tensors on {x.device}: Triton "
                     f"compiles for GPUs (CPU tensors run only under its interpreter, "
                     f"TRITON_INTERPRET=1 set before triton is imported, which is for testing); "
                     f"use backend='cpu' or 'auto' for CPU tensors")


def _on_device(x):
    """Triton launches on torch's current device: make it x's."""
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def conv2d_transpose(x, kernel, bias, spec: ConvTransposeSpec):
    """Forward pass of any rank; ``x`` in ``spec.data_format``, result in the same layout and
    dtype."""
    _check_tensor(x)
    with _on_device(x):
        return kernels.forward(x, kernel, bias, spec)


def conv2d_transpose_backward(dy, x, kernel, spec: ConvTransposeSpec):
    """Gradients (dx, dkernel, dbias) of the forward for an upstream gradient ``dy``."""
    _check_tensor(x)
    with _on_device(x):
        return kernels.gradients(dy, x, kernel, spec)

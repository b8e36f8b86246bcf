"""Which backend computes: the CPU path or the Triton kernels, for arrays already checked.

A leaf of the front end: the dispatcher and the framework routes ask it, it imports neither.
"""

from __future__ import annotations

import functools
import importlib.util

import array_api_compat


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def select_backend(backend: str, x):
    """The backend for ``x``: ``"auto"`` runs the Triton kernels on CUDA torch tensors when
    triton is installed, the array-API CPU path otherwise; ``"triton"`` never falls back.

    Both backends compute every rank (1, 2 or 3 spatial axes)."""
    if backend == "auto":
        on_cuda = array_api_compat.is_torch_array(x) and x.device.type == "cuda"
        backend = "triton" if on_cuda and triton_installed() else "cpu"
    if backend == "triton":
        if not triton_installed():
            raise ValueError("backend='triton' is not available: the triton package is not "
                             "installed (pip install tconv[triton]); use backend='cpu' or 'auto'")
        from . import _triton

        return _triton
    from . import _cpu

    return _cpu

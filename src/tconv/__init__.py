"""tconv: Keras' ``Conv1DTranspose``, ``Conv2DTranspose`` and ``Conv3DTranspose``, exact, for
every array framework.

``import tconv`` imports no array framework: torch, JAX, CuPy and Triton are touched only when the
caller's arrays come from them.
"""

from ._dispatch import (
    conv1d_transpose,
    conv1d_transpose_backward,
    conv2d_transpose,
    conv2d_transpose_backward,
    conv3d_transpose,
    conv3d_transpose_backward,
    conv_transpose,
    conv_transpose_backward,
)
from ._spec import (
    ConvTransposeSpec,
    conv1d_transpose_output_shape,
    conv2d_transpose_output_shape,
    conv3d_transpose_output_shape,
    conv_transpose_output_shape,
    make_spec,
)

__version__ = "0.1.0"

__all__ = [
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "ConvTransposeSpec",
    "conv1d_transpose",
    "conv1d_transpose_backward",
    "conv1d_transpose_output_shape",
    "conv2d_transpose",
    "conv2d_transpose_backward",
    "conv2d_transpose_output_shape",
    "conv3d_transpose",
    "conv3d_transpose_backward",
    "conv3d_transpose_output_shape",
    "conv_transpose",
    "conv_transpose_backward",
    "conv_transpose_output_shape",
    "make_spec",
]
_LAYERS = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")


_LAZY_SUBMODULES = ("torch", "activations", "initializers", "regularizers", "constraints")


def __getattr__(name):
    # tconv.torch imports torch, the layer and its helpers NumPy: load them on first access,
    # never with the package.
    import importlib

    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAYERS:
        return getattr(importlib.import_module(".layer", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

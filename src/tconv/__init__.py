"""tconv: Keras' ``Conv2DTranspose``, exact, for every array framework.

``import tconv`` imports no array framework: torch, JAX, CuPy and Triton are touched only when the
caller's arrays come from them.
"""

from ._dispatch import conv2d_transpose, conv2d_transpose_backward
from ._spec import ConvTransposeSpec, conv2d_transpose_output_shape, make_spec

__version__ = "0.1.0"

__all__ = [
    "Conv2DTranspose",
    "ConvTransposeSpec",
    "conv2d_transpose",
    "conv2d_transpose_backward",
    "conv2d_transpose_output_shape",
    "make_spec",
]


_LAZY_SUBMODULES = ("torch", "activations", "initializers", "regularizers", "constraints")


def __getattr__(name):
    # tconv.torch imports torch, the layer and its helpers NumPy: load them on first access,
    # never with the package.
    import importlib

    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "Conv2DTranspose":
        return importlib.import_module(".layer", __name__).Conv2DTranspose
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

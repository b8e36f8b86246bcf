"""tconv: Keras' ``Conv2DTranspose``, exact, for every array framework.

``import tconv`` imports no array framework: torch, JAX, CuPy and Triton are touched only when the
caller's arrays come from them.
"""

from ._dispatch import conv2d_transpose, conv2d_transpose_backward
from ._spec import ConvTransposeSpec, conv2d_transpose_output_shape, make_spec

__version__ = "0.1.0"

__all__ = [
    "ConvTransposeSpec",
    "conv2d_transpose",
    "conv2d_transpose_backward",
    "conv2d_transpose_output_shape",
    "make_spec",
]


def __getattr__(name):
    # tconv.torch imports torch: load it on first access, never with the package.
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

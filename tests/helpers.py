"""Helpers shared by the test modules (``tests/`` is on ``sys.path``, see conftest.py)."""

import importlib.util
import os

import numpy as np


def pair(value) -> tuple:
    """An int or a sequence as a 2-tuple, as tconv reads its per-axis options."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def to_numpy(array) -> np.ndarray:
    """Any test array (NumPy, torch on any device, JAX, array-api-strict) as a NumPy array."""
    return array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)


def reference_options(options: dict) -> dict:
    """tconv's keyword options (defaults omitted) in tests/reference.py's spelling."""
    output_padding = options.get("output_padding")
    return dict(strides=pair(options.get("strides", 1)), padding=options.get("padding", "valid"),
                output_padding=None if output_padding is None else pair(output_padding),
                dilation=pair(options.get("dilation_rate", 1)), groups=options.get("groups", 1))


def triton_device():
    """Where Triton tests run: ``"cuda"`` when torch sees a GPU, else ``"cpu"`` under Triton's
    interpreter, which must be chosen before triton is first imported (torch imports it with
    tconv's custom op), so a test module calls this at collection; None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if torch.cuda.is_available():
        return "cuda"
    os.environ["TRITON_INTERPRET"] = "1"
    return "cpu"

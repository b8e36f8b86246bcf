"""The options of a transposed convolution: one normalizer per argument and one
:func:`validate_options` that checks every rule needing no input shape.

Keras' ``utils/argument_validation`` is the model: the function, the layer, the torch module and
``conv2d_transpose_output_shape`` all normalize through here, so each rule is stated once and
raises one exception type: ``TypeError`` for a value of the wrong type, ``ValueError`` for a
value of the right type that breaks a rule (a wrong tuple length included, as in Keras). The
rules that need the input's shape (channel counts, an empty output) live in ``_spec``.
"""

from __future__ import annotations

import functools
import json
import numbers
import os
from dataclasses import dataclass

PADDINGS = ("valid", "same")
DATA_FORMATS = ("channels_last", "channels_first")
BACKENDS = ("auto", "cpu", "triton")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value, name: str) -> int:
    """An int >= 1 (bools and floats are refused)."""
    if not _is_int(value):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def standardize_tuple(value, n: int, name: str, *, minimum: int) -> tuple[int, ...]:
    """An int (repeated ``n`` times) or a sequence of ``n`` ints, each ``>= minimum``."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if not all(_is_int(v) for v in items):
        raise TypeError(f"{name} must be an int or a tuple of {n} ints, got {value!r}")
    if len(items) != n:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {len(items)} "
                         f"values: {value!r}")
    if any(v < minimum for v in items):
        rule = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return tuple(int(v) for v in items)


def normalize_padding(padding) -> str:
    """``"valid"`` or ``"same"``, case-insensitive."""
    if not isinstance(padding, str):
        raise TypeError(f"padding must be the string 'valid' or 'same', got {padding!r}")
    lowered = padding.lower()
    if lowered not in PADDINGS:
        raise ValueError(f"padding must be 'valid' or 'same' (case-insensitive), got {padding!r}")
    return lowered


def normalize_output_padding(output_padding, strides: tuple[int, ...]):
    """None, or ints ``>= 0`` below the stride along each axis (Keras' rule)."""
    if output_padding is None:
        return None
    output_padding = standardize_tuple(output_padding, len(strides), "output_padding",
                                       minimum=0)
    for axis, (op, s) in enumerate(zip(output_padding, strides)):
        if op >= s:
            raise ValueError(
                f"output_padding must be lower than strides along each axis, got "
                f"output_padding={output_padding} with strides={strides} (axis {axis})"
            )
    return output_padding


def keras_image_data_format() -> str:
    """Keras' default ``image_data_format``: from ``$KERAS_HOME/keras.json`` (else
    ``~/.keras/keras.json``) when that file exists and names one, else ``channels_last``.
    Like Keras, each file is read once per process."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return _configured_image_data_format(os.path.join(keras_home, "keras.json"))


@functools.cache
def _configured_image_data_format(path: str) -> str:
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return "channels_last"   # as Keras: an unreadable config is no config
    configured = config.get("image_data_format", "channels_last") if isinstance(
        config, dict) else "channels_last"
    if configured not in DATA_FORMATS:
        raise ValueError(f"image_data_format in {path} must be 'channels_last' or "
                         f"'channels_first', got {configured!r}")
    return configured


def normalize_data_format(data_format) -> str:
    """``"channels_last"``, ``"channels_first"`` (case-insensitive), or None for Keras'
    configured ``image_data_format``."""
    if data_format is None:
        return keras_image_data_format()
    if not isinstance(data_format, str):
        raise TypeError(f"data_format must be 'channels_last', 'channels_first' or None, got "
                        f"{data_format!r}")
    if data_format.lower() not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be 'channels_last', 'channels_first' or None, got {data_format!r}"
        )
    return data_format.lower()


def normalize_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


@dataclass(frozen=True)
class ConvTransposeOptions:
    """Every option of a transposed convolution, normalized; per-axis tuples have one entry per
    spatial axis (``rank`` of them). The kernel size is not one: the op reads it from the
    kernel's shape, a layer from its own argument."""

    rank: int
    strides: tuple[int, ...]
    padding: str
    output_padding: tuple[int, ...] | None
    data_format: str
    dilation_rate: tuple[int, ...]
    groups: int
    backend: str = "auto"

    def keywords(self) -> dict:
        """The options as the keyword arguments of ``make_spec`` (and of the public op)."""
        return dict(strides=self.strides, padding=self.padding,
                    output_padding=self.output_padding, data_format=self.data_format,
                    dilation_rate=self.dilation_rate, groups=self.groups, backend=self.backend)


def validate_options(rank: int, *, strides=1, padding="valid", output_padding=None,
                     data_format=None, dilation_rate=1, groups=1, backend="auto", filters=None,
                     in_channels=None) -> ConvTransposeOptions:
    """Check every option that needs no input shape and return them normalized.

    ``filters`` and ``in_channels``, when known (a layer or module's constructor), are checked
    against ``groups``.
    """
    strides = standardize_tuple(strides, rank, "strides", minimum=1)
    dilation_rate = standardize_tuple(dilation_rate, rank, "dilation_rate", minimum=1)
    groups = positive_int(groups, "groups")
    for name, count in (("filters", filters), ("in_channels", in_channels)):
        if count is not None and positive_int(count, name) % groups:
            raise ValueError(f"groups must divide {name} ({count}), got groups={groups}")
    return ConvTransposeOptions(
        rank=rank, strides=strides, padding=normalize_padding(padding),
        output_padding=normalize_output_padding(output_padding, strides),
        data_format=normalize_data_format(data_format), dilation_rate=dilation_rate,
        groups=groups, backend=normalize_backend(backend),
    )

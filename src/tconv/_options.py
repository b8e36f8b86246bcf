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


def normalize_padding(padding, rank: int):
    """Keras' ``"valid"`` or ``"same"`` (case-insensitive), or numeric padding: the rows and
    columns cropped off the full scatter ``(L - 1)*s + k_eff``, returned as one ``(before,
    after)`` pair per spatial axis. Numeric padding is an int (every side), ``rank`` ints (both
    sides of each axis, as torch's ``padding``) or ``rank`` ``(before, after)`` pairs (as the
    explicit padding of ``tf.nn.conv2d_transpose``)."""
    if isinstance(padding, str):
        lowered = padding.lower()
        if lowered not in PADDINGS:
            raise ValueError(f"padding must be 'valid' or 'same' (case-insensitive), or numeric, "
                             f"got {padding!r}")
        return lowered
    if _is_int(padding):
        pairs = ((padding, padding),) * rank
    elif isinstance(padding, (tuple, list)) and all(_is_int(v) for v in padding):
        pairs = tuple((v, v) for v in padding)
    elif isinstance(padding, (tuple, list)) and all(
            isinstance(pair, (tuple, list)) and all(_is_int(v) for v in pair)
            for pair in padding):
        pairs = tuple(tuple(pair) for pair in padding)
    else:
        raise TypeError(f"padding must be 'valid', 'same', an int, a tuple of {rank} ints or "
                        f"{rank} (before, after) pairs of ints, got {padding!r}")
    if len(pairs) != rank or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"padding must be an int, a tuple of {rank} ints or {rank} (before, "
                         f"after) pairs of ints, got {padding!r}")
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return tuple((int(before), int(after)) for before, after in pairs)


def normalize_output_padding(output_padding, strides: tuple[int, ...],
                             dilation_rate: tuple[int, ...], padding):
    """None, or ints ``>= 0``: below the stride along each axis with 'valid'/'same' (Keras'
    rule); below ``max(stride, dilation)`` with numeric padding (torch's rule), None then
    meaning 0."""
    if output_padding is None:
        return None
    output_padding = standardize_tuple(output_padding, len(strides), "output_padding",
                                       minimum=0)
    keras_rule = isinstance(padding, str)
    for axis, (op, s, d) in enumerate(zip(output_padding, strides, dilation_rate)):
        if keras_rule and op >= s:
            raise ValueError(
                f"output_padding must be lower than strides along each axis, got "
                f"output_padding={output_padding} with strides={strides} (axis {axis})"
            )
        if not keras_rule and op >= max(s, d):
            raise ValueError(
                f"output_padding must be lower than max(strides, dilation_rate) along each axis "
                f"with numeric padding, got output_padding={output_padding} with "
                f"strides={strides}, dilation_rate={dilation_rate} (axis {axis})"
            )
    return output_padding


def normalize_output_shape(output_shape, rank: int):
    """None, or the output's ``rank`` spatial sizes (positive ints), as ``tf.nn``'s
    ``output_shape`` without its batch and channel entries."""
    if output_shape is None:
        return None
    if not isinstance(output_shape, (tuple, list)) or not all(_is_int(v) for v in output_shape):
        raise TypeError(f"output_shape must be None or a tuple of {rank} ints (the output's "
                        f"spatial sizes), got {output_shape!r}")
    if len(output_shape) != rank:
        raise ValueError(f"output_shape must be a tuple of {rank} ints (the output's spatial "
                         f"sizes, no batch or channels), got {output_shape!r}")
    return tuple(positive_int(v, "output_shape") for v in output_shape)


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
    padding: str | tuple[tuple[int, int], ...]  # 'valid', 'same', or (before, after) per axis
    output_padding: tuple[int, ...] | None
    data_format: str
    dilation_rate: tuple[int, ...]
    groups: int
    backend: str = "auto"
    output_shape: tuple[int, ...] | None = None

    def keywords(self) -> dict:
        """The options as the keyword arguments of ``make_spec`` (and of the public op)."""
        return dict(strides=self.strides, padding=self.padding,
                    output_padding=self.output_padding, data_format=self.data_format,
                    dilation_rate=self.dilation_rate, groups=self.groups, backend=self.backend,
                    output_shape=self.output_shape)


def validate_options(rank: int, *, strides=1, padding="valid", output_padding=None,
                     data_format=None, dilation_rate=1, groups=1, backend="auto",
                     output_shape=None, filters=None, in_channels=None) -> ConvTransposeOptions:
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
    padding = normalize_padding(padding, rank)
    if output_shape is not None and output_padding is not None:
        raise ValueError(f"give output_shape or output_padding, not both (each picks the output "
                         f"size): got output_shape={output_shape!r}, "
                         f"output_padding={output_padding!r}")
    return ConvTransposeOptions(
        rank=rank, strides=strides, padding=padding,
        output_padding=normalize_output_padding(output_padding, strides, dilation_rate, padding),
        data_format=normalize_data_format(data_format), dilation_rate=dilation_rate,
        groups=groups, backend=normalize_backend(backend),
        output_shape=normalize_output_shape(output_shape, rank),
    )

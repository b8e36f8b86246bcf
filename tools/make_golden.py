"""Generate tconv's golden-output suite from TensorFlow/Keras: ``tests/golden/``.

    python tools/make_golden.py           # (re)write tests/golden/{manifest.json,<kind>.npz}
    python tools/make_golden.py --check   # regenerate into a temp dir, compare with tests/golden

Runs with the ``golden`` extra (tensorflow-cpu, which brings Keras; tqdm for the progress bar).
TensorFlow is never a test dependency: the tests read only the committed files.

A case is a plain record, :class:`Recipe` ``(name, kind, params, compute)``:

- ``name``: unique within its kind; its arrays are stored as ``<name>/<array>`` in ``<kind>.npz``;
- ``kind``: ``"op"`` (the option grid), ``"tutorial"`` (the TF tutorials' layers), ``"layer"``
  (Keras layer-level behaviour), ``"tf_nn"`` (``tf.nn.conv2d_transpose`` with an explicit
  ``output_shape`` and explicit padding pairs), ``"rank1"`` / ``"rank3"`` (Conv1DTranspose /
  Conv3DTranspose, ``golden_ranks.py``); ``tests/golden_data.py`` loads a kind with
  ``load_cases(kind)``;
- ``params``: JSON-able, written verbatim to the manifest;
- ``compute``: a no-argument callable that runs TensorFlow and returns a dict of NumPy arrays.

Another module contributes cases with a function returning a list of recipes, added to
``CONTRIBUTORS``; a plain 4-tuple is a recipe, so that module need not import this script (which
would import it back). Every compute runs with TF's op determinism on and one thread, so the data
is reproducible bit for bit on one TF build and CPU. A compute that TensorFlow refuses with
``InvalidArgumentError`` is listed in the manifest's ``refused`` with the error and gets no data.

The "op" and "tutorial" cases hold ``x``, ``kernel`` (Keras layout), ``bias`` (when used), ``y``,
a random upstream gradient ``dy`` and ``dx``, ``dkernel``, ``dbias`` (when used) from
``tf.GradientTape`` through ``keras.layers.Conv2DTranspose`` with those weights set. Two things TF's
CPU kernels cannot run are computed through exact identities, recorded per case in
``params["tf_computed_as"]``:

- ``channels_first`` (CPU ``Conv2DBackpropInput`` is NHWC only): the same layer in
  ``channels_last`` on the transposed input, its results transposed back;
- ``dilation_rate > 1`` (CPU refuses dilation): the layer at dilation 1 with the dilated kernel
  (zeros between the taps, which add exact zeros), its kernel gradient read at the taps (the chain
  rule of inserting zeros).

The "tf_nn" cases hold the same arrays from ``tf.nn.conv2d_transpose`` (then ``tf.nn.bias_add``
when used) with ``output_shape`` given: for each geometry every output size TF admits (the sizes
whose forward convolution gives back the input's size) and, in ``refused``, the nearest sizes it
refuses on each side. Their params are tconv's arguments (``padding`` is ``"same"``/``"valid"`` or
``[[top, bottom], [left, right]]``, ``output_shape`` ``[H, W]``) plus TF's spelling
(``tf_padding``, ``tf_data_format``); the same two identities apply (``tf_computed_as``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "tests" / "golden"
MANIFEST = "manifest.json"
SEED = 20240611
OP_CASE_COUNT = 300
OP_MAX_OUTPUT_ELEMENTS = 2048  # per case; keeps the data small
CANDIDATES_PER_PICK = 64
TUTORIAL_BATCH = 1
TUTORIAL_MAX_SIZE = 8


class Recipe(NamedTuple):
    name: str
    kind: str
    params: dict
    compute: Callable[[], dict]


# --- the op grid: a greedy covering design over the Keras page's options -------------------

KERNEL_SIZES = [1, 2, 3, 4, 5, (3, 5), (2, 4), (5, 2)]
STRIDES = [1, 2, 3, 4, (1, 2), (2, 1), (3, 2), (2, 4), (4, 3)]
DILATIONS = [1, 2, 3, (1, 2), (3, 1), (2, 3)]
PADDINGS = ["valid", "same", "VALID", "SAME", "Same"]
DATA_FORMATS = ["channels_last", "channels_first"]
DTYPES = ["float32", "float64"]


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _spelled(pair: tuple[int, int], rng):
    """Keras takes an int or a 2-tuple: equal pairs are spelled either way."""
    if pair[0] == pair[1] and rng.random() < 0.5:
        return pair[0]
    return list(pair)


def _draw_op_params(rng, strides_and_output_padding=None) -> dict:
    """One random legal option set (Keras refuses strides > 1 with dilation > 1), with the
    given strides and output_padding if any."""
    def pick(values):
        return values[rng.integers(len(values))]

    if strides_and_output_padding:
        (strides, output_padding), dilation = strides_and_output_padding, (1, 1)
    else:
        if rng.random() < 0.3:
            strides, dilation = (1, 1), _pair(pick(DILATIONS[1:]))
        else:
            strides, dilation = _pair(pick(STRIDES)), (1, 1)
        output_padding = None
        if rng.random() < 0.6:
            output_padding = tuple(int(rng.integers(s)) for s in strides)
    return {
        "batch": int(rng.integers(1, 4)),
        "height": int(rng.integers(1, 10)),
        "width": int(rng.integers(1, 10)),
        "in_channels": int(rng.integers(1, 9)),
        "filters": int(rng.integers(1, 9)),
        "kernel_size": _spelled(_pair(pick(KERNEL_SIZES)), rng),
        "strides": _spelled(strides, rng),
        "padding": pick(PADDINGS),
        "output_padding": None if output_padding is None else _spelled(output_padding, rng),
        "data_format": pick(DATA_FORMATS),
        "dilation_rate": _spelled(dilation, rng),
        "use_bias": bool(rng.integers(2)),
        "dtype": pick(DTYPES),
    }


def _output_elements(params: dict) -> int:
    import keras

    layer = keras.layers.Conv2DTranspose(
        params["filters"], params["kernel_size"], strides=params["strides"],
        padding=params["padding"], output_padding=params["output_padding"],
        data_format="channels_last", dilation_rate=params["dilation_rate"])
    shape = (params["batch"], params["height"], params["width"], params["in_channels"])
    return int(np.prod(layer.compute_output_shape(shape)))


def _factor_levels(params: dict) -> dict:
    """The values the covering design balances, spellings normalized except padding's."""
    levels = {key: params[key] for key in ("batch", "height", "width", "in_channels", "filters",
                                           "padding", "data_format", "use_bias", "dtype")}
    for key in ("kernel_size", "strides", "dilation_rate"):
        levels[key] = _pair(params[key])
    levels["output_padding"] = (None if params["output_padding"] is None
                                else _pair(params["output_padding"]))
    return levels


def _pairs(params: dict) -> set:
    levels = sorted(_factor_levels(params).items(), key=lambda item: item[0])
    return {(a, b) for a, b in itertools.combinations(levels, 2)}


def op_grid(count: int = OP_CASE_COUNT, seed: int = SEED) -> list[dict]:
    """``count`` option sets chosen greedily so that every pair of factor values is covered,
    then covered again: each pick is the best of a few random candidates, scored by how rarely
    its value pairs were covered so far. The first picks pair every stride with each of its
    legal output_paddings and with None."""
    rng = np.random.default_rng(seed)
    every_output_padding = [
        (_pair(strides), output_padding) for strides in STRIDES
        for output_padding in [None, *itertools.product(*map(range, _pair(strides)))]]
    covered: dict = {}
    grid = []
    for index in range(count):
        forced = every_output_padding[index] if index < len(every_output_padding) else None
        candidates = []
        while len(candidates) < CANDIDATES_PER_PICK:
            candidate = _draw_op_params(rng, forced)
            if _output_elements(candidate) <= OP_MAX_OUTPUT_ELEMENTS:
                candidates.append(candidate)
        scores = [sum(0.5 ** covered.get(pair, 0) for pair in _pairs(c)) for c in candidates]
        best = candidates[int(np.argmax(scores))]
        for pair in _pairs(best):
            covered[pair] = covered.get(pair, 0) + 1
        grid.append(best)
    return grid


def _op_name(index: int, p: dict) -> str:
    def hw(value):
        a, b = _pair(value)
        return f"{a}x{b}"

    output_padding = "none" if p["output_padding"] is None else hw(p["output_padding"])
    return (f"op{index:03d}-n{p['batch']}-{hw((p['height'], p['width']))}c{p['in_channels']}"
            f"-f{p['filters']}-k{hw(p['kernel_size'])}-s{hw(p['strides'])}"
            f"-d{hw(p['dilation_rate'])}-{p['padding']}-op{output_padding}"
            f"-{'cf' if p['data_format'] == 'channels_first' else 'cl'}"
            f"-{p['dtype'][-2:]}{'-bias' if p['use_bias'] else ''}")


# --- the TF tutorials' Conv2DTranspose layers ---------------------------------------------------

# (tutorial, layer, in_channels, filters, kernel_size, strides, input size, use_bias), the real
# configurations of the layers as the tutorials build them (activations aside: they are layer-level
# cases). Kernel size, stride, padding and bias are theirs; channel counts (up to 1088) are
# divided by CHANNEL_DIVISOR and inputs cropped to TUTORIAL_MAX_SIZE to keep the data small.
TUTORIAL_LAYERS = [
    ("dcgan", "generator.conv2d_transpose_1", 256, 128, 5, 1, 7, False),
    ("dcgan", "generator.conv2d_transpose_2", 128, 64, 5, 2, 7, False),
    ("dcgan", "generator.conv2d_transpose_3", 64, 1, 5, 2, 14, False),
    ("cvae", "decoder.conv2d_transpose_1", 32, 64, 3, 2, 7, True),
    ("cvae", "decoder.conv2d_transpose_2", 64, 32, 3, 2, 14, True),
    ("cvae", "decoder.conv2d_transpose_3", 32, 1, 3, 1, 28, True),
    ("pix2pix", "generator.up_stack_1", 512, 512, 4, 2, 1, False),
    ("pix2pix", "generator.up_stack_2", 1024, 512, 4, 2, 2, False),
    ("pix2pix", "generator.up_stack_3", 1024, 512, 4, 2, 4, False),
    ("pix2pix", "generator.up_stack_4", 1024, 512, 4, 2, 8, False),
    ("pix2pix", "generator.up_stack_5", 1024, 256, 4, 2, 16, False),
    ("pix2pix", "generator.up_stack_6", 512, 128, 4, 2, 32, False),
    ("pix2pix", "generator.up_stack_7", 256, 64, 4, 2, 64, False),
    ("pix2pix", "generator.last", 128, 3, 4, 2, 128, True),
    ("segmentation", "unet.up_stack_1", 320, 512, 3, 2, 4, False),
    ("segmentation", "unet.up_stack_2", 1088, 256, 3, 2, 8, False),
    ("segmentation", "unet.up_stack_3", 448, 128, 3, 2, 16, False),
    ("segmentation", "unet.up_stack_4", 272, 64, 3, 2, 32, False),
    ("segmentation", "unet.last", 160, 3, 3, 2, 64, True),
]
CHANNEL_DIVISOR = {"dcgan": 8, "cvae": 2, "pix2pix": 32, "segmentation": 32}


def tutorial_params() -> list[tuple[str, dict]]:
    named = []
    for tutorial, layer, in_channels, filters, kernel, stride, size, use_bias in TUTORIAL_LAYERS:
        divisor = CHANNEL_DIVISOR[tutorial]
        size = min(size, TUTORIAL_MAX_SIZE)
        named.append((f"{tutorial}-{layer}", {
            "source": f"TF tutorial '{tutorial}', layer {layer}: {filters} filters from "
                      f"{in_channels} channels, channel counts divided by {divisor}",
            "batch": TUTORIAL_BATCH, "height": size, "width": size,
            "in_channels": max(1, in_channels // divisor),
            "filters": filters if filters < 8 else filters // divisor,
            "kernel_size": kernel, "strides": stride, "padding": "same", "output_padding": None,
            "data_format": "channels_last", "dilation_rate": 1, "use_bias": use_bias,
            "dtype": "float32",
        }))
    return named


# --- running the Keras layer --------------------------------------------------------------------

@functools.cache
def _tf():
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def _computed_as(params: dict) -> str | None:
    ways = []
    if params["data_format"] == "channels_first":
        ways.append("channels_last on the transposed input")
    if max(_pair(params["dilation_rate"])) > 1:
        ways.append("dilation 1 with the dilated kernel")
    return "; ".join(ways) or None


def keras_case(params: dict, seed) -> dict:
    """x, kernel, bias, y, dy, dx, dkernel, dbias of one Conv2DTranspose through Keras."""
    _tf()
    import keras

    rng = np.random.default_rng(seed)
    dtype = params["dtype"]
    channels_first = params["data_format"] == "channels_first"
    kh, kw = _pair(params["kernel_size"])
    n, h, w, c, f = (params[key] for key in ("batch", "height", "width", "in_channels",
                                             "filters"))
    x = rng.standard_normal((n, c, h, w) if channels_first else (n, h, w, c)).astype(dtype)
    kernel = rng.standard_normal((kh, kw, f, c)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype) if params["use_bias"] else None
    return keras_layer_arrays(keras.layers.Conv2DTranspose, params, x, kernel, bias, rng)


def op_recipes() -> list[Recipe]:
    recipes = []
    for index, params in enumerate(op_grid()):
        computed_as = _computed_as(params)
        if computed_as:
            params = {**params, "tf_computed_as": computed_as}
        seed = [SEED, 1, index]
        recipes.append(Recipe(_op_name(index, params), "op", {**params, "seed": seed},
                              lambda params=params, seed=seed: keras_case(params, seed)))
    return recipes


def tutorial_recipes() -> list[Recipe]:
    recipes = []
    for index, (name, params) in enumerate(tutorial_params()):
        seed = [SEED, 2, index]
        recipes.append(Recipe(name, "tutorial", {**params, "seed": seed},
                              lambda params=params, seed=seed: keras_case(params, seed)))
    return recipes


# --- tf.nn.conv2d_transpose: an explicit output_shape, explicit padding pairs ---------------

# (batch, (h, w), in_channels, filters, kernel_size, strides, dilations, padding, data_format,
# dtype, use_bias). padding is TF's "SAME"/"VALID" or explicit (top, bottom), (left, right)
# crops, which TF spells [[0, 0], [t, b], [l, r], [0, 0]] (NHWC) or [[0, 0], [0, 0], [t, b],
# [l, r]] (NCHW). Every output size TF admits is a case; dilation only at stride 1, as TF
# allows it.
TF_NN_GEOMETRIES = [
    (2, (3, 4), 3, 2, (3, 3), (2, 2), (1, 1), "SAME", "NHWC", "float32", True),
    (1, (4, 3), 2, 3, (4, 3), (3, 2), (1, 1), "SAME", "NCHW", "float64", False),
    (1, (3, 3), 2, 2, (2, 5), (2, 3), (1, 1), "VALID", "NHWC", "float64", True),
    (2, (2, 3), 3, 4, (3, 2), (4, 1), (1, 1), "VALID", "NCHW", "float32", False),
    (1, (5, 4), 2, 3, (3, 3), (1, 1), (2, 2), "SAME", "NHWC", "float64", True),
    (1, (4, 5), 3, 2, (2, 3), (1, 1), (3, 1), "VALID", "NCHW", "float32", True),
    (2, (3, 4), 2, 3, (3, 3), (1, 1), (1, 1), ((0, 0), (0, 0)), "NHWC", "float32", False),
    (1, (4, 4), 3, 2, (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)), "NHWC", "float64", True),
    (1, (3, 5), 2, 2, (4, 3), (2, 3), (1, 1), ((2, 0), (0, 1)), "NCHW", "float32", True),
    (2, (3, 3), 3, 3, (3, 4), (3, 2), (1, 1), ((0, 3), (2, 2)), "NHWC", "float32", False),
    (1, (5, 4), 2, 3, (2, 2), (1, 2), (1, 1), ((3, 1), (0, 3)), "NCHW", "float64", False),
    (1, (4, 3), 2, 2, (3, 2), (1, 1), (2, 3), ((2, 1), (3, 0)), "NHWC", "float64", True),
    (1, (3, 4), 3, 2, (3, 3), (1, 1), (2, 1), ((3, 3), (1, 2)), "NCHW", "float32", True),
    (2, (2, 2), 2, 3, (1, 1), (3, 3), (1, 1), ((1, 0), (0, 2)), "NHWC", "float32", True),
]


def _tf_nn_output_length(length: int, kernel_size: int, stride: int, dilation: int,
                         padding) -> int:
    """The length of the *convolution* TF checks ``conv2d_transpose`` against: the output size
    ``length`` is admitted when the forward conv over it gives back the input's length."""
    k_eff = (kernel_size - 1) * dilation + 1
    if padding == "SAME":
        return -(-length // stride)
    crop = 0 if padding == "VALID" else sum(padding)
    return (length + crop - k_eff) // stride + 1 if length + crop >= k_eff else 0


def _tf_nn_sizes(length: int, kernel_size: int, stride: int, dilation: int, padding):
    """Every output length TF admits along one axis, and the nearest it refuses on each side."""
    k_eff = (kernel_size - 1) * dilation + 1
    crop = 0 if padding in ("SAME", "VALID") else sum(padding)
    admitted = [size for size in range(1, (length + 1) * stride + k_eff + crop)
                if _tf_nn_output_length(size, kernel_size, stride, dilation, padding) == length]
    refused = [size for size in (admitted[0] - 1, admitted[-1] + 1) if size >= 1]
    return admitted, refused


def _tf_padding(padding, data_format: str):
    if isinstance(padding, str):
        return padding
    pairs = [list(pair) for pair in padding]
    return [[0, 0], *pairs, [0, 0]] if data_format == "NHWC" else [[0, 0], [0, 0], *pairs]


def tf_nn_params() -> list[dict]:
    """Every geometry x output size: each pair of admitted heights and widths, then per axis the
    nearest sizes TF refuses (the manifest's ``refused`` lists them with TF's error)."""
    cases = []
    for (batch, (h, w), c, f, kernel, strides, dilation, padding, data_format, dtype,
         use_bias) in TF_NN_GEOMETRIES:
        axis_paddings = (padding, padding) if isinstance(padding, str) else padding
        (heights, refused_heights), (widths, refused_widths) = (
            _tf_nn_sizes(*axis) for axis in zip((h, w), kernel, strides, dilation, axis_paddings))
        sizes = list(itertools.product(heights, widths))
        sizes += [(height, widths[0]) for height in refused_heights]
        sizes += [(heights[0], width) for width in refused_widths]
        for output_hw in sizes:
            cases.append({
                "batch": batch, "height": h, "width": w, "in_channels": c, "filters": f,
                "kernel_size": list(kernel), "strides": list(strides),
                "dilation_rate": list(dilation),
                "padding": padding.lower() if isinstance(padding, str)
                else [list(pair) for pair in padding],
                "output_shape": list(output_hw),
                "data_format": "channels_last" if data_format == "NHWC" else "channels_first",
                "use_bias": use_bias, "dtype": dtype,
                "tf_padding": _tf_padding(padding, data_format), "tf_data_format": data_format,
            })
    return cases


def tf_nn_case(params: dict, seed) -> dict:
    """x, kernel, bias, y, dy, dx, dkernel, dbias of ``tf.nn.conv2d_transpose`` (plus
    ``tf.nn.bias_add``) with an explicit ``output_shape``, gradients by ``tf.GradientTape``."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    dtype = params["dtype"]
    channels_first = params["data_format"] == "channels_first"
    kh, kw = params["kernel_size"]
    dilation = tuple(params["dilation_rate"])
    n, h, w, c, f = (params[key] for key in ("batch", "height", "width", "in_channels",
                                             "filters"))
    out_h, out_w = params["output_shape"]
    x = rng.standard_normal((n, c, h, w) if channels_first else (n, h, w, c)).astype(dtype)
    kernel = rng.standard_normal((kh, kw, f, c)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype) if params["use_bias"] else None
    dy = rng.standard_normal((n, f, out_h, out_w) if channels_first
                             else (n, out_h, out_w, f)).astype(dtype)
    to_last, to_first = (0, 2, 3, 1), (0, 3, 1, 2)
    padding = params["padding"]
    # TF's CPU kernels are NHWC-only and refuse dilation: see _computed_as.
    tf_padding = padding.upper() if isinstance(padding, str) else _tf_padding(padding, "NHWC")
    x_tf = tf.Variable(np.transpose(x, to_last) if channels_first else x)
    kernel_tf = tf.Variable(dilated(kernel, dilation))
    weights = [kernel_tf] + ([tf.Variable(bias)] if bias is not None else [])
    with tf.GradientTape() as tape:
        y_tf = tf.nn.conv2d_transpose(x_tf, kernel_tf, output_shape=[n, out_h, out_w, f],
                                      strides=[1, *params["strides"], 1], padding=tf_padding,
                                      data_format="NHWC")
        if bias is not None:
            y_tf = tf.nn.bias_add(y_tf, weights[1])
    dx, dkernel, *dbias = tape.gradient(
        y_tf, [x_tf] + weights,
        output_gradients=tf.constant(np.transpose(dy, to_last) if channels_first else dy))
    y, dx = y_tf.numpy(), dx.numpy()
    if channels_first:
        y, dx = np.transpose(y, to_first), np.transpose(dx, to_first)
    arrays = {"x": x, "kernel": kernel, "y": y, "dy": dy, "dx": dx,
              "dkernel": dkernel.numpy()[::dilation[0], ::dilation[1]]}
    if bias is not None:
        arrays.update(bias=bias, dbias=dbias[0].numpy())
    return arrays


def _tf_nn_name(index: int, p: dict) -> str:
    padding = (p["padding"] if isinstance(p["padding"], str)
               else "pad" + "-".join(str(v) for pair in p["padding"] for v in pair))
    return (f"nn{index:03d}-n{p['batch']}-{p['height']}x{p['width']}c{p['in_channels']}"
            f"-f{p['filters']}-k{'x'.join(map(str, p['kernel_size']))}"
            f"-s{'x'.join(map(str, p['strides']))}-d{'x'.join(map(str, p['dilation_rate']))}"
            f"-{padding}-out{'x'.join(map(str, p['output_shape']))}"
            f"-{'cf' if p['data_format'] == 'channels_first' else 'cl'}"
            f"-{p['dtype'][-2:]}{'-bias' if p['use_bias'] else ''}")


def tf_nn_recipes() -> list[Recipe]:
    recipes = []
    for index, params in enumerate(tf_nn_params()):
        computed_as = _computed_as(params)
        if computed_as:
            params = {**params, "tf_computed_as": computed_as}
        seed = [SEED, 4, index]
        recipes.append(Recipe(_tf_nn_name(index, params), "tf_nn", {**params, "seed": seed},
                              lambda params=params, seed=seed: tf_nn_case(params, seed)))
    return recipes


from golden_layers import layer_recipes  # noqa: E402 (tools/ is on sys.path when this runs)
from golden_ranks import dilated, keras_layer_arrays, rank_recipes  # noqa: E402

CONTRIBUTORS = [op_recipes, tutorial_recipes, layer_recipes, tf_nn_recipes, rank_recipes]


# --- files ----------------------------------------------------------------------------------------

def _write_npz(path: Path, arrays: dict) -> None:
    """np.savez_compressed, minus the timestamps: the same arrays give the same bytes, so a
    regeneration that changes nothing leaves git clean."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]),
                                          allow_pickle=False)


def _op_error(message: str) -> str:
    """The kernel's own words from a Keras-wrapped TF error."""
    found = re.search(r"\}\}\s*(.*?)\s*\[Op:", message, re.DOTALL)
    return found.group(1) if found else message.strip().splitlines()[0]


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def generate(out_dir: Path) -> dict:
    """Run every contributor's recipes, write ``<kind>.npz`` and the manifest; return it."""
    from tqdm import tqdm

    recipes = [Recipe(*item) for contributor in CONTRIBUTORS for item in contributor()]
    names = [(recipe.kind, recipe.name) for recipe in recipes]
    if len(set(names)) != len(names):
        raise ValueError("two recipes share a kind and a name")
    tf = _tf()
    cases, refused, arrays_by_kind = [], [], {}
    for recipe in tqdm(recipes, desc="golden cases", unit="case"):
        json.dumps(recipe.params)  # JSON-able, or fail here rather than at the end
        try:
            arrays = {key: np.asarray(value) for key, value in recipe.compute().items()}
        except tf.errors.InvalidArgumentError as error:
            refused.append({"name": recipe.name, "kind": recipe.kind, "params": recipe.params,
                            "error": _op_error(error.message)})
            continue
        stored = arrays_by_kind.setdefault(recipe.kind, {})
        for key, value in arrays.items():
            stored[f"{recipe.name}/{key}"] = value
        cases.append({"name": recipe.name, "kind": recipe.kind, "params": recipe.params,
                      "arrays": {key: {"shape": list(value.shape), "dtype": str(value.dtype)}
                                 for key, value in arrays.items()}})
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for kind, arrays in sorted(arrays_by_kind.items()):
        files[kind] = f"{kind}.npz"
        _write_npz(out_dir / files[kind], arrays)
    manifest = {
        "generator": "tools/make_golden.py",
        "versions": _versions(),
        "seed": SEED,
        "notes": __doc__[__doc__.index("The \"op\""):].strip(),
        "files": files,
        "counts": {kind: sum(case["kind"] == kind for case in cases) for kind in files},
        "cases": cases,
        "refused": refused,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def check(committed: Path) -> list[str]:
    """Regenerate into a temp dir; the differences from the committed files, as lines."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        old = json.loads((committed / MANIFEST).read_text())
        problems = []
        if fresh["versions"] != old["versions"]:
            problems.append(f"versions differ (committed {old['versions']}, here "
                            f"{fresh['versions']}): bit equality is only expected on one build")
        for key in ("cases", "refused", "files"):
            if fresh[key] != old[key]:
                problems.append(f"manifest '{key}' differs")
        for kind, file in fresh["files"].items():
            with np.load(Path(tmp) / file) as new_arrays, np.load(committed / file) as old_arrays:
                if sorted(new_arrays.files) != sorted(old_arrays.files):
                    problems.append(f"{file}: different array names")
                    continue
                for key in new_arrays.files:
                    a, b = new_arrays[key], old_arrays[key]
                    if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                        difference = (np.max(np.abs(a.astype(float) - b.astype(float)))
                                      if a.shape == b.shape else "shape")
                        problems.append(f"{file}:{key} differs (max abs {difference})")
        return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temp dir and compare with tests/golden bitwise")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(GOLDEN_DIR)
        for line in problems:
            print(line)
        print("golden data: " + ("MISMATCH" if problems else "reproduced bit for bit"))
        return 1 if problems else 0
    manifest = generate(GOLDEN_DIR)
    size = sum((GOLDEN_DIR / file).stat().st_size for file in manifest["files"].values())
    print(f"wrote {manifest['counts']} cases ({len(manifest['refused'])} refused by TF), "
          f"{size / 1e6:.2f} MB of arrays, to {GOLDEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

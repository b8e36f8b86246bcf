"""The golden suite's "rank1" and "rank3" cases: Keras' ``Conv1DTranspose`` and
``Conv3DTranspose`` through TensorFlow, forward and gradients.

Contributed to ``tools/make_golden.py`` (its ``CONTRIBUTORS``) by :func:`rank_recipes`; each
recipe is a plain ``(name, kind, params, compute)`` tuple. A case holds what an "op" case holds
(``x``, ``kernel`` in Keras' layout, ``bias`` when used, ``y``, a random ``dy``, ``dx``,
``dkernel``, ``dbias`` when used) from ``tf.GradientTape`` through the Keras layer of its rank
with those weights set, and TF's CPU kernels are worked around by the same exact identities
(``params["tf_computed_as"]``): ``channels_first`` through ``channels_last`` on the transposed
input, dilation through the dilated kernel at dilation 1.

The options are drawn per case from a seeded generator, with data format, padding spelling,
dilation and output_padding cycled so that each is covered on both ranks. Geometries Keras
would refuse are not drawn: strides > 1 with dilation > 1, and 'same' with an output_padding
whose output TF's shape check rejects (``ceil(out / stride) != in``). Nor are the rank-3
geometries whose ``dx`` TensorFlow gets wrong: the input gradient of ``Conv3DTranspose`` is TF's
CPU ``Conv3D`` of ``dy`` with 'same' padding, whose pad ``((ceil(out / s) - 1)*s + k_eff - out)
/ 2`` is not clamped at 0 there, so where it is negative (a 'same' kernel at least 2 shorter than
its stride, e.g. k=1, s=3) every ``dx`` is shifted; TF's forward and ``dkernel`` agree with the
reference and ``dx`` disagrees with the adjoint of TF's own forward. tests/test_ranks.py covers
those geometries against the float64 reference instead.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

SEED = 20240613
CASES_PER_RANK = 96
MAX_OUTPUT_ELEMENTS = 2048
PADDINGS = ["valid", "same", "VALID", "SAME", "Same"]
DATA_FORMATS = ["channels_last", "channels_first"]
DTYPES = ["float32", "float64"]
# Per rank: lengths, kernel sizes, strides and dilations drawn per axis, channel counts.
AXIS_CHOICES = {
    1: dict(length=range(1, 13), kernel=[1, 2, 3, 4, 5, 8, 16], stride=[1, 2, 3, 4, 8],
            dilation=[2, 3], channels=range(1, 7)),
    3: dict(length=range(1, 5), kernel=[1, 2, 3], stride=[1, 2, 3], dilation=[2],
            channels=range(1, 5)),
}
LAYERS = {1: "Conv1DTranspose", 3: "Conv3DTranspose"}


def _output_length(length, k, s, d, padding, output_padding):
    """Keras' ``deconv_output_length``, to size the draws (Keras checks the result)."""
    k_eff = k + (k - 1) * (d - 1)
    if output_padding is None:
        return length * s + max(k_eff - s, 0) if padding == "valid" else length * s
    pad = k_eff // 2 if padding == "same" else 0
    return (length - 1) * s + k_eff - 2 * pad + output_padding


def _draw(rng, rank: int, index: int) -> dict | None:
    """One option set for case ``index``, or None when it is one Keras or TF refuses or too
    large."""
    choices = AXIS_CHOICES[rank]

    def pick(values):
        values = list(values)
        return values[rng.integers(len(values))]

    dilated = index % 3 == 0
    padding = PADDINGS[(index // 2) % len(PADDINGS)]
    with_output_padding = index % 4 != 3
    spatial = [pick(choices["length"]) for _ in range(rank)]
    kernel = [pick(choices["kernel"]) for _ in range(rank)]
    strides = [1] * rank if dilated else [pick(choices["stride"]) for _ in range(rank)]
    dilation = [pick([1, *choices["dilation"]]) for _ in range(rank)] if dilated else [1] * rank
    if dilated and max(dilation) == 1:
        dilation[int(rng.integers(rank))] = choices["dilation"][0]
    output_padding = None
    if with_output_padding:
        output_padding = [int(rng.integers(s)) for s in strides]
    out = [_output_length(n, k, s, d, padding.lower(), None if output_padding is None else op)
           for n, k, s, d, op in zip(spatial, kernel, strides, dilation,
                                     output_padding or [None] * rank)]
    if min(out) < 1:
        return None
    if padding.lower() == "same" and output_padding is not None and any(
            -(-o // s) != n for o, s, n in zip(out, strides, spatial)):
        return None
    if rank == 3 and padding.lower() == "same" and any(
            (-(-o // s) - 1) * s + (k - 1) * d + 1 - o <= -2
            for o, s, k, d in zip(out, strides, kernel, dilation)):
        return None   # TF's dx is wrong there (see the module docstring)
    params = {
        "rank": rank, "batch": int(rng.integers(1, 3)), "spatial": spatial,
        "in_channels": pick(choices["channels"]), "filters": pick(choices["channels"]),
        "kernel_size": kernel, "strides": strides, "padding": padding,
        "output_padding": output_padding, "data_format": DATA_FORMATS[index % 2],
        "dilation_rate": dilation, "use_bias": bool(rng.integers(2)), "dtype": pick(DTYPES),
    }
    if params["batch"] * math.prod(out) * params["filters"] > MAX_OUTPUT_ELEMENTS:
        return None
    return params


def rank_params(rank: int) -> list[dict]:
    rng = np.random.default_rng([SEED, rank])
    drawn = []
    for index in itertools.count():
        if len(drawn) == CASES_PER_RANK:
            return drawn
        params = None
        while params is None:
            params = _draw(rng, rank, index)
        drawn.append(params)


def _name(index: int, p: dict) -> str:
    def axes(values):
        return "x".join(map(str, values))

    output_padding = "none" if p["output_padding"] is None else axes(p["output_padding"])
    return (f"rank{p['rank']}-{index:03d}-n{p['batch']}-{axes(p['spatial'])}c{p['in_channels']}"
            f"-f{p['filters']}-k{axes(p['kernel_size'])}-s{axes(p['strides'])}"
            f"-d{axes(p['dilation_rate'])}-{p['padding']}-op{output_padding}"
            f"-{'cf' if p['data_format'] == 'channels_first' else 'cl'}"
            f"-{p['dtype'][-2:]}{'-bias' if p['use_bias'] else ''}")


def dilated(kernel: np.ndarray, dilation) -> np.ndarray:
    """``kernel`` with ``dilation - 1`` zeros between its taps along each spatial axis."""
    rank = len(dilation)
    size = tuple((k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation))
    out = np.zeros(size + kernel.shape[rank:], kernel.dtype)
    out[tuple(slice(None, None, d) for d in dilation)] = kernel
    return out


def keras_rank_case(params: dict, seed) -> dict:
    """x, kernel, bias, y, dy, dx, dkernel, dbias of one Conv1DTranspose / Conv3DTranspose."""
    import keras

    rng = np.random.default_rng(seed)
    rank, dtype = params["rank"], params["dtype"]
    channels_first = params["data_format"] == "channels_first"
    n, c, f = params["batch"], params["in_channels"], params["filters"]
    spatial = tuple(params["spatial"])
    x = rng.standard_normal((n, c, *spatial) if channels_first else (n, *spatial, c)).astype(dtype)
    kernel = rng.standard_normal((*params["kernel_size"], f, c)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype) if params["use_bias"] else None
    return keras_layer_arrays(getattr(keras.layers, LAYERS[rank]), params, x, kernel, bias, rng)


def keras_layer_arrays(layer_class, params: dict, x, kernel, bias, rng) -> dict:
    """y, dy, dx, dkernel (and dbias) of the Keras transposed-convolution layer ``layer_class``
    of any rank, with the weights ``kernel`` and ``bias``, for the input ``x`` (in
    ``params["data_format"]``); ``dy`` is drawn from ``rng``.

    The layer runs channels-last with the kernel dilated by hand and no dilation_rate (TF's CPU
    kernels cannot combine dilation with a stride), and is checked against the layer as the case
    spells it, for Keras' own argument checks and output shape."""
    import tensorflow as tf

    rank, dtype = kernel.ndim - 2, params["dtype"]
    channels_first = params["data_format"] == "channels_first"
    dilation = params["dilation_rate"]
    dilation = tuple(dilation) if isinstance(dilation, (tuple, list)) else (dilation,) * rank
    n, f, c = x.shape[0], kernel.shape[-2], kernel.shape[-1]
    spatial = x.shape[2:] if channels_first else x.shape[1:-1]
    to_last = (0, *range(2, rank + 2), 1)
    to_first = (0, rank + 1, *range(1, rank + 1))

    as_spelled = layer_class(
        f, params["kernel_size"], strides=params["strides"], padding=params["padding"],
        output_padding=params["output_padding"], data_format=params["data_format"],
        dilation_rate=params["dilation_rate"], use_bias=params["use_bias"], dtype=dtype)
    layer_kernel = dilated(kernel, dilation)
    layer = layer_class(
        f, layer_kernel.shape[:rank], strides=params["strides"], padding=params["padding"],
        output_padding=params["output_padding"], data_format="channels_last",
        dilation_rate=1, use_bias=params["use_bias"], dtype=dtype)
    layer.build((n, *spatial, c))
    layer.set_weights([layer_kernel] if bias is None else [layer_kernel, bias])

    x_tf = tf.Variable(np.transpose(x, to_last) if channels_first else x)
    with tf.GradientTape() as tape:
        y_tf = layer(x_tf)
    y = y_tf.numpy()
    dy = rng.standard_normal(np.transpose(y, to_first).shape if channels_first
                             else y.shape).astype(dtype)
    weights = [layer.kernel] + ([layer.bias] if bias is not None else [])
    dx, dkernel, *dbias = tape.gradient(
        y_tf, [x_tf] + weights,
        output_gradients=tf.constant(np.transpose(dy, to_last) if channels_first else dy))
    dx = dx.numpy()
    if channels_first:
        y, dx = np.transpose(y, to_first), np.transpose(dx, to_first)
    if tuple(as_spelled.compute_output_shape(x.shape)) != y.shape:
        raise RuntimeError(f"{params}: Keras' output shape "
                           f"{as_spelled.compute_output_shape(x.shape)} != computed {y.shape}")
    arrays = {"x": x, "kernel": kernel, "y": y, "dy": dy, "dx": dx,
              "dkernel": dkernel.numpy()[tuple(slice(None, None, d) for d in dilation)]}
    if bias is not None:
        arrays.update(bias=bias, dbias=dbias[0].numpy())
    return arrays


def _computed_as(params: dict) -> str | None:
    ways = []
    if params["data_format"] == "channels_first":
        ways.append("channels_last on the transposed input")
    if max(params["dilation_rate"]) > 1:
        ways.append("dilation 1 with the dilated kernel")
    return "; ".join(ways) or None


def rank_recipes() -> list[tuple]:
    recipes = []
    for rank in (1, 3):
        for index, params in enumerate(rank_params(rank)):
            computed_as = _computed_as(params)
            if computed_as:
                params = {**params, "tf_computed_as": computed_as}
            seed = [SEED, rank, index]
            recipes.append((_name(index, params), f"rank{rank}", {**params, "seed": seed},
                            lambda params=params, seed=seed: keras_rank_case(params, seed)))
    return recipes

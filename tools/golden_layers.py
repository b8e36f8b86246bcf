"""The golden suite's "layer" cases: Keras' ``Conv2DTranspose`` layer as a whole, with real Keras 3.

Contributed to ``tools/make_golden.py`` (its ``CONTRIBUTORS``) by :func:`layer_recipes`; each
recipe is a plain ``(name, "layer", params, compute)`` tuple. Per case:

- ``params``: the case's arguments, ``keras3_config`` (the layer's ``get_config()``, JSON) and,
  when tf-keras is installed, ``tf_keras_config`` (the same layer built by tf.keras 2 with
  ``input_shape``, so its config carries ``batch_input_shape``), ``activations`` (the names of
  the ``y_<name>`` arrays), ``seed``;
- arrays: ``x``; ``kernel`` and ``bias`` as a Keras model initialized them (``get_weights()``
  of the layer inside a ``keras.Sequential``, Keras' own seeded initializers); ``y_<name>`` the
  layer's output with each activation; ``loss_activity``, ``loss_kernel``, ``loss_bias`` (those
  the case regularizes) as Keras 3 computes them (``layer.losses`` after a call: activity,
  kernel, bias); ``constrained_kernel``, ``constrained_bias`` the layer's constraints applied to
  the weights.

The activations are applied by Keras (``keras.activations.get(name)``) to the layer's linear output,
which is exactly what the layer's call does; the case's own activation also runs through a full
layer call. TF's CPU kernels refuse ``channels_first``: such a case computes the linear output
through the ``channels_last`` layer on the transposed input and transposes it back before the
activations (so they see Keras' last axis, the width), and its activity loss is Keras 3's
formula, the regularizer over the output divided by the batch; ``params["tf_computed_as"]``
says so.
"""

from __future__ import annotations

import json

import numpy as np

SEED = 20240612

# Every Keras 3 activation name that runs with its defaults (``threshold`` has none).
ACTIVATIONS = (
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "sigmoid",
    "hard_sigmoid", "hard_silu", "hard_swish", "sparse_sigmoid", "log_sigmoid", "softplus",
    "softsign", "silu", "swish", "squareplus", "sparse_plus", "soft_shrink", "hard_shrink",
    "hard_tanh", "tanh", "tanh_shrink", "exponential", "mish", "softmax", "log_softmax",
    "sparsemax", "glu",
)

# (name, input shape, layer arguments); the outputs' last axes are even, as glu needs.
# Regularizers and constraints are names or (class name, config) pairs, built by the API at
# hand (Keras 3 or tf.keras 2).
CASES = [
    ("same_s2_relu", (2, 5, 5, 3), dict(
        filters=4, kernel_size=3, strides=2, padding="same", activation="relu",
        kernel_regularizer="l2", bias_regularizer="l1",
        activity_regularizer=("L1L2", {"l1": 0.001, "l2": 0.002}),
        kernel_constraint=("MaxNorm", {"max_value": 0.3}), bias_constraint="non_neg")),
    ("valid_outpad_channels_first_softmax", (2, 3, 4, 4), dict(
        filters=3, kernel_size=(2, 3), strides=(2, 1), padding="valid", output_padding=(1, 0),
        data_format="channels_first", activation="softmax",
        kernel_regularizer=("L1L2", {"l1": 0.01, "l2": 0.02}), bias_regularizer="l2",
        activity_regularizer="l1",
        kernel_constraint=("MinMaxNorm", {"min_value": 0.5, "max_value": 1.0, "rate": 0.7,
                                          "axis": [0, 1, 2]}),
        bias_constraint=("UnitNorm", {"axis": 0}))),
    ("same_k4_nobias_gelu_float64", (1, 4, 6, 4), dict(
        filters=2, kernel_size=4, strides=2, padding="SAME", use_bias=False, activation="gelu",
        dtype="float64", kernel_regularizer="l1", activity_regularizer="l2",
        kernel_constraint=("UnitNorm", {"axis": 3}))),
    ("same_s3_outpad_leaky_relu", (2, 3, 3, 2), dict(
        filters=6, kernel_size=3, strides=3, padding="same", output_padding=2,
        activation="leaky_relu", kernel_regularizer=("L2", {"l2": 0.05}),
        bias_regularizer=("L1L2", {"l1": 0.0, "l2": 0.3}),
        kernel_constraint=("MaxNorm", {"max_value": 0.5, "axis": [0, 1]}),
        bias_constraint=("MaxNorm", {"max_value": 1.0}))),
]


def _built(module, spelled):
    """A regularizer or constraint of ``module`` (keras.regularizers, tf_keras.constraints...)."""
    if spelled is None or isinstance(spelled, str):
        return spelled
    class_name, config = spelled
    return getattr(module, class_name)(**config)


def _layer_arguments(api, arguments: dict, seed: list) -> dict:
    built = dict(arguments)
    for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer"):
        built[key] = _built(api.regularizers, arguments.get(key))
    for key in ("kernel_constraint", "bias_constraint"):
        built[key] = _built(api.constraints, arguments.get(key))
    kernel_seed, bias_seed = seed[0] + seed[1], seed[1]
    built["kernel_initializer"] = api.initializers.GlorotUniform(seed=kernel_seed)
    built["bias_initializer"] = api.initializers.RandomNormal(stddev=0.5, seed=bias_seed)
    return built


def _json(config: dict) -> dict:
    return json.loads(json.dumps(config))


def _tf_keras_config(input_shape, arguments: dict, seed: list):
    try:
        import tf_keras
    except ImportError:
        return None
    layer = tf_keras.layers.Conv2DTranspose(**_layer_arguments(tf_keras, arguments, seed),
                                            input_shape=input_shape[1:])
    return _json(layer.get_config())


def layer_case(input_shape, arguments: dict, seed: list) -> tuple[dict, dict]:
    """(extra params, arrays) of one case."""
    import keras
    import tensorflow as tf

    dtype = arguments.get("dtype", "float32")
    channels_first = arguments.get("data_format") == "channels_first"
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(input_shape).astype(dtype)

    layer = keras.layers.Conv2DTranspose(**_layer_arguments(keras, arguments, seed))
    keras.Sequential([keras.Input(input_shape[1:], dtype=dtype), layer])
    weights = layer.get_weights()
    config = layer.get_config()

    linear_config = {**config, "activation": "linear", "activity_regularizer": None}
    if channels_first:
        linear_config["data_format"] = "channels_last"
    linear = keras.layers.Conv2DTranspose.from_config(linear_config)
    to_last, to_first = (0, 2, 3, 1), (0, 3, 1, 2)
    linear_input = np.transpose(x, to_last) if channels_first else x
    linear.build(linear_input.shape)
    linear.set_weights(weights)
    linear_output = linear(linear_input)
    if channels_first:
        linear_output = tf.transpose(linear_output, to_first)
    arrays = {"x": x, "kernel": weights[0]}
    if len(weights) == 2:
        arrays["bias"] = weights[1]
    for name in ACTIVATIONS:
        arrays[f"y_{name}"] = keras.activations.get(name)(linear_output).numpy()

    has_activity_loss = layer.activity_regularizer is not None
    if channels_first:
        output = keras.activations.get(config["activation"])(linear_output)
        activity_losses = ([layer.activity_regularizer(output) / output.shape[0]]
                           if has_activity_loss else [])
        weight_losses = layer.losses
    else:
        output = layer(x)
        if not np.array_equal(output.numpy(), arrays[f"y_{config['activation']}"]):
            raise RuntimeError("the layer's call differs from its activation on its linear "
                               "output")
        activity_losses = layer.losses[:int(has_activity_loss)]
        weight_losses = layer.losses[int(has_activity_loss):]
    if has_activity_loss:
        arrays["loss_activity"] = np.asarray(activity_losses[0])
    regularized = [name for name in ("kernel", "bias")
                   if getattr(layer, f"{name}_regularizer") is not None]
    for name, loss in zip(regularized, weight_losses, strict=True):
        arrays[f"loss_{name}"] = np.asarray(loss)
    arrays["constrained_kernel"] = np.asarray(layer.kernel_constraint(layer.kernel))
    if layer.bias_constraint is not None:
        arrays["constrained_bias"] = np.asarray(layer.bias_constraint(layer.bias))

    params = {"keras3_config": _json(config), "activations": list(ACTIVATIONS)}
    tf_keras_config = _tf_keras_config(input_shape, arguments, seed)
    if tf_keras_config is not None:
        params["tf_keras_config"] = tf_keras_config
    if channels_first:
        params["tf_computed_as"] = ("linear output by the channels_last layer on the transposed "
                                    "input; activity loss by Keras 3's formula")
    return params, arrays


def layer_recipes() -> list[tuple]:
    """The cases as recipes. Their configs come from Keras layers, which must not be built before
    make_golden has configured TensorFlow (threads, determinism), so each compute completes its
    own params dict, which make_golden writes to the manifest after the compute."""
    recipes = []
    for index, (name, input_shape, arguments) in enumerate(CASES):
        params = {"input_shape": list(input_shape), "seed": [SEED, index]}

        def compute(params=params, name=name, input_shape=input_shape, arguments=arguments):
            # Named, or Keras would number the layer by how many it built before.
            found, arrays = layer_case(input_shape, {**arguments, "name": name}, params["seed"])
            params.update(found)
            return arrays

        recipes.append((name, "layer", params, compute))
    return recipes

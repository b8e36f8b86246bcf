"""``tconv.Conv2DTranspose``: Keras' layer, framework-agnostic, on tconv's op.

The weights are arrays of one namespace and device: those of the first input the layer is called
on, or of the arrays given to ``set_weights``; a layer built from a shape alone (``build`` or the
``input_shape`` argument) holds NumPy arrays until ``set_weights`` gives it others. It never
converts its weights behind the caller's back: calling a NumPy-weighted layer on torch tensors is a
TypeError that says what to do.

What Keras 3 does, this does: the dtype policy (inputs cast to the compute dtype, weights kept in
the variable dtype), the activation on the last axis whatever the ``data_format``, the activity
regularization divided by the batch size, ``losses`` ordered activity then kernel then bias, the
constraints left to the optimizer step (here ``apply_constraints()``).
"""

from __future__ import annotations

import itertools

import array_api_compat
import numpy as np

from . import activations, constraints, initializers, regularizers
from ._dispatch import conv2d_transpose
from ._options import positive_int, standardize_tuple, validate_options
from ._spec import compute_output_shape

__all__ = ["Conv2DTranspose"]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# Keras' mixed policies: variables in float32, computation in the half type.
MIXED_POLICIES = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
LAYER_KWARGS = ("name", "dtype", "trainable", "input_shape")

_name_counts: dict[str, itertools.count] = {}


def _unique_name(base: str) -> str:
    index = next(_name_counts.setdefault(base, itertools.count()))
    return base if index == 0 else f"{base}_{index}"


def _dtype_policy_name(dtype) -> str:
    """A dtype name, a Keras policy name, or a Keras 3 ``DTypePolicy`` / tf.keras 2 ``Policy``
    config dict; None is Keras' default floatx, float32."""
    if dtype is None:
        return "float32"
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name not in FLOAT_DTYPES and name not in MIXED_POLICIES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES + tuple(MIXED_POLICIES)} or a Keras "
                         f"dtype policy config naming one, got {dtype!r}")
    return name


def _to_numpy(array) -> np.ndarray:
    if array_api_compat.is_torch_array(array):
        return array.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(array):
        return array.get()
    return np.asarray(array)


class Conv2DTranspose:
    """Keras' ``Conv2DTranspose`` layer (Keras 3 signature and semantics).

    Args:
        filters, kernel_size, strides, padding, output_padding, data_format, dilation_rate:
            as :func:`tconv.conv2d_transpose` (``data_format=None`` is Keras' configured one).
        activation: None, a Keras activation name (see ``tconv.activations``) or a callable.
        use_bias: whether the layer has a bias.
        kernel_initializer, bias_initializer: a Keras initializer name, config dict, instance
            (``tconv.initializers``) or callable ``(shape, dtype) -> array``.
        kernel_regularizer, bias_regularizer, activity_regularizer: None, a Keras regularizer
            name, config dict, instance (``tconv.regularizers``) or callable.
        kernel_constraint, bias_constraint: None, a Keras constraint name, config dict,
            instance (``tconv.constraints``) or callable.
        name, dtype, trainable: Keras' layer arguments; ``dtype`` is a float dtype name, a
            mixed policy name (``"mixed_float16"``, ``"mixed_bfloat16"``) or a Keras policy
            config; default float32.
        input_shape: the input shape without the batch axis; builds the layer now (NumPy
            weights).
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid",
                 output_padding=None, data_format=None, dilation_rate=(1, 1), activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        unknown = sorted(set(kwargs) - set(LAYER_KWARGS))
        if unknown:
            raise ValueError(f"unrecognized keyword arguments passed to Conv2DTranspose: "
                             f"{unknown}; valid ones are the Keras arguments and {LAYER_KWARGS}")
        self.filters = positive_int(filters, "filters")
        self.kernel_size = standardize_tuple(kernel_size, 2, "kernel_size", minimum=1)
        self._options = validate_options(2, strides=strides, padding=padding,
                                         output_padding=output_padding, data_format=data_format,
                                         dilation_rate=dilation_rate)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        name = kwargs.get("name")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        self.name = name or _unique_name("conv2d_transpose")
        self.dtype_policy = _dtype_policy_name(kwargs.get("dtype"))
        self.trainable = bool(kwargs.get("trainable", True))
        self.kernel = None
        self.bias = None
        self._activity_losses = []
        if kwargs.get("input_shape") is not None:
            self.build((None, *kwargs["input_shape"]))

    # --- Keras' surface ---------------------------------------------------------------------

    # The normalized options, read-only: the layer's geometry is fixed at construction.
    strides = property(lambda self: self._options.strides)
    padding = property(lambda self: self._options.padding)
    output_padding = property(lambda self: self._options.output_padding)
    data_format = property(lambda self: self._options.data_format)
    dilation_rate = property(lambda self: self._options.dilation_rate)

    @property
    def built(self) -> bool:
        return self.kernel is not None

    @property
    def dtype(self) -> str:
        """The variable dtype."""
        return "float32" if self.dtype_policy in MIXED_POLICIES else self.dtype_policy

    @property
    def compute_dtype(self) -> str:
        return MIXED_POLICIES.get(self.dtype_policy, self.dtype_policy)

    def build(self, input_shape) -> None:
        """Create NumPy weights for inputs of ``input_shape`` (batch axis included, may be
        None), drawn by the initializers."""
        self._create_weights(np, None, self._in_channels(input_shape))

    def __call__(self, inputs):
        xp = array_api_compat.array_namespace(inputs)
        if not self.built:
            self._create_weights(xp, array_api_compat.device(inputs),
                                 self._in_channels(inputs.shape))
        self._check_namespace(xp, inputs)
        compute_dtype = self._xp_dtype(xp, self.compute_dtype)
        if xp.isdtype(inputs.dtype, "real floating") and inputs.dtype != compute_dtype:
            inputs = xp.astype(inputs, compute_dtype)
        kernel, bias = (None if weight is None else xp.astype(weight, compute_dtype, copy=False)
                        for weight in (self.kernel, self.bias))
        outputs = self.activation(conv2d_transpose(inputs, kernel, bias,
                                                   **self._options.keywords()))
        self._activity_losses = []
        if self.activity_regularizer is not None:
            # Keras 3 divides by the batch size, so the penalty does not grow with the batch.
            batch = outputs.shape[0]
            penalty = self.activity_regularizer(outputs)
            self._activity_losses.append(penalty / batch if batch else penalty * 0)
        return outputs

    def compute_output_shape(self, input_shape) -> tuple:
        return compute_output_shape(self._options, self.kernel_size, input_shape, self.filters)

    @property
    def weights(self) -> list:
        return [weight for weight in (self.kernel, self.bias) if weight is not None]

    @property
    def trainable_weights(self) -> list:
        return self.weights if self.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        return [] if self.trainable else self.weights

    @property
    def losses(self) -> list:
        """The activity penalty of the last call, then the kernel's and the bias' penalties."""
        penalties = list(self._activity_losses)
        for regularizer, weight in ((self.kernel_regularizer, self.kernel),
                                    (self.bias_regularizer, self.bias)):
            if regularizer is not None and weight is not None:
                penalties.append(regularizer(weight))
        return penalties

    def apply_constraints(self) -> None:
        """Project the weights with the constraints, as Keras' optimizer does after a step."""
        if self.kernel_constraint is not None and self.kernel is not None:
            self.kernel = self.kernel_constraint(self.kernel)
        if self.bias_constraint is not None and self.bias is not None:
            self.bias = self.bias_constraint(self.bias)

    def get_weights(self) -> list[np.ndarray]:
        """``[kernel, bias]`` (bias only with ``use_bias``) as NumPy arrays, Keras' layout."""
        return [_to_numpy(weight) for weight in self.weights]

    def set_weights(self, weights) -> None:
        """Replace the weights with ``[kernel, bias]`` in Keras' layout, as a Keras layer's
        ``get_weights()`` gives them. They are copied, cast to the variable dtype, and set the
        layer's namespace and device (NumPy for NumPy arrays or nested lists)."""
        if not self.built:
            raise ValueError(f"layer {self.name!r} is not built: call build(input_shape) or call "
                             f"it on an input before set_weights")
        names = ["kernel", "bias"][:len(self.weights)]
        weights = list(weights)
        if len(weights) != len(names):
            raise ValueError(f"layer {self.name!r} expects {len(names)} weights ({names}), got "
                             f"{len(weights)}")
        arrays = [w if array_api_compat.is_array_api_obj(w) else np.asarray(w) for w in weights]
        xp = array_api_compat.array_namespace(*arrays)
        for name, expected, array in zip(names, self.weights, arrays):
            if tuple(array.shape) != tuple(expected.shape):
                raise ValueError(f"weight {name!r} of layer {self.name!r} must have shape "
                                 f"{tuple(expected.shape)}, got {tuple(array.shape)}")
        dtype = self._xp_dtype(xp, self.dtype)
        self.kernel, *rest = (xp.astype(array, dtype, copy=True) for array in arrays)
        self.bias = rest[0] if rest else None

    def get_config(self) -> dict:
        """Keras 3's config: initializers, regularizers and constraints as Keras config dicts
        (callables of one's own are left as they are)."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": {"module": "keras", "class_name": "DTypePolicy",
                      "config": {"name": self.dtype_policy}, "registered_name": None},
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "output_padding": self.output_padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": self._serialized(regularizers, self.kernel_regularizer),
            "bias_regularizer": self._serialized(regularizers, self.bias_regularizer),
            "activity_regularizer": self._serialized(regularizers, self.activity_regularizer),
            "kernel_constraint": self._serialized(constraints, self.kernel_constraint),
            "bias_constraint": self._serialized(constraints, self.bias_constraint),
        }

    @classmethod
    def from_config(cls, config: dict) -> Conv2DTranspose:
        """A layer from a Keras 3 or tf.keras 2 ``Conv2DTranspose`` config: tf.keras 2's
        ``batch_input_shape`` builds the layer (as its ``input_shape``), its ``groups`` must be
        1 (Keras' Conv2DTranspose has no groups)."""
        config = dict(config)
        batch_input_shape = config.pop("batch_input_shape", None)
        groups = config.pop("groups", 1)
        if groups != 1:
            raise ValueError(f"groups must be 1 in a Conv2DTranspose config, got {groups!r}")
        if batch_input_shape is not None:
            config.setdefault("input_shape", tuple(batch_input_shape[1:]))
        return cls(**config)

    def __repr__(self) -> str:
        return (f"Conv2DTranspose(name={self.name!r}, filters={self.filters}, "
                f"kernel_size={self.kernel_size}, built={self.built})")

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _serialized(module, obj):
        return None if obj is None else module.serialize(obj)

    def _in_channels(self, input_shape) -> int:
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(f"{self.name}: inputs must have rank 4 (batch included), got shape "
                             f"{input_shape}")
        channels = input_shape[-1 if self.data_format == "channels_last" else 1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension of the inputs must be known, "
                             f"got shape {input_shape}")
        return int(channels)

    def _xp_dtype(self, xp, name: str):
        dtype = getattr(xp, name, None)
        if dtype is None:
            raise TypeError(f"{self.name}: dtype {name!r} (policy {self.dtype_policy!r}) is not "
                            f"available in {xp.__name__}")
        return dtype

    def _create_weights(self, xp, device, in_channels: int) -> None:
        dtype = self._xp_dtype(xp, self.dtype)
        shapes = {"kernel": (*self.kernel_size, self.filters, in_channels)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        created = {}
        for name, shape in shapes.items():
            initializer = getattr(self, f"{name}_initializer")
            # Drawn in float64 on the host, rounded once to the variable dtype.
            values = _to_numpy(initializer(shape, dtype="float64"))
            created[name] = xp.astype(xp.asarray(values, device=device), dtype)
        self.kernel, self.bias = created["kernel"], created.get("bias")

    def _check_namespace(self, xp, inputs) -> None:
        weights_xp = array_api_compat.array_namespace(self.kernel)
        if weights_xp is not xp:
            raise TypeError(
                f"{self.name}: the weights are {type(self.kernel).__module__} arrays but the "
                f"inputs are {type(inputs).__module__} arrays: convert get_weights() to the "
                f"inputs' kind and device and pass them to set_weights first")

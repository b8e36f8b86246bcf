"""Keras 3's weight initializers: names, defaults, configs and distributions.

An initializer is called as Keras' are, ``initializer(shape, dtype="float32")``, and returns a
NumPy array drawn on the host; the layer moves it to its namespace and device. Random ones draw
from ``numpy.random.default_rng(seed)``: with an int ``seed`` every call gives the same values (as
Keras' stateless seeding does), with ``seed=None`` every call differs. The values are Keras'
distributions, not Keras' random streams.

Fans follow Keras' ``compute_fans``: for a kernel of rank >= 3 the receptive field is the product
of all axes but the last two, ``fan_in = shape[-2] * receptive_field`` and ``fan_out = shape[-1] *
receptive_field``; for ``Conv2DTranspose``'s ``(kh, kw, filters, in_channels)`` kernel that is
``fan_in = kh*kw*filters`` and ``fan_out = kh*kw*in_channels``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "LecunNormal",
    "LecunUniform", "Ones", "Orthogonal", "RandomNormal", "RandomUniform", "TruncatedNormal",
    "VarianceScaling", "Zeros", "compute_fans", "get", "serialize",
]

# The standard deviation of a unit normal truncated to [-2, 2] (Keras divides by it so that the
# truncated draw has the asked-for variance).
TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


def compute_fans(shape, input_axes=None, output_axes=None) -> tuple[int, int]:
    """Keras' ``compute_fans``: explicit axes when both are given, else by rank."""
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return (int(math.prod(shape[axis] for axis in input_axes)),
                int(math.prod(shape[axis] for axis in output_axes)))
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _check_seed(seed):
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    return seed


def truncated_normal(rng, shape, mean, stddev) -> np.ndarray:
    """Normal draws, each redrawn until it lies within two standard deviations (as TF does)."""
    draws = rng.standard_normal(shape)
    outside = np.abs(draws) > 2
    while outside.any():
        draws[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(draws) > 2
    return mean + stddev * draws


class Configurable:
    """Keras' config protocol, shared by initializers, regularizers and constraints: the
    constructor's keyword arguments are the config."""

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


class Initializer(Configurable):
    """A Keras initializer: ``__call__(shape, dtype)`` and ``get_config()``; each subclass
    computes its float64 ``values(shape)``."""

    def __call__(self, shape, dtype="float32") -> np.ndarray:
        return np.asarray(self.values(tuple(int(dim) for dim in shape)), dtype=dtype)


class Zeros(Initializer):
    def values(self, shape):
        return np.zeros(shape)


class Ones(Initializer):
    def values(self, shape):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = value

    def values(self, shape):
        return np.full(shape, self.value, dtype=np.float64)

    def get_config(self):
        return {"value": self.value}


class _Drawn(Initializer):
    """An initializer drawing from a seeded distribution whose parameters are ``PARAMETERS``."""

    PARAMETERS: tuple[str, ...]

    def get_config(self):
        return {"seed": self.seed, **{name: getattr(self, name) for name in self.PARAMETERS}}


class RandomNormal(_Drawn):
    PARAMETERS = ("mean", "stddev")

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, _check_seed(seed)

    def values(self, shape):
        return np.random.default_rng(self.seed).normal(self.mean, self.stddev, shape)


class TruncatedNormal(RandomNormal):
    """Normal, redrawn outside ``mean +- 2 * stddev``."""

    def values(self, shape):
        return truncated_normal(np.random.default_rng(self.seed), shape, self.mean, self.stddev)


class RandomUniform(_Drawn):
    PARAMETERS = ("minval", "maxval")

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, _check_seed(seed)

    def values(self, shape):
        return np.random.default_rng(self.seed).uniform(self.minval, self.maxval, shape)


class VarianceScaling(Initializer):
    """Variance ``scale / n``, ``n`` the fan of ``mode`` (at least 1): uniform in ``+-sqrt(3 *
    variance)``, truncated normal (``"truncated_normal"``, also spelled ``"normal"``) or plain
    normal (``"untruncated_normal"``)."""

    MODES = ("fan_in", "fan_out", "fan_avg")
    DISTRIBUTIONS = ("uniform", "truncated_normal", "untruncated_normal")

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None,
                 input_axes=None, output_axes=None):
        if not scale > 0.0:
            raise ValueError(f"scale must be a positive float, got {scale!r}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in self.DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {self.DISTRIBUTIONS} or 'normal', "
                             f"got {distribution!r}")
        self.scale, self.mode, self.distribution = scale, mode, distribution
        self.seed = _check_seed(seed)
        self.input_axes, self.output_axes = input_axes, output_axes

    def variance(self, shape) -> float:
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        return self.scale / max(1.0, fan[self.mode])

    def values(self, shape):
        variance = self.variance(shape)
        rng = np.random.default_rng(self.seed)
        if self.distribution == "truncated_normal":
            return truncated_normal(rng, shape, 0.0,
                                    math.sqrt(variance) / TRUNCATED_NORMAL_STDDEV)
        if self.distribution == "untruncated_normal":
            return rng.normal(0.0, math.sqrt(variance), shape)
        limit = math.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, shape)

    def get_config(self):
        return {"seed": self.seed, "scale": self.scale, "mode": self.mode,
                "distribution": self.distribution, "input_axes": self.input_axes,
                "output_axes": self.output_axes}


class _FixedVarianceScaling(VarianceScaling):
    """Glorot, He, LeCun: a VarianceScaling whose scale, mode and distribution are fixed."""

    SCALE_MODE_DISTRIBUTION: tuple[float, str, str]

    def __init__(self, seed=None, input_axes=None, output_axes=None):
        scale, mode, distribution = self.SCALE_MODE_DISTRIBUTION
        super().__init__(scale, mode, distribution, seed, input_axes, output_axes)

    def get_config(self):
        return {"seed": self.seed, "input_axes": self.input_axes,
                "output_axes": self.output_axes}


def _fixed_variance_scaling(name: str, scale: float, mode: str, distribution: str) -> type:
    return type(name, (_FixedVarianceScaling,), {
        "SCALE_MODE_DISTRIBUTION": (scale, mode, distribution), "__module__": __name__,
        "__doc__": f"Keras' ``{name}``: VarianceScaling({scale}, {mode!r}, {distribution!r})."})


GlorotUniform = _fixed_variance_scaling("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _fixed_variance_scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _fixed_variance_scaling("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _fixed_variance_scaling("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _fixed_variance_scaling("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _fixed_variance_scaling("LecunNormal", 1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    """``gain`` times an orthogonal matrix (rows = product of all axes but the last), from the QR
    decomposition of a normal draw with R's diagonal signs folded in, as Keras does."""

    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = gain, _check_seed(seed)

    def values(self, shape):
        if len(shape) < 2:
            raise ValueError(f"orthogonal needs a shape of rank >= 2, got {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        draw = np.random.default_rng(self.seed).standard_normal((max(rows, cols),
                                                                  min(rows, cols)))
        q, r = np.linalg.qr(draw)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self):
        return {"seed": self.seed, "gain": self.gain}


def _snake_case(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


_CLASSES = (Zeros, Ones, Constant, RandomNormal, RandomUniform, TruncatedNormal, VarianceScaling,
            GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal,
            Orthogonal)
INITIALIZERS = {cls.__name__: cls for cls in _CLASSES}
INITIALIZERS.update({_snake_case(cls.__name__): cls for cls in _CLASSES})
INITIALIZERS.update(normal=RandomNormal, uniform=RandomUniform, one=Ones, zero=Zeros,
                    OrthogonalInitializer=Orthogonal)


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise ValueError(f"{what} must be one of {sorted(registry)} (or a config dict or a "
                         f"callable), got {name!r}")
    return registry[name]


def deserialize_config(registry: dict, identifier, what: str):
    """A Keras name, or a Keras 3 / tf.keras 2 config dict ``{"class_name", "config", ...}``
    (``module`` and ``registered_name`` are Keras' bookkeeping), to an instance."""
    if isinstance(identifier, str):
        return _lookup(registry, identifier, what)()
    if not isinstance(identifier.get("class_name"), str):
        raise ValueError(f"a {what} config needs a 'class_name', got {identifier!r}")
    cls = _lookup(registry, identifier["class_name"], what)
    return cls.from_config(dict(identifier.get("config") or {}))


def get_from(registry: dict, identifier, what: str):
    """Keras' ``get``: None, a name, a config dict (see :func:`deserialize_config`) or a
    callable, which is used as it is."""
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize_config(registry, identifier, what)
    if callable(identifier):
        return identifier
    raise TypeError(f"{what} must be a name, a config dict or a callable, got {identifier!r}")


def serialize_config(obj, registry: dict, module: str):
    """Keras 3's config dict for one of the registry's classes; other callables as they are."""
    if registry.get(type(obj).__name__) is not type(obj):
        return obj
    return {"module": module, "class_name": type(obj).__name__, "config": obj.get_config(),
            "registered_name": None}


def get(identifier):
    """None, a Keras name, a Keras config dict, or a callable ``(shape, dtype) -> array``."""
    return get_from(INITIALIZERS, identifier, "initializer")


def serialize(initializer):
    return serialize_config(initializer, INITIALIZERS, "keras.initializers")

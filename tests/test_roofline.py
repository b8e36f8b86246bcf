"""The roofline of a pass (tconv._roofline): FLOPs, fewest bytes moved, H100 lower bound."""

import pytest

import tconv
from tconv._roofline import H100_SXM, roofline


def _spec():
    # x (2, 5, 4, 6) NHWC, kernel (3, 3, 8, 6): y (2, 10, 8, 8) with 'same' at stride 2
    return tconv.make_spec((2, 5, 4, 6), (3, 3, 8, 6), strides=2, padding="same")


def test_flops_and_bytes_counted_by_hand():
    spec = _spec()
    x, kernel, y, bias = 2 * 5 * 4 * 6, 3 * 3 * 8 * 6, 2 * 10 * 8 * 8, 8
    flops = 2 * (2 * 5 * 4) * 6 * 8 * 9  # every input pixel x channel x filter x tap, FMA = 2
    forward = roofline(spec, "float16", "forward")
    assert forward.flops == flops
    assert forward.bytes == 2 * (x + kernel + bias + y)
    assert roofline(spec, "float32-ieee", "dgrad").bytes == 4 * (y + kernel + x)
    assert roofline(spec, "float64", "wgrad").bytes == 8 * (y + x + kernel + bias)


def test_lower_bound_is_the_larger_of_compute_and_memory_time():
    spec = _spec()
    half, ieee = roofline(spec, "bfloat16"), roofline(spec, "float32-ieee")
    assert half.compute_s == pytest.approx(half.flops / 989e12)
    assert half.memory_s == pytest.approx(half.bytes / 3.35e12)
    assert half.seconds == max(half.compute_s, half.memory_s)
    # this small layer is memory-bound at half precision
    assert half.bound == "memory" and half.share(2 * half.seconds) == pytest.approx(0.5)
    assert ieee.compute_s == pytest.approx(ieee.flops / 67e12)
    assert roofline(spec, "float32-tf32").compute_s == pytest.approx(ieee.flops / 494e12)
    assert H100_SXM.flops_per_s["float64"] == 34e12


def test_a_large_layer_is_compute_bound():
    spec = tconv.make_spec((64, 16, 16, 1024), (4, 4, 256, 1024), strides=2, padding="same")
    assert roofline(spec, "float16").bound == "compute"


@pytest.mark.parametrize("precision, pass_name, match", [
    ("float32", "forward", "precision must be one of"),
    ("float16", "backward", "pass_name must be one of"),
])
def test_unknown_names_are_refused(precision, pass_name, match):
    with pytest.raises(ValueError, match=match):
        roofline(_spec(), precision, pass_name)

"""Output shapes: Keras' deconv_output_length, worked by hand from the formula in the docs."""

import numpy as np
import pytest

import tconv


@pytest.mark.parametrize("length, kernel, stride, dilation, padding, output_padding, expected", [
    (4, 3, 2, 1, "valid", None, 9),     # L*s + max(k - s, 0)
    (4, 1, 3, 1, "valid", None, 12),    # kernel smaller than stride: L*s
    (4, 3, 2, 1, "same", None, 8),      # L*s
    (4, 3, 2, 1, "same", 1, 8),         # (L-1)*s + k - 2*(k//2) + op
    (4, 4, 2, 1, "same", 1, 7),         # even kernel: pad 2
    (4, 3, 2, 1, "valid", 1, 10),       # (L-1)*s + k + op
    (4, 3, 1, 2, "valid", None, 8),     # dilation: k_eff = 5
    (4, 3, 1, 2, "same", 0, 4),         # k_eff 5, pad 2
    (1, 5, 1, 1, "valid", None, 5),     # kernel larger than input
    (3, 2, 3, 2, "valid", None, 9),     # dilation with stride: k_eff 3 == s
])
def test_output_length_follows_keras(length, kernel, stride, dilation, padding, output_padding,
                                     expected):
    shape = tconv.conv2d_transpose_output_shape(
        (None, length, 2 * length, 3), (kernel, 1), 7, strides=(stride, 1), padding=padding,
        output_padding=None if output_padding is None else (output_padding, 0),
        data_format="channels_last", dilation_rate=(dilation, 1))
    assert shape == (None, expected, 2 * length, 7)


def test_channels_first_shape_and_op_agree():
    shape = tconv.conv2d_transpose_output_shape((2, 3, 5, 6), (3, 4), 8, strides=(2, 3),
                                                padding="SAME", data_format="channels_first")
    assert shape == (2, 8, 10, 18)
    y = tconv.conv2d_transpose(np.ones((2, 3, 5, 6)), np.ones((3, 4, 8, 3)), strides=(2, 3),
                               padding="SAME", data_format="channels_first")
    assert y.shape == shape

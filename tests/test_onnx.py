"""ONNX as torch users export it: ``torch.onnx.export`` of a model holding
``tconv.torch.Conv2DTranspose`` (or the drop-in ``tconv.torch.ConvTranspose2d``) gives a standard
ONNX graph (a ``ConvTranspose`` node, no custom domain) that onnxruntime runs to the eager result,
for any batch and image size when exported with dynamic sizes. A few cases cover both data
formats, dilation, groups, 'same' with an odd overhang (asymmetric pads), 'valid' with an output
longer than the full convolution, output_padding, and torch's numeric padding."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (the `onnx` extra)")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (the `onnx` extra)")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
import tconv.torch as tconv_torch  # noqa: E402

CASES = {
    "same-odd-overhang-grouped-first": (
        (2, 4, 5, 6), dict(in_channels=4, filters=6, kernel_size=3, strides=2, padding="same",
                           groups=2, data_format="channels_first")),
    "valid-dilated-stride-over-kernel-last": (
        (2, 5, 4, 3), dict(in_channels=3, filters=4, kernel_size=(1, 2), strides=(3, 2),
                           dilation_rate=(1, 2), padding="valid", data_format="channels_last")),
    "output-padding-same-dilated-first": (
        (1, 2, 4, 3), dict(in_channels=2, filters=3, kernel_size=3, strides=2, padding="same",
                           output_padding=(1, 0), dilation_rate=(2, 1),
                           data_format="channels_first")),
}


def _export_and_run(layer, x_shape, spatial_axes):
    """Export ``layer`` (then tanh) with dynamic batch, height and width; check the graph is
    standard ONNX with a ConvTranspose; run it in onnxruntime on ``x_shape`` and on a larger
    shape against eager torch."""
    from torch.export import Dim

    model = torch.nn.Sequential(layer, torch.nn.Tanh()).eval()
    dynamic = {0: Dim("batch"), spatial_axes[0]: Dim("height"), spatial_axes[1]: Dim("width")}
    program = torch.onnx.export(model, (torch.randn(x_shape),), dynamic_shapes=(dynamic,))
    graph = program.model_proto.graph
    assert "ConvTranspose" in [node.op_type for node in graph.node]
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    other_shape = list(x_shape)
    other_shape[0] += 1
    other_shape[spatial_axes[0]] += 2
    other_shape[spatial_axes[1]] += 1
    for shape in (x_shape, other_shape):
        x = torch.randn(shape)
        (result,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_export_gives_a_standard_conv_transpose_that_onnxruntime_runs(case):
    x_shape, arguments = CASES[case]
    torch.manual_seed(0)
    layer = tconv_torch.Conv2DTranspose(**arguments)
    with torch.no_grad():
        layer.bias.normal_()
    spatial_axes = (2, 3) if arguments["data_format"] == "channels_first" else (1, 2)
    _export_and_run(layer, x_shape, spatial_axes)


def test_export_of_the_torch_drop_in_with_numeric_padding():
    torch.manual_seed(1)
    layer = tconv_torch.ConvTranspose2d(4, 6, 3, stride=2, padding=(1, 2), output_padding=1,
                                        groups=2, dilation=(1, 2))
    _export_and_run(layer, (2, 4, 5, 6), (2, 3))

"""ONNX as torch users export it: ``torch.onnx.export`` of a model holding
``tconv.torch.Conv2DTranspose`` gives a standard ONNX graph (a ``ConvTranspose`` node, no custom
domain) that onnxruntime runs to the eager result. A few cases cover both data formats, dilation,
groups, 'same' with an odd overhang (asymmetric pads), 'valid' with an output longer than the full
convolution, and an output_padding."""

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


@pytest.mark.parametrize("case", CASES)
def test_export_gives_a_standard_conv_transpose_that_onnxruntime_runs(case):
    x_shape, arguments = CASES[case]
    torch.manual_seed(0)
    model = torch.nn.Sequential(tconv_torch.Conv2DTranspose(**arguments), torch.nn.Tanh())
    with torch.no_grad():
        model[0].bias.normal_()
    model.eval()
    x = torch.randn(x_shape)
    program = torch.onnx.export(model, (x,), )
    graph = program.model_proto.graph
    assert "ConvTranspose" in [node.op_type for node in graph.node]
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)

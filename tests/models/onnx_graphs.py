"""Small ONNX graphs built for the tests, standing in for models we cannot ship."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_arcface_like(
    path: Path, *, dim: int = 512, size: int = 112, seed: int = 0, batch: int | str = "None"
) -> Path:
    """An ONNX graph with the interface of an ArcFace embedder and fixed random
    weights: input ``input.1`` of shape ``(batch, 3, size, size)`` float32, output
    ``(batch, dim)``; ``batch`` is a number for a fixed batch size, else a name.
    An 8 x 8 strided convolution over the three channels, a ReLU and a dense layer, so the
    output depends on the channel order and on where things are.

    insightface's model router sends it to ``ArcFaceONNX`` (a square input of at least
    112 that is a multiple of 16, one output); no node is named ``Sub*`` or ``Mul*``, so
    insightface preprocesses its input with mean 127.5 and std 127.5.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    channels, kernel = 8, 8
    cells = channels * (size // kernel) ** 2
    conv_w = rng.normal(0.0, 0.2, (channels, 3, kernel, kernel)).astype(np.float32)
    conv_b = rng.normal(0.0, 0.1, channels).astype(np.float32)
    fc_w = rng.normal(0.0, 1.0 / np.sqrt(cells), (cells, dim)).astype(np.float32)
    fc_b = rng.normal(0.0, 0.01, dim).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv",
            ["input.1", "conv_w", "conv_b"],
            ["features"],
            name="conv_0",
            kernel_shape=[kernel, kernel],
            strides=[kernel, kernel],
        ),
        helper.make_node("Relu", ["features"], ["active"], name="relu_1"),
        helper.make_node("Flatten", ["active"], ["flat"], name="flatten_2", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["embedding"], name="fc_3"),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])],
        initializer=[
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(conv_b, "conv_b"),
            numpy_helper.from_array(fc_w, "fc_w"),
            numpy_helper.from_array(fc_b, "fc_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by any onnxruntime of the last few years
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path

"""Tiny models the tests build and save themselves (no weights are ever downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build_tiny_isnet(path: Path, gain: float = 4.0) -> None:
    """An ISNet-shaped ONNX model as rembg's ``dis_custom`` session runs it (1x3x1024x1024
    in, first output 1x1x1024x1024): a 1x1 convolution that is high where the image is
    saturated red. ``gain`` changes the weights, and so the file's revision."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.array([[[[gain]], [[-gain]], [[-gain]]]], np.float32), "w")
    bias = numpy_helper.from_array(np.array([0.0], np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["mask"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_isnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 1024, 1024])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 1024, 1024])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)  # a worker re-hashing the file never sees half of it

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from graphport.errors import ExportError, UsageError
from graphport.export.onnx import (
    STRATEGIES,
    check_opset,
    export_to_onnx,
    max_onnx_opset,
    save_onnx,
)
from graphport.models.registry import get_onnx_config
from graphport.models.tiny import tiny_model


@pytest.fixture(scope="module")
def qa_export():
    model = tiny_model("bert", "question-answering")
    return model, export_to_onnx(model, get_onnx_config(model.config, "question-answering"))


def test_outputs_are_the_task_outputs_with_named_dynamic_axes(qa_export):
    _, exported = qa_export
    graph = exported.model.graph
    assert [v.name for v in graph.outputs] == ["start_logits", "end_logits"]
    assert [str(d) for d in graph.outputs[0].shape] == ["batch", "sequence"]
    assert [str(d) for d in graph.inputs[0].shape] == ["batch", "sequence"]
    assert exported.strategy == "torch.export"
    assert exported.fallback_reason is None
    assert exported.opset == 18


@pytest.mark.parametrize("opset", [9, 17, 99])
def test_opsets_the_exporter_cannot_write_are_refused(opset):
    with pytest.raises(UsageError, match=f"Opset {opset} cannot be produced"):
        check_opset(opset)


def test_newest_opset_is_accepted():
    check_opset(max_onnx_opset())


def test_fallback_strategy_is_used_and_recorded():
    model = tiny_model("bert", "text-classification")
    config = get_onnx_config(model.config, "text-classification")

    def broken(*args):
        raise RuntimeError("simulated torch.export failure")

    exported = export_to_onnx(model, config, strategies=(("torch.export", broken), STRATEGIES[1]))
    assert exported.strategy == "torchscript"
    assert "simulated torch.export failure" in exported.fallback_reason
    assert [v.name for v in exported.model.graph.outputs] == ["logits"]


def test_every_strategy_failing_lists_each_reason():
    model = tiny_model("bert")
    config = get_onnx_config(model.config, "default")

    def fail(message):
        def strategy(*args):
            raise RuntimeError(message)

        return strategy

    with pytest.raises(ExportError, match=r"first: RuntimeError: a.*second: RuntimeError: b"):
        export_to_onnx(model, config, strategies=(("first", fail("a")), ("second", fail("b"))))


def test_external_data_above_threshold(qa_export, tmp_path: Path):
    _, exported = qa_export
    path = tmp_path / "model.onnx"
    data = save_onnx(exported.model, str(path), external_data_threshold=1024)
    assert data == "model.onnx_data"
    assert (tmp_path / data).stat().st_size > 50_000
    assert path.stat().st_size < 50_000
    proto = onnx.load(path, load_external_data=False)
    assert any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["start_logits", "end_logits"]


def test_small_models_stay_in_one_file(qa_export, tmp_path: Path):
    _, exported = qa_export
    assert save_onnx(exported.model, str(tmp_path / "m.onnx")) is None
    assert ir.load(tmp_path / "m.onnx").graph.outputs[0].name == "start_logits"


def test_fp16_export_keeps_integer_inputs():
    model = tiny_model("bert").half()
    exported = export_to_onnx(model, get_onnx_config(model.config, "default"))
    assert exported.model.graph.inputs[0].dtype == ir.DataType.INT64
    assert exported.model.graph.outputs[0].dtype == ir.DataType.FLOAT16


def test_a_tiny_epsilon_survives_graph_optimization():
    """An RMSNorm's ``1 / sqrt(mean(x^2) + 1e-8)`` keeps its epsilon: onnxscript's no-op
    rule would take ``+ 1e-8`` for ``+ 0``, and a zero vector would then give inf/NaN."""
    import numpy as np
    from onnx import TensorProto, helper

    from graphport.graphs.cleanup import optimize_graph

    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["eps"], value_float=1e-8),
            helper.make_node("Add", ["x", "eps"], ["shifted"]),
            helper.make_node("Sqrt", ["shifted"], ["root"]),
            helper.make_node("Reciprocal", ["root"], ["y"]),
        ],
        "norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    def run(model: ir.Model) -> np.ndarray:
        session = ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString())
        return session.run(None, {"x": np.zeros(2, np.float32)})[0]

    model = ir.serde.deserialize_model(proto)
    optimize_graph(model)  # onnxscript.optimizer.optimize gives [inf, inf] here
    np.testing.assert_allclose(run(model), [1e4, 1e4], rtol=1e-3)

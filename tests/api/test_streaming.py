"""Streamed exports (api/streaming.py): a decoder traced on the meta device, its weights
read from the checkpoint one at a time, plain, int4-quantized, or from GPTQ blocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import add_causal_tokenizer
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

import graphport
from graphport.api import export_model
from graphport.cli import cli
from graphport.errors import UsageError
from graphport.export.streaming import CheckpointReader
from graphport.graphs.gptq import GptqSpec, pack_gptq

CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 1000,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "architectures": ["LlamaForCausalLM"],
}


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama stored in bf16, as large checkpoints are."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stream") / "llama"
    LlamaForCausalLM(LlamaConfig(**CONFIG)).to(torch.bfloat16).save_pretrained(path)
    add_causal_tokenizer(path)
    return path


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the checkpoint tensors read, in order."""
    names: list[str] = []
    original = CheckpointReader.read
    monkeypatch.setattr(
        CheckpointReader, "read", lambda self, name: names.append(name) or original(self, name)
    )
    return names


def test_a_streamed_export_generates_eagers_tokens_on_both_runtimes(
    bf16_llama: Path, tmp_path: Path, reads: list[str]
) -> None:
    result = export_model(bf16_llama, tmp_path / "out", streaming=True)

    assert result.manifest.exporter["streamed"]
    # The export's own validation: logits and cache on onnxruntime and OpenVINO, and
    # greedy tokens identical to transformers' generate() on a padded batch.
    assert result.report.passed
    assert {r.runtime for r in result.report.results} == {"onnxruntime", "openvino"}
    assert {g.runtime for g in result.report.generation} == {"onnxruntime", "openvino"}
    assert all(g.passed for g in result.report.generation)
    # Every stored tensor was read once by the export (before validation reloads them).
    stored = CheckpointReader(sorted(bf16_llama.glob("*.safetensors"))).tensors
    assert sorted(reads[: len(stored)]) == sorted(stored)
    model = onnx.load(tmp_path / "out" / "model.onnx", load_external_data=False)
    assert not any(n.op_type == "Transpose" and "proj" in n.input[0] for n in model.graph.node)


def test_an_int4_streamed_export_from_the_cli_quantizes_every_projection_once(
    bf16_llama: Path, tmp_path: Path, reads: list[str]
) -> None:
    out = tmp_path / "int4"
    runner = CliRunner()
    exported = runner.invoke(
        cli, ["export", str(bf16_llama), str(out), "--quantize", "int4-weight", "--streaming"]
    )
    assert exported.exit_code == 0, exported.output
    assert "streamed, int4-weight" in exported.output
    # Judged against eager with the graph's own int4 weights (an exact graph passes with
    # room to spare), with the distance to the float weights reported beside it.
    assert "next-token agreement  onnxruntime" in exported.output
    assert "against eager with float weights  onnxruntime: logits min cosine" in exported.output
    report = json.loads((out / "parity.json").read_text())
    assert report["reference"].startswith("torch eager with the export's int4 weights (15 ")
    worst = min(o["min_cosine"] for r in report["results"] for o in r["outputs"])
    assert worst > 0.98

    model = onnx.load(out / "model.onnx", load_external_data=False)
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer, and lm_head
    weights = {i.name for i in model.graph.initializer}
    assert not [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    stored = CheckpointReader(sorted(bf16_llama.glob("*.safetensors"))).tensors
    export_reads = reads[: len(stored)]  # then validation reads them again
    assert sorted(export_reads) == sorted(stored)  # each weight read (and quantized) once
    tokens = graphport.load(out).generate(torch.tensor([[1, 5, 6, 7]]), max_new_tokens=4)
    assert tokens.shape == (1, 8)
    generated = runner.invoke(cli, ["generate", str(out), "w1 w2 w3", "--max-new-tokens", "4"])
    assert generated.exit_code == 0, generated.output
    # The next command: the fused form (its weights stay in the export's data file).
    fused = runner.invoke(cli, ["optimize", str(out), str(tmp_path / "o2"), "-O", "2"])
    assert fused.exit_code == 0, fused.output
    assert "pass int4-weight" in fused.output and "GroupQueryAttention" in str(
        onnx.load(tmp_path / "o2" / "model.onnx", load_external_data=False).graph.node
    )
    assert sorted(p.name for p in (tmp_path / "o2").glob("*onnx*")) == [
        "model.onnx",
        "model.onnx_data",
    ]


def _gptq_checkpoint(path: Path, act_order: bool) -> tuple[Path, LlamaForCausalLM]:
    """A tiny Llama written as a GPTQ checkpoint (4 bits, groups of 32), and the float
    model its blocks stand for."""
    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()
    spec = GptqSpec(4, 32, sym=False, desc_act=act_order, checkpoint_format="gptq")
    state = {}
    rng = np.random.default_rng(0)
    for name, tensor in model.state_dict().items():
        prefix = name.removesuffix(".weight")
        if name.endswith("proj.weight"):
            weight = tensor.numpy().T.copy()  # [K, N]
            perm = rng.permutation(weight.shape[0]) if act_order else None
            for part, value in pack_gptq(weight, spec, perm=perm).items():
                state[f"{prefix}.{part}"] = torch.from_numpy(np.ascontiguousarray(value))
        else:
            state[name] = tensor.contiguous()
    path.mkdir(parents=True)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config["quantization_config"] = {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 32,
        "sym": False,
        "desc_act": act_order,
        "checkpoint_format": "gptq",
    }
    (path / "config.json").write_text(json.dumps(config))
    add_causal_tokenizer(path)
    return path, model


@pytest.mark.parametrize(
    "act_order", [False, pytest.param(True, marks=pytest.mark.slow)]
)  # act order's repacking is tested on its own in tests/graphs/test_gptq.py
def test_a_gptq_checkpoint_exports_its_blocks_to_matmulnbits(
    tmp_path: Path, act_order: bool
) -> None:
    checkpoint, _ = _gptq_checkpoint(tmp_path / "gptq", act_order)
    result = export_model(checkpoint, tmp_path / "out")  # streamed: GPTQ exports no other way

    assert result.report.passed, result.report.table()
    # Against the dequantized model, only the int8 activations of accuracy level 4 differ.
    assert result.report.summary()["worst"]["onnxruntime"]["min_cosine"] > 0.999
    model = onnx.load(tmp_path / "out" / "model.onnx", load_external_data=False)
    kinds = [n.op_type for n in model.graph.node]
    assert kinds.count("MatMulNBits") == 14  # the lm_head stays float: it is not GPTQ
    assert kinds.count("Gather") == 1 + (14 if act_order else 0)
    assert result.manifest.passes[0]["gptq_linears"] == 14


def test_a_gptq_checkpoint_with_unsupported_bits_is_refused(tmp_path: Path) -> None:
    checkpoint, _ = _gptq_checkpoint(tmp_path / "gptq", act_order=False)
    config = json.loads((checkpoint / "config.json").read_text())
    config["quantization_config"]["bits"] = 3
    (checkpoint / "config.json").write_text(json.dumps(config))

    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "bits" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_disk_without_room_is_refused_before_writing(
    bf16_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("graphport.api.streaming.free_disk", lambda path: 1000)
    with pytest.raises(UsageError, match="on disk"):
        export_model(bf16_llama, tmp_path / "out", streaming=True)
    assert not list(tmp_path.iterdir())  # not even a staging directory is left


def test_a_checkpoint_too_large_even_streamed_says_how_much_it_needs(
    bf16_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("graphport.api.streaming.available_memory", lambda: 10_000_000)
    result = CliRunner().invoke(
        cli, ["export", str(bf16_llama), str(tmp_path / "out"), "--streaming"]
    )
    assert result.exit_code == 2
    assert "needs about" in result.output and "--no-validate" in result.output
    assert not (tmp_path / "out").exists()


def test_the_export_streams_by_itself_when_memory_is_short(
    bf16_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphport.api.plan import plan_export
    from graphport.api.streaming import BASE_MEMORY

    out = tmp_path / "out"
    assert not plan_export(bf16_llama, out).streaming
    # Room for the streamed export (0.4 MB of weights), not the in-memory one (4.6 MB).
    monkeypatch.setattr("graphport.api.streaming.available_memory", lambda: BASE_MEMORY + (1 << 20))
    assert plan_export(bf16_llama, out, quantize="int4-weight").streaming
    with pytest.raises(UsageError, match="int4-weight"):
        plan_export(bf16_llama, out, quantize="int8-dynamic")


def test_a_model_that_cannot_run_on_the_meta_device_says_so(
    tiny_checkpoint, tmp_path: Path
) -> None:
    from graphport.errors import ExportError

    # Tiny BERT's forward calls Tensor.item(), which a meta tensor cannot answer.
    bert = tiny_checkpoint("bert", "text-classification")
    with pytest.raises(ExportError, match=r"cannot run on the meta device.*without --streaming"):
        export_model(bert, tmp_path / "out", streaming=True)
    assert not list(tmp_path.iterdir())

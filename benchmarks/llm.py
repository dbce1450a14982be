"""LLM decoding and export: graphport side by side with its peers, in one run.

Random Llama checkpoints (seeded, written tensor by tensor with safetensors into a temp
dir and deleted after) at the issue's shapes:

- ``125m``: the model of benchmarks/generation.py (hidden 768, 12 layers, 12 heads,
  4 KV heads, intermediate 2048);
- ``1.1b``: TinyLlama-shaped (hidden 2048, 22 layers, 32 heads, 4 KV heads,
  intermediate 5632);
- ``7b``: Llama-2-7B-shaped (hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate
  11008), stored in bf16 (~13.5 GB) and used for the export section only.

All have vocab 32000. Decoding variants (``--only``), one after another, never two at once:

- ``eager``: transformers' ``generate()`` on the fp32 checkpoint (the reference);
- ``gp-ort-fp32`` / ``gp-ort-int4``: ``graphport export CKPT OUT`` and ``graphport export
  CKPT OUT --quantize int4-weight`` (default options, as a user types them), timed through
  ``graphport.load(OUT).generate()`` as benchmarks/generation.py does;
- ``gp-ov-fp32`` / ``gp-ov-int4``: ``graphport export CKPT OUT --format openvino``, then
  ``graphport quantize OUT OUT4 --mode openvino-int4-weight``, on the openvino runtime;
- ``ovgenai-fp32`` / ``ovgenai-int4``: ``openvino_genai.LLMPipeline(OUT, "CPU")`` on those
  two graphport OpenVINO exports;
- ``genai-fp32`` / ``genai-int4``: onnxruntime-genai's model builder (``python -m
  onnxruntime_genai.models.builder -i CKPT -o OUT -p fp32|int4 -e cpu``) and its
  generator (``og.Model`` / ``og.Generator``), in benchmarks/.genai-venv;
- ``llamacpp-f32`` / ``llamacpp-q4_0``: llama.cpp through llama-cpp-python, the GGUF
  written by the sdist's vendor/llama.cpp/convert_hf_to_gguf.py (f32) and quantized by
  ``llama_model_quantize`` (Q4_0: 4-bit weights with one fp16 scale per 32, the closest
  to MatMulNBits block 32), in benchmarks/.llamacpp-venv (llama.cpp compiled from source
  with nice -n 19 and one build job).

Each variant runs in a fresh process (the peers in their own virtual environments, created
on first use: torch==2.13.0, the CPU wheel, first, then benchmarks/requirements-*.txt),
which loads the model once and measures, per batch (``--batches``):

- decode tokens/s: ``B * (N - 1) / (t(N tokens) - t(1 token))``, the prompt excluded
  (medians over ``--rounds`` after one untimed warm-up);
- time to first token on the ``--prompt``-token prompt and (batch 1) on a ``--prefill``
  -token prompt;
- fraction of the bandwidth limit: a step reads every weight once (the input embedding
  one row), so steps/s cannot exceed bandwidth / weight bytes; bandwidth is measured in the
  same run (a 1 GiB copy, as generation.py does); int4 variants count 4.5 bits per weight
  (4-bit weights and one 16-bit scale per 32);
- peak RSS of that process (``ru_maxrss`` from ``os.wait4``; loading included);
- tokens identical to eager's greedy tokens, and teacher-forced next-token agreement:
  the batch-1 prompt plus eager's greedy tokens run once through the variant, and the
  argmax at each generated position compared with eager's.

Export section: wall time and peak RSS (process tree, sampled, as export_vs_peer.py
measures it) of every export command the run needed, graphport's
``export --quantize int4-weight`` against the builder's ``-p int4`` first.

A step that fails (a peer that does not build, a variant that does not load) is recorded
with its error text in the tables; the run goes on.

Usage (from the repository root):

    .venv/bin/python benchmarks/llm.py --output llm.md              # 125m and 1.1b
    .venv/bin/python benchmarks/llm.py --sizes 7b --output llm-7b.md  # 7B export section
    .venv/bin/python benchmarks/llm.py --quick                      # tiny smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "benchmarks"
PROJECT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
TORCH_PIN = "torch==2.13.0"
LLAMACPP_PIN = "llama-cpp-python==0.3.36"
VOCAB = 32000
# Nominal bytes per weight that a decoding step reads: int4 formats carry 4-bit weights
# and a 16-bit scale per 32 (Q4_0 exactly; MatMulNBits block 32 a little more).
BYTES_PER_WEIGHT = {"fp32": 4.0, "int4": 4.5 / 8}


@dataclass(frozen=True)
class Shape:
    """A Llama shape; ``dtype`` is the checkpoint's storage type."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int = VOCAB
    dtype: str = "float32"
    decode: bool = True  # False: the export section only

    def config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "intermediate_size": self.intermediate,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "torch_dtype": self.dtype,
        }

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every weight's name and shape, in the order transformers names them."""
        h, head_dim = self.hidden, self.hidden // self.heads
        kv = self.kv_heads * head_dim
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            out += [
                (p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (self.heads * head_dim, h)),
                (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)),
                (p + "self_attn.o_proj.weight", (h, self.heads * head_dim)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (self.intermediate, h)),
                (p + "mlp.up_proj.weight", (self.intermediate, h)),
                (p + "mlp.down_proj.weight", (h, self.intermediate)),
            ]
        return [*out, ("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]

    def step_weights(self) -> int:
        """Weights a decoding step reads: all but the input embedding (one row of it)."""
        total = sum(_numel(shape) for _, shape in self.tensors())
        return total - self.vocab * self.hidden


SIZES = {
    "125m": Shape(768, 12, 12, 4, 2048),
    "1.1b": Shape(2048, 22, 32, 4, 5632),
    "7b": Shape(4096, 32, 32, 8, 11008, dtype="bfloat16", decode=False),
}
# --quick: tiny shapes with the same structure (GQA, untied head), for a smoke run.
QUICK_SIZES = {
    "tiny": Shape(64, 2, 4, 2, 128),
    "tiny-7b": Shape(128, 2, 4, 2, 256, dtype="bfloat16", decode=False),
}


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str  # which worker runs it
    artifact: str | None  # the artifact it decodes (None: the checkpoint)
    precision: str  # fp32 or int4
    label: str


VARIANTS = {
    v.name: v
    for v in (
        Variant("eager", "eager", None, "fp32", "transformers eager generate() fp32"),
        Variant(
            "gp-ort-fp32", "graphport-onnxruntime", "gp-onnx", "fp32", "graphport onnxruntime fp32"
        ),
        Variant(
            "gp-ort-int4",
            "graphport-onnxruntime",
            "gp-onnx-int4",
            "int4",
            "graphport onnxruntime int4",
        ),
        Variant(
            "gp-ort-int4-o2",
            "graphport-onnxruntime",
            "gp-onnx-int4-o2",
            "int4",
            "graphport onnxruntime int4, -O 2 (GroupQueryAttention, shared KV buffer)",
        ),
        Variant("gp-ov-fp32", "graphport-openvino", "gp-ov", "fp32", "graphport OpenVINO fp32"),
        Variant(
            "gp-ov-int4", "graphport-openvino", "gp-ov-int4", "int4", "graphport OpenVINO int4"
        ),
        Variant(
            "ovgenai-fp32",
            "openvino-genai",
            "gp-ov",
            "fp32",
            "openvino-genai on graphport's IR, fp32",
        ),
        Variant(
            "ovgenai-int4",
            "openvino-genai",
            "gp-ov-int4",
            "int4",
            "openvino-genai on graphport's IR, int4",
        ),
        Variant(
            "genai-fp32",
            "onnxruntime-genai",
            "genai-fp32",
            "fp32",
            "onnxruntime-genai fp32 (builder + generator)",
        ),
        Variant(
            "genai-int4",
            "onnxruntime-genai",
            "genai-int4",
            "int4",
            "onnxruntime-genai int4 (builder + generator)",
        ),
        Variant(
            "llamacpp-f32", "llama-cpp", "gguf-f32", "fp32", "llama.cpp f32 (llama-cpp-python)"
        ),
        Variant(
            "llamacpp-q4_0", "llama-cpp", "gguf-q4_0", "int4", "llama.cpp Q4_0 (llama-cpp-python)"
        ),
    )
}

# Artifacts: how each is built from the checkpoint ({ckpt}, {out}, {src}: its source
# artifact's path); which environment runs the command; which artifact it starts from.
ARTIFACTS: dict[str, tuple[str, str | None, str]] = {
    "gp-onnx-int4": ("project", None, "-m graphport export {ckpt} {out} --quantize int4-weight"),
    "gp-onnx": ("project", None, "-m graphport export {ckpt} {out}"),
    # The fused form; built without validation (each -O2 pass is validated on its own, and
    # that takes most of the command's time on 1.1B): the decoding speed is the figure.
    "gp-onnx-int4-o2": (
        "project",
        None,
        "-m graphport export {ckpt} {out} -O 2 --quantize int4-weight --no-validate",
    ),
    "gp-ov": ("project", None, "-m graphport export {ckpt} {out} --format openvino"),
    "gp-ov-int4": (
        "project",
        "gp-ov",
        "-m graphport quantize {src} {out} --mode openvino-int4-weight",
    ),
    "genai-int4": (
        "genai",
        None,
        "-m onnxruntime_genai.models.builder -i {ckpt} -o {out} -p int4 -e cpu -c {cache}",
    ),
    "genai-fp32": (
        "genai",
        None,
        "-m onnxruntime_genai.models.builder -i {ckpt} -o {out} -p fp32 -e cpu -c {cache}",
    ),
    "gguf-f32": ("llamacpp", None, "{convert} {ckpt} --outtype f32 --outfile {out}"),
    "gguf-q4_0": ("llamacpp", "gguf-f32", "-c LLAMACPP_QUANTIZE {src} {out} Q4_0"),
}
# The export section's pair, compared on every size.
EXPORT_PAIR = ("gp-onnx-int4", "genai-int4")
LLAMACPP_QUANTIZE = (
    "import ctypes, sys, llama_cpp; p = llama_cpp.llama_model_quantize_default_params(); "
    "p.ftype = getattr(llama_cpp, 'LLAMA_FTYPE_MOSTLY_' + sys.argv[3]); "
    "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), "
    "ctypes.byref(p)))"
)


def artifact_path(work: Path, name: str) -> Path:
    """Where an artifact lives: a GGUF is one file, every other artifact a directory."""
    return work / (name + (".gguf" if name.startswith("gguf") else ""))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- checkpoint -------------------------------------------------------------------------


def write_checkpoint(path: Path, shape: Shape, seed: int, shard_bytes: int = 2 << 30) -> int:
    """Writes a random Llama checkpoint tensor by tensor (normal(0, 0.02) weights, unit
    norms), in shards of about ``shard_bytes``, so the writer holds one shard at a time
    (a 7B bf16 checkpoint never needs its 13.5 GB in memory). Returns its bytes."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, shape.dtype)
    generator = torch.Generator().manual_seed(seed)
    shard: dict[str, Any] = {}
    shards: list[list[str]] = []  # the names in each shard written
    size = total = 0

    def flush() -> None:
        save_file(shard, str(path / f"shard-{len(shards)}.safetensors"), {"format": "pt"})
        shards.append(list(shard))
        shard.clear()

    for name, dims in shape.tensors():
        if name.endswith("norm.weight"):
            tensor = torch.ones(dims, dtype=dtype)
        else:
            tensor = (torch.randn(dims, generator=generator) * 0.02).to(dtype)
        nbytes = tensor.numel() * tensor.element_size()
        if shard and size + nbytes > shard_bytes:
            flush()
            size = 0
        shard[name] = tensor
        size += nbytes
        total += nbytes
    flush()
    weight_map: dict[str, str] = {}
    for i, names in enumerate(shards):
        new = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (path / f"shard-{i}.safetensors").rename(path / new)
        weight_map.update(dict.fromkeys(names, new))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (path / "config.json").write_text(json.dumps(shape.config(), indent=2))
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False}
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2))
    write_tokenizer(path)
    return total


def write_tokenizer(path: Path, vocab_size: int = 512) -> None:
    """A small Llama-style tokenizer (the benchmark feeds token ids; the tools only need
    one to load): tokenizer.model (sentencepiece BPE, which llama.cpp's converter reads;
    it pads the vocabulary to the config's 32000) and tokenizer.json (the tokenizers
    library's BPE, which transformers and the genai builder load), both trained here on
    seeded synthetic words; unk 0, bos 1, eos 2."""
    import io
    import random

    import sentencepiece as spm
    from tokenizers import SentencePieceBPETokenizer
    from transformers import LlamaTokenizer

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 7))) for _ in range(400)]
    text = [" ".join(rng.choices(words, k=12)) for _ in range(2000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    bpe = SentencePieceBPETokenizer(unk_token="<unk>")
    bpe.train_from_iterator(text, vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"])
    LlamaTokenizer(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(path)
    (path / "tokenizer.model").write_bytes(model.getvalue())


# --- peer environments ------------------------------------------------------------------


@dataclass
class Environments:
    """Interpreters per environment name, or why one is unavailable."""

    python: dict[str, Path] = field(default_factory=dict)
    error: dict[str, str] = field(default_factory=dict)
    llamacpp_src: Path | None = None


def _pip(python: Path, *args: str, env: dict[str, str] | None = None) -> None:
    argv = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    result = subprocess.run(["nice", "-n", "19", *argv], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"`{shlex.join(argv)}` exited with {result.returncode}:\n{tail}")


def ensure_venv(name: str, skip_install: bool) -> Path:
    """benchmarks/.NAME-venv with torch (CPU) first, then benchmarks/requirements-NAME.txt;
    pip runs once (a marker file records the requirements it installed)."""
    venv = BENCH_DIR / f".{name}-venv"
    python = venv / "bin" / "python"
    requirements = BENCH_DIR / f"requirements-{name}.txt"
    marker = venv / ".installed"
    wanted = requirements.read_text()
    if marker.exists() and marker.read_text() == wanted:
        return python
    if skip_install:
        raise RuntimeError(f"{venv} is not set up; run once without --skip-peer-install")
    progress(f"setting up {venv.name} (torch first, then {requirements.name}; minutes)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _pip(python, TORCH_PIN)
    # llama-cpp-python compiles llama.cpp: at low priority and one job, on a shared machine.
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "1"}
    _pip(python, "-r", str(requirements), env=env)
    marker.write_text(wanted)
    return python


def llamacpp_sources(python: Path) -> Path:
    """vendor/llama.cpp of the llama-cpp-python sdist (its GGUF converter is not
    installed by the wheel), unpacked beside the venv once."""
    venv = python.parents[1]
    root = venv / "src" / "llama.cpp"
    if (root / "convert_hf_to_gguf.py").exists():
        return root
    download = venv / "src" / "sdist"
    argv = [str(python), "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary"]
    argv += [":all:", LLAMACPP_PIN, "-d", str(download)]
    subprocess.run(argv, check=True, capture_output=True)
    (sdist,) = download.glob("*.tar.gz")
    prefix = sdist.name.removesuffix(".tar.gz") + "/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        for m in members:
            m.name = m.name.removeprefix(prefix)
        tar.extractall(root, members=[m for m in members if m.name], filter="data")
    return root


def prepare_environments(needed: set[str], skip_install: bool) -> Environments:
    envs = Environments(python={"project": PROJECT_PYTHON})
    for name in ("genai", "llamacpp"):
        if name not in needed:
            continue
        try:
            envs.python[name] = ensure_venv(name, skip_install)
            if name == "llamacpp":
                envs.llamacpp_src = llamacpp_sources(envs.python[name])
        except (RuntimeError, subprocess.CalledProcessError, ValueError, OSError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            envs.error[name] = f"the {name} environment could not be set up: {detail}"
            progress(envs.error[name])
    return envs


# --- measuring one process ----------------------------------------------------------------


@dataclass
class Measured:
    wall_s: float
    rss_kib: int  # process tree, sampled, or ru_maxrss if larger
    returncode: int
    log_tail: str
    stdout: str = ""


def measure_process(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> Measured:
    """Runs a command to completion: wall time, peak RSS of its process tree (export_vs_peer
    's sampler, or the child's own ru_maxrss when larger), exit code, output tail."""
    from export_vs_peer import TreeRssSampler

    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        sampler = TreeRssSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop()
    text = log.read_text(errors="replace")
    lines = text.strip().splitlines()
    return Measured(
        wall_s=wall,
        rss_kib=max(sampler.peak_kib, usage.ru_maxrss),
        returncode=os.waitstatus_to_exitcode(status),
        log_tail="\n".join(lines[-20:]),
        stdout=text,
    )


# --- workers (one process per variant; they import only numpy and their own runtime) ---


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def prompts(seed: int, batch: int, length: int) -> Any:
    """The prompt ids every variant gets for (batch, length): seeded, above the specials."""
    import numpy as np

    rng = np.random.default_rng([seed, batch, length])
    return rng.integers(5, VOCAB, (batch, length), dtype=np.int64)


class Backend:
    """One variant's model: ``generate(ids, n)`` -> (B, n) greedy ids; ``argmax(seq)`` ->
    the argmax of each position's logits (teacher-forced), or None if it cannot tell."""

    batched = True
    unbatched = ""  # why not, where batched is False

    def generate(self, ids: Any, n: int) -> Any:
        raise NotImplementedError

    def argmax(self, seq: Any) -> Any:
        return None


class TransformersBackend(Backend):
    """transformers' generate(): eager torch, or graphport's runtime model (which is a
    transformers model, as ``graphport generate`` runs it)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def generate(self, ids: Any, n: int) -> Any:
        import torch

        prompt = torch.from_numpy(ids)
        with torch.no_grad():
            out = self.model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
        return out[:, ids.shape[1] :].numpy()

    def argmax(self, seq: Any) -> Any:
        import torch

        ids = torch.from_numpy(seq)
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        return logits[0].argmax(-1).numpy()


class GenaiBackend(Backend):
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime_genai as og

        # Threads: the builder's genai_config.json holds the session options.
        config_path = path / "genai_config.json"
        config = json.loads(config_path.read_text())
        options = config["model"]["decoder"].setdefault("session_options", {})
        options.update(intra_op_num_threads=threads, inter_op_num_threads=1)
        config_path.write_text(json.dumps(config, indent=4))
        self.og = og
        self.model = og.Model(str(path))

    def _generator(self, ids: Any, max_length: int) -> Any:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(
            max_length=max_length, min_length=max_length, do_sample=False, batch_size=ids.shape[0]
        )
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids.astype("int32"))
        return generator

    def generate(self, ids: Any, n: int) -> Any:
        import numpy as np

        generator = self._generator(ids, ids.shape[1] + n)
        while not generator.is_done():
            generator.generate_next_token()
        rows = [np.asarray(generator.get_sequence(i))[ids.shape[1] :] for i in range(len(ids))]
        return np.stack(rows).astype(np.int64)

    def argmax(self, seq: Any) -> Any:
        import numpy as np

        generator = self._generator(seq, seq.shape[1] + 1)
        logits = np.asarray(generator.get_output("logits"))
        return logits.reshape(-1, logits.shape[-1])[-seq.shape[1] :].argmax(-1)


class LlamaCppBackend(Backend):
    # llama-cpp-python's Llama runs one sequence per context; batches would need its
    # low-level llama_batch API with several sequence ids.
    batched = False
    unbatched = "llama-cpp-python's Llama decodes one sequence per context"

    def __init__(self, path: Path, threads: int, context: int) -> None:
        from llama_cpp import Llama

        self.path, self.threads, self.context = path, threads, context
        self.llm = Llama(**self._options(logits_all=False))

    def _options(self, logits_all: bool) -> dict[str, Any]:
        return {
            "model_path": str(self.path),
            "n_ctx": self.context,
            "n_batch": 512,
            "n_threads": self.threads,
            "n_threads_batch": self.threads,
            "logits_all": logits_all,
            "seed": 0,
            "verbose": False,
        }

    def generate(self, ids: Any, n: int) -> Any:
        import numpy as np

        if ids.shape[0] != 1:
            raise ValueError(self.unbatched)
        self.llm.reset()  # no prefix reuse between rounds: every prompt is evaluated anew
        out: list[int] = []
        for token in self.llm.generate(ids[0].tolist(), top_k=1, temp=0.0, reset=True):
            out.append(token)
            if len(out) == n:
                break
        return np.asarray([out], dtype=np.int64)

    def argmax(self, seq: Any) -> Any:
        from llama_cpp import Llama

        llm = Llama(**self._options(logits_all=True))
        llm.eval(seq[0].tolist())
        return llm.scores[: seq.shape[1]].argmax(-1)


class OpenvinoGenaiBackend(Backend):
    def __init__(self, path: Path, threads: int) -> None:
        import openvino_genai

        self.ovg = openvino_genai
        # f32, as graphport's openvino-genai engine asks (OpenVINO's bf16 default on CPUs
        # with bf16 units changes an fp32 decoder's tokens).
        self.pipe = openvino_genai.LLMPipeline(
            str(path), "CPU", INFERENCE_NUM_THREADS=threads, INFERENCE_PRECISION_HINT="f32"
        )

    def generate(self, ids: Any, n: int) -> Any:
        import numpy as np
        import openvino as ov

        config = self.ovg.GenerationConfig()
        config.max_new_tokens, config.min_new_tokens, config.do_sample = n, n, False
        config.ignore_eos = True
        result = self.pipe.generate(ov.Tensor(ids), config)
        return np.asarray([list(t)[-n:] for t in result.tokens], dtype=np.int64)


def make_backend(spec: dict[str, Any]) -> Backend:
    backend, path, threads = spec["backend"], spec.get("path"), spec["threads"]
    if backend == "eager":
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32)
        return TransformersBackend(model.eval())
    if backend.startswith("graphport-"):
        import torch

        import graphport

        torch.set_num_threads(threads)
        runtime = backend.removeprefix("graphport-")
        return TransformersBackend(graphport.load(path, runtime=runtime, threads=threads))
    if backend == "onnxruntime-genai":
        return GenaiBackend(Path(path), threads)
    if backend == "llama-cpp":
        context = max(spec["prompt"] + spec["new_tokens"], spec["prefill"] + 1) + 8
        return LlamaCppBackend(Path(path), threads, context)
    if backend == "openvino-genai":
        return OpenvinoGenaiBackend(Path(path), threads)
    raise ValueError(f"unknown backend {backend!r}")


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Loads the variant once, then times it batch by batch; returns the figures."""
    start = time.perf_counter()
    backend = make_backend(spec)
    result: dict[str, Any] = {"load_s": time.perf_counter() - start, "batches": {}}
    n, rounds = spec["new_tokens"], spec["rounds"]
    for batch in spec["batches"]:
        if batch > 1 and not backend.batched:
            result["batches"][str(batch)] = {"error": backend.unbatched}
            continue
        ids = prompts(spec["seed"], batch, spec["prompt"])
        tokens = backend.generate(ids, n)  # warm-up, and the tokens compared with eager's
        full, first = [], []
        for _ in range(rounds):
            full.append(_timed(backend.generate, ids, n)[0])
            first.append(_timed(backend.generate, ids, 1)[0])
        row: dict[str, Any] = {
            "tokens": tokens.tolist(),
            "full_s": statistics.median(full),
            "ttft_s": statistics.median(first),
        }
        if batch == 1 and spec["prefill"]:
            long_ids = prompts(spec["seed"], 1, spec["prefill"])
            row["prefill_ttft_s"] = statistics.median(
                _timed(backend.generate, long_ids, 1)[0] for _ in range(rounds)
            )
        result["batches"][str(batch)] = row
        print(f"  batch {batch} done", file=sys.stderr, flush=True)
    teacher = spec.get("teacher")
    if teacher == "self" and "1" in result["batches"] and "tokens" in result["batches"]["1"]:
        # The reference: its own batch-1 prompt and greedy tokens.
        teacher = [
            prompts(spec["seed"], 1, spec["prompt"])[0].tolist()
            + result["batches"]["1"]["tokens"][0]
        ]
    if isinstance(teacher, list):
        import numpy as np

        argmax = backend.argmax(np.asarray(teacher, dtype=np.int64))
        result["teacher_argmax"] = None if argmax is None else np.asarray(argmax).tolist()
    result["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result


def worker_main(spec_path: Path, out_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    out_path.write_text(json.dumps(run_worker(spec)))
    return 0


# --- the run ------------------------------------------------------------------------------


@dataclass
class Row:
    """One variant at one size: its process's figures, or why there are none."""

    size: str
    variant: Variant
    error: str | None = None
    rss_kib: int = 0
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class Built:
    size: str
    artifact: str
    argv: list[str]
    measured: Measured | None = None
    error: str | None = None


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def build_artifact(
    name: str,
    size: str,
    ckpt: Path,
    work: Path,
    envs: Environments,
    built: dict[tuple[str, str], Built],
) -> Built:
    """Runs the artifact's command (its source artifact first); records wall time, RSS."""
    env_name, source, template = ARTIFACTS[name]
    if (size, name) in built:
        return built[(size, name)]
    src = None
    if source is not None:
        parent = build_artifact(source, size, ckpt, work, envs, built)
        if parent.error:
            record = Built(size, name, [], error=f"needs {source}, which failed")
            built[(size, name)] = record
            return record
        src = artifact_path(work, source)
    out = artifact_path(work, name)
    python = envs.python.get(env_name)
    convert = str(envs.llamacpp_src / "convert_hf_to_gguf.py") if envs.llamacpp_src else ""
    argv_text = template.format(
        ckpt=ckpt, out=out, src=src, cache=work / f"{name}-cache", convert=convert
    )
    argv = [str(python), *shlex.split(argv_text)]
    if name == "gguf-q4_0":  # the quantize snippet, then its arguments
        argv = [str(python), "-c", LLAMACPP_QUANTIZE, str(src), str(out), "Q4_0"]
    record = Built(size, name, argv)
    built[(size, name)] = record
    if python is None:
        record.error = envs.error.get(env_name, f"no {env_name} environment")
        return record
    progress(f"{size}: building {name}: {shlex.join(_short(argv, work))}")
    cwd = REPO_ROOT if env_name == "project" else BENCH_DIR
    record.measured = measure_process(argv, cwd, _clean_env(), work / f"{name}.log")
    m = record.measured
    progress(f"    {m.wall_s:.1f} s, {m.rss_kib / 1024:.0f} MiB, exit {m.returncode}")
    if m.returncode != 0:
        record.error = f"exit code {m.returncode}: {_last_line(m.log_tail)}"
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / f"{name}-cache", ignore_errors=True)
    return record


def _short(argv: list[str], work: Path) -> list[str]:
    """argv for the report: the temp dir and the repository root left out."""
    return [
        a.replace(str(work) + "/", "").replace(str(REPO_ROOT) + "/", "").replace(str(work), ".")
        for a in argv
    ]


def _last_line(text: str) -> str:
    """The last line of a log, for a table cell: the run's temp dir left out."""
    text = re.sub(r"\S*graphport-llm-[^/\s]+/[^/\s]+/", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else (text or "no output")
    return (last[:200] + "..." if len(last) > 200 else last).replace("|", "\\|")


def run_variant(
    variant: Variant,
    size: str,
    shape: Shape,
    ckpt: Path,
    work: Path,
    envs: Environments,
    built: dict[tuple[str, str], Built],
    args: argparse.Namespace,
    teacher: list[list[int]] | str | None,
) -> Row:
    row = Row(size, variant)
    path = None
    if variant.artifact is not None:
        record = build_artifact(variant.artifact, size, ckpt, work, envs, built)
        if record.error:
            row.error = f"{variant.artifact} not built: {record.error}"
            return row
        path = artifact_path(work, variant.artifact)
    env_name = {"onnxruntime-genai": "genai", "llama-cpp": "llamacpp"}.get(
        variant.backend, "project"
    )
    python = envs.python.get(env_name)
    if python is None:
        row.error = envs.error.get(env_name, f"no {env_name} environment")
        return row
    spec = {
        "backend": variant.backend,
        "checkpoint": str(ckpt),
        "path": str(path) if path else None,
        "threads": args.threads,
        "batches": args.batches,
        "prompt": args.prompt,
        "prefill": args.prefill,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "seed": args.seed,
        "teacher": teacher,
    }
    spec_path, out_path = work / f"{variant.name}.spec.json", work / f"{variant.name}.out.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    argv = [str(python), str(Path(__file__).resolve()), "--worker", str(spec_path), str(out_path)]
    progress(f"{size}: decoding with {variant.name}")
    env = {**_clean_env(), "OMP_NUM_THREADS": str(args.threads)}
    measured = measure_process(argv, BENCH_DIR, env, work / f"{variant.name}.log")
    row.rss_kib = measured.rss_kib
    if measured.returncode != 0 or not out_path.exists():
        row.error = f"exit code {measured.returncode}: {_last_line(measured.log_tail)}"
        progress(f"    failed: {row.error}")
        return row
    row.result = json.loads(out_path.read_text())
    progress(f"    done in {measured.wall_s:.1f} s, {measured.rss_kib / 1024:.0f} MiB")
    return row


def artifacts_needed(variants: list[Variant]) -> list[str]:
    needed: list[str] = []
    for v in variants:
        name = v.artifact
        chain = []
        while name is not None:
            chain.append(name)
            name = ARTIFACTS[name][1]
        needed += [a for a in reversed(chain) if a not in needed]
    return needed


def release(
    name: str, work: Path, remaining: list[Variant], built: dict[tuple[str, str], Built]
) -> None:
    """Deletes an artifact once no remaining variant (nor artifact built from it) needs it."""
    still = artifacts_needed(remaining)
    if name not in still:
        path = artifact_path(work, name)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run_size(
    size: str, shape: Shape, args: argparse.Namespace, envs: Environments, tmp: Path
) -> tuple[list[Row], list[Built], int]:
    work = tmp / size
    ckpt = work / "checkpoint"
    progress(f"{size}: writing the random {shape.dtype} checkpoint")
    nbytes = int(run_helper("checkpoint", str(ckpt), json.dumps(asdict(shape)), str(args.seed)))
    progress(f"    {nbytes / 1e9:.2f} GB")
    built: dict[tuple[str, str], Built] = {}
    rows: list[Row] = []
    if shape.decode:
        # In the table's order: eager first (the others are compared with it).
        variants = [v for name, v in VARIANTS.items() if name in args.only]
        teacher: list[list[int]] | None = None  # eager's sequence, once eager has run
        for i, variant in enumerate(variants):
            reference = "self" if variant.name == "eager" else teacher
            row = run_variant(variant, size, shape, ckpt, work, envs, built, args, reference)
            rows.append(row)
            if variant.name == "eager":
                b1 = row.result.get("batches", {}).get("1", {})
                prompt = prompts(args.seed, 1, args.prompt)[0].tolist()
                teacher = [prompt + b1["tokens"][0]] if "tokens" in b1 else None
            for name in list(dict.fromkeys(a for _, a in built)):
                release(name, work, variants[i + 1 :], built)
    for name in EXPORT_PAIR:  # the export section: both tools on every size
        if (size, name) not in built:
            build_artifact(name, size, ckpt, work, envs, built)
        release(name, work, [], built)
    shutil.rmtree(work, ignore_errors=True)
    return rows, list(built.values()), nbytes


# --- tables -------------------------------------------------------------------------------


def _agreement(a: list[Any], b: list[Any]) -> float:
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    return float((x == y).mean()) if x.shape == y.shape else 0.0


def decode_table(
    rows: list[Row], shapes: dict[str, Shape], bandwidth: float, args: argparse.Namespace
) -> list[str]:
    n = args.new_tokens
    lines = [
        "| size | variant | batch | decode tokens/s | x eager | fraction of bandwidth limit "
        f"| TTFT {args.prompt} tokens (ms) | TTFT {args.prefill} tokens, B1 (ms) "
        "| peak RSS (MiB) | greedy tokens = eager | teacher-forced agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    eager = {r.size: r for r in rows if r.variant.name == "eager" and not r.error}
    for r in rows:
        if r.error:
            error = r.error.replace("\n", " ")
            lines.append(f"| {r.size} | {r.variant.label} | - | failed: {error} |||||||")
            continue
        shape = shapes[r.size]
        step_bytes = shape.step_weights() * BYTES_PER_WEIGHT[r.variant.precision]
        ref = eager.get(r.size)
        tf = "-"
        if ref and r.result.get("teacher_argmax") is not None and "teacher_argmax" in ref.result:
            # The positions that predict the generated tokens: prompt - 1 ... end - 1.
            start = args.prompt - 1
            mine = r.result["teacher_argmax"][start : start + n]
            theirs = ref.result["teacher_argmax"][start : start + n]
            tf = f"{_agreement(mine, theirs):.3f}"
        for batch, b in r.result["batches"].items():
            if "error" in b:
                lines.append(f"| {r.size} | {r.variant.label} | {batch} | {b['error']} |||||||")
                continue
            decode_s = max(b["full_s"] - b["ttft_s"], 1e-9)
            steps = (n - 1) / decode_s
            tps = int(batch) * steps
            fraction = steps / (bandwidth / step_bytes)
            x_eager = "-"
            if ref and batch in ref.result["batches"] and "full_s" in ref.result["batches"][batch]:
                e = ref.result["batches"][batch]
                x_eager = (
                    f"{tps / (int(batch) * (n - 1) / max(e['full_s'] - e['ttft_s'], 1e-9)):.2f}"
                )
            same = "-"
            if ref and batch in ref.result["batches"] and "tokens" in ref.result["batches"][batch]:
                theirs = ref.result["batches"][batch]["tokens"]
                agree = _agreement(b["tokens"], theirs)
                same = "yes" if agree == 1.0 else f"no ({agree:.3f})"
            prefill = f"{b['prefill_ttft_s'] * 1e3:.0f}" if "prefill_ttft_s" in b else "-"
            lines.append(
                f"| {r.size} | {r.variant.label} | {batch} | {tps:.1f} | {x_eager} "
                f"| {fraction:.3f} | {b['ttft_s'] * 1e3:.0f} | {prefill} | {r.rss_kib / 1024:.0f} "
                f"| {same} | {tf if batch == '1' else '-'} |"
            )
    return lines


def export_table(built: list[Built]) -> list[str]:
    lines = [
        "| size | artifact | command | wall (s) | peak RSS, process tree (MiB) | status |",
        "|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate([*EXPORT_PAIR, *ARTIFACTS])}
    for b in sorted(built, key=lambda b: (b.size, order[b.artifact])):
        cmd = " ".join(shlex.quote(a) for a in _argv_for_report(b.argv))
        if b.measured is None:
            lines.append(f"| {b.size} | {b.artifact} | `{cmd}` | - | - | {b.error} |")
            continue
        status = "ok" if not b.error else b.error.replace("\n", " ")
        lines.append(
            f"| {b.size} | {b.artifact} | `{cmd}` | {b.measured.wall_s:.1f} "
            f"| {b.measured.rss_kib / 1024:.0f} | {status} |"
        )
    return lines


def _argv_for_report(argv: list[str]) -> list[str]:
    """The command as typed: interpreter and temp paths shortened, no inline snippet."""
    out = []
    for a in argv:
        if a == LLAMACPP_QUANTIZE:
            out.append("<llama_model_quantize>")
            continue
        a = a.replace(str(REPO_ROOT) + "/", "")
        if "/graphport-llm-" in a:  # the temp dir: keep the last component
            a = Path(a).name
        out.append(a)
    return out


def render(
    args: argparse.Namespace,
    rows: list[Row],
    built: list[Built],
    shapes: dict[str, Shape],
    sizes_bytes: dict[str, int],
    bandwidth: float,
    envs: Environments,
    total_s: float,
) -> str:
    from export_vs_peer import machine_info

    machine = machine_info()
    lines = [
        "### LLM decoding and export, graphport and its peers (benchmarks/llm.py)",
        "",
        f"Command: `{shlex.join(['benchmarks/llm.py', *args.argv])}`; took {total_s / 60:.1f} min.",
        "",
        f"Machine: {machine['CPU']}, {machine['nproc']} cores available, {machine['memory']}; "
        f"{args.threads} threads per variant; memory bandwidth (1 GiB copy, this run): "
        f"{bandwidth / 1e9:.1f} GB/s.",
        "",
    ]
    for size, shape in shapes.items():
        step = shape.step_weights()
        lines.append(
            f"- {size}: hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads, "
            f"{shape.kv_heads} KV heads, intermediate {shape.intermediate}, vocab {shape.vocab}; "
            f"{shape.dtype} checkpoint {sizes_bytes.get(size, 0) / 1e9:.2f} GB"
            + (
                f"; bandwidth limit {bandwidth / (step * 4):.1f} steps/s fp32, "
                f"{bandwidth / (step * BYTES_PER_WEIGHT['int4']):.1f} int4"
                if shape.decode
                else " (export only)"
            )
        )
    if any(shapes[s].decode for s in shapes):
        lines += [
            "",
            f"Decoding: {args.prompt}-token random prompts, {args.new_tokens} greedy tokens, "
            f"median of {args.rounds} round(s) after a warm-up. Decode tokens/s = batch x "
            f"({args.new_tokens} - 1) / (t({args.new_tokens} tokens) - t(1 token)); TTFT = "
            "t(1 token); fraction of the bandwidth limit = steps/s over bandwidth / weight bytes "
            "per step (int4: 4.5 bits per weight). Peak RSS: the variant's process (load "
            "included). Teacher-forced agreement: batch 1, the argmax at each generated "
            "position of the prompt + eager's tokens, against eager's.",
            "",
            *decode_table(rows, shapes, bandwidth, args),
        ]
    lines += [
        "",
        "Export commands (the pair compared first; {ckpt} is the checkpoint, peak RSS is the "
        "command's process tree):",
        "",
        *export_table(built),
    ]
    pair = {(b.size, b.artifact): b for b in built}
    ratios = []
    for size in shapes:
        gp, peer = pair.get((size, EXPORT_PAIR[0])), pair.get((size, EXPORT_PAIR[1]))
        if gp and peer and gp.measured and peer.measured and not gp.error and not peer.error:
            ratios.append(
                f"| {size} | {gp.measured.wall_s / peer.measured.wall_s:.2f} "
                f"| {gp.measured.rss_kib / peer.measured.rss_kib:.2f} |"
            )
    if ratios:
        lines += [
            "",
            "| size | int4 export wall, graphport / onnxruntime-genai builder | peak RSS, "
            "graphport / builder |",
            "|---|---|---|",
            *ratios,
        ]
    if envs.error:
        lines += ["", *(f"- {name}: {error}" for name, error in envs.error.items())]
    return "\n".join(lines) + "\n"


# --- command line -------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1,4")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="125m,1.1b", help="Comma-separated: 125m, 1.1b, 7b (7b: export only)."
    )
    parser.add_argument(
        "--batches", type=_ints, default=[1, 4], help="Comma-separated batch sizes."
    )
    parser.add_argument("--prompt", type=int, default=32, help="Prompt tokens.")
    parser.add_argument(
        "--prefill", type=int, default=512, help="Prompt tokens of the TTFT-only run (0: skip)."
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="Timed rounds per measurement.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        default=",".join(VARIANTS),
        help="Comma-separated variants: " + ", ".join(VARIANTS) + ".",
    )
    parser.add_argument("--output", type=Path, help="Also write the markdown here.")
    parser.add_argument("--quick", action="store_true", help="Tiny shapes (smoke run).")
    parser.add_argument(
        "--skip-peer-install", action="store_true", help="Use the peer venvs as they are."
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    table = QUICK_SIZES if args.quick else SIZES
    if args.quick and args.sizes == parser.get_default("sizes"):
        args.sizes = ",".join(QUICK_SIZES)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in args.sizes if s not in table]
    if unknown or not args.sizes:
        parser.error(f"--sizes takes {', '.join(table)}; got {', '.join(unknown) or 'none'}")
    args.only = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown = [v for v in args.only if v not in VARIANTS]
    if unknown or not args.only:
        parser.error(f"--only takes {', '.join(VARIANTS)}; got {', '.join(unknown) or 'none'}")
    if args.new_tokens < 2 or args.prompt < 1 or args.rounds < 1 or args.threads < 1:
        parser.error("--new-tokens must be >= 2, --prompt, --rounds and --threads >= 1")
    if args.prefill < 0 or args.prefill + 1 > 2048:
        parser.error("--prefill must be between 0 and 2047 (the models' positions)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    table = QUICK_SIZES if args.quick else SIZES
    shapes = {s: table[s] for s in args.sizes}
    start = time.perf_counter()
    progress("measuring the memory bandwidth")
    bandwidth = float(run_helper("bandwidth"))
    progress(f"    {bandwidth / 1e9:.1f} GB/s")
    needed = {"genai"}  # the export section always runs the builder
    if any(s.decode for s in shapes.values()):
        needed |= {
            {"onnxruntime-genai": "genai", "llama-cpp": "llamacpp"}.get(VARIANTS[v].backend, "")
            for v in args.only
        }
    envs = prepare_environments(needed, args.skip_peer_install)
    rows: list[Row] = []
    built: list[Built] = []
    sizes_bytes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="graphport-llm-") as tmp:
        for size, shape in shapes.items():
            size_rows, size_built, nbytes = run_size(size, shape, args, envs, Path(tmp))
            rows += size_rows
            built += size_built
            sizes_bytes[size] = nbytes
    text = render(
        args, rows, built, shapes, sizes_bytes, bandwidth, envs, time.perf_counter() - start
    )
    print(text)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    return 0


def helper_main(name: str, argv: list[str]) -> int:
    """The run's heavy steps besides the variants, each in its own process: the
    orchestrating process stays small, since a child's ru_maxrss starts from its
    parent's high-water mark (fork copies it, exec keeps it)."""
    if name == "bandwidth":
        from generation import memory_bandwidth

        print(memory_bandwidth())
    elif name == "checkpoint":
        path, shape, seed = Path(argv[0]), Shape(**json.loads(argv[1])), int(argv[2])
        print(write_checkpoint(path, shape, seed))
    else:
        raise ValueError(f"unknown helper {name!r}")
    return 0


def run_helper(name: str, *argv: str) -> str:
    """Runs ``helper_main(name, argv)`` in the project environment; its last stdout line."""
    command = [str(PROJECT_PYTHON), str(Path(__file__).resolve()), "--helper", name, *argv]
    result = subprocess.run(
        command, cwd=BENCH_DIR, env=_clean_env(), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"helper {name} failed:\n{result.stderr.strip()[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        with contextlib.suppress(BrokenPipeError):
            sys.exit(worker_main(Path(sys.argv[2]), Path(sys.argv[3])))
    if len(sys.argv) >= 3 and sys.argv[1] == "--helper":
        sys.exit(helper_main(sys.argv[2], sys.argv[3:]))
    sys.exit(main())

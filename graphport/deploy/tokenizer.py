"""The export's tokenizer as a graph, so that a deployment takes raw text.

Two converters, one per runtime that runs the graph:

- openvino-tokenizers writes OpenVINO IR (``openvino_tokenizer.xml`` + ``.bin``); its
  operators live in the extension library the package ships (``libopenvino_tokenizers.so``),
  which the C++ program loads with ``ov::Core::add_extension``.
- onnxruntime-extensions builds an ONNX graph (``tokenizer.onnx``) of its custom operators,
  which onnxruntime runs once the library the package ships is registered.

Rules, referred to by number below:

1. The Python tokenizer is the reference: a text is encoded as ``tokenizer(text,
   truncation=True, max_length=L)``, special tokens included, with ``L`` the smaller of
   the tokenizer's ``model_max_length`` and the config's ``max_position_embeddings``
   (tokenizers saved without a maximum report ~1e30).
2. A converted graph is kept only when it encodes every text of ``probe_texts`` exactly as
   the reference does (input ids, attention mask, token types); otherwise the conversion
   returns the reason in one sentence and the deployment takes ids only.
3. onnxruntime-extensions' BertTokenizer converter reads ``strip_accents`` from the
   tokenizer's init arguments, where BERT's default (None: strip accents when lowercasing)
   reads as off ("Ünïcödé" became [UNK]); it is taken from the fast tokenizer's normalizer.
4. The ONNX graph encodes one text into 1-D tensors; Unsqueeze nodes give its outputs the
   ``[1, sequence]`` shape of the model's inputs, and ``offset_mapping`` is dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from graphport.manifest import ExportDirectory

logger = logging.getLogger(__name__)

OPENVINO_FILE = "openvino_tokenizer.xml"
ONNX_FILE = "tokenizer.onnx"
ENCODING_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Unicode the converters must get right: accents, CJK, emoji (with a skin-tone modifier),
# punctuation, tabs and no-break spaces.
UNICODE_TEXTS = (
    "Hello world",
    "Ünïcödé 東京 🙂 and a normal sentence",
    "naïve café, ça va? 日本語 😀👍🏽 (ok)!",
    "tabs\tand\u00a0odd  spaces",
)


@dataclasses.dataclass(frozen=True)
class TokenizerGraph:
    """A converted tokenizer: the files written, the custom-op library it needs."""

    files: list[str]  # names in the directory it was written to
    library: Path  # the converter package's shared library
    outputs: list[str]  # of ENCODING_NAMES, in the graph's order
    max_length: int


@dataclasses.dataclass(frozen=True)
class Conversion:
    """The graph, or the reason (one sentence) there is none."""

    graph: TokenizerGraph | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.graph is not None


def reference(export: ExportDirectory) -> tuple[Any, int] | None:
    """The export's Python tokenizer and its truncation length (rule 1), or None."""
    if not export.has_tokenizer():
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export.path, local_files_only=True)
    limit = int(min(tokenizer.model_max_length, 1 << 31))
    config_file = export.path / "config.json"
    if config_file.is_file():
        positions = json.loads(config_file.read_text(encoding="utf-8")).get(
            "max_position_embeddings"
        )
        if isinstance(positions, int) and positions > 0:
            limit = min(limit, positions)
    return tokenizer, limit


def probe_texts(tokenizer: Any, max_length: int) -> list[str]:
    """Texts a converted graph must encode as the tokenizer does (rule 2): unicode, words
    of the vocabulary, and a text past the truncation length."""
    special = set(tokenizer.all_special_tokens)
    words = [w for w, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    words = [w for w in words if w not in special and w.isalpha()][:24]
    vocabulary = " ".join(words) or "hello world"
    return [*UNICODE_TEXTS, vocabulary, " ".join([vocabulary] * (max_length + 8))]


def encode(tokenizer: Any, text: str, max_length: int) -> dict[str, list[int]]:
    """The reference encoding of ``text`` (rule 1)."""
    encoded = tokenizer(text, truncation=True, max_length=max_length)
    return {name: list(encoded[name]) for name in ENCODING_NAMES if name in encoded}


def _mismatch(tokenizer: Any, max_length: int, run: Any, converter: str) -> tuple[list[str], str]:
    """The graph's outputs and, when it encodes a probe unlike the tokenizer, why (rule 2)."""
    outputs: list[str] = []
    for text in probe_texts(tokenizer, max_length):
        expected, got = encode(tokenizer, text, max_length), run(text)
        outputs = [name for name in ENCODING_NAMES if name in got]
        for name, ids in expected.items():
            if name == "token_type_ids" and name not in got and not any(ids):
                continue  # fed zeros when the graph has none
            if got.get(name) != ids:
                shown = text if len(text) < 60 else text[:57] + "..."
                return outputs, (
                    f"{converter} encodes {shown!r} as {name} {_head(got.get(name))}, not "
                    f"{_head(ids)} as the Python tokenizer does"
                )
    return outputs, ""


def _head(ids: list[int] | None) -> str:
    if ids is None:
        return "(missing)"
    return f"{ids[:12]}{'...' if len(ids) > 12 else ''} ({len(ids)} tokens)"


def convert_openvino(export: ExportDirectory, directory: Path) -> Conversion:
    """Write the tokenizer as OpenVINO IR into ``directory``, checked against the Python
    tokenizer (rule 2)."""
    found = reference(export)
    if found is None:
        return Conversion(reason="the export has no tokenizer")
    tokenizer, max_length = found
    try:
        import openvino as ov
        import openvino_tokenizers
    except ImportError as e:
        return Conversion(reason=f"openvino-tokenizers is not installed ({e})")
    try:
        model = openvino_tokenizers.convert_tokenizer(
            tokenizer, truncation=True, max_length=max_length
        )
        compiled = ov.Core().compile_model(model, "CPU")
    except Exception as e:  # it raises OVTypeError, RuntimeError, ValueError, ...
        return Conversion(reason=f"openvino-tokenizers cannot convert it ({_sentence(e)})")

    def run(text: str) -> dict[str, list[int]]:
        result = compiled([text])
        return {o.get_any_name(): result[o][0].tolist() for o in compiled.outputs}

    outputs, reason = _mismatch(tokenizer, max_length, run, "openvino-tokenizers' graph")
    if reason:
        return Conversion(reason=reason)
    ov.save_model(model, directory / OPENVINO_FILE, compress_to_fp16=False)
    library = Path(openvino_tokenizers._ext_path)  # the package's own record of its library
    files = [OPENVINO_FILE, str(Path(OPENVINO_FILE).with_suffix(".bin"))]
    return Conversion(TokenizerGraph(files, library, outputs, max_length))


def convert_onnxruntime(export: ExportDirectory, directory: Path) -> Conversion:
    """Write the tokenizer as an onnxruntime-extensions ONNX graph into ``directory``,
    checked against the Python tokenizer (rule 2)."""
    found = reference(export)
    if found is None:
        return Conversion(reason="the export has no tokenizer")
    tokenizer, max_length = found
    try:
        import onnxruntime as ort
        from onnxruntime_extensions import gen_processing_models, get_library_path
    except ImportError as e:
        return Conversion(reason=f"onnxruntime-extensions is not installed ({e})")
    options: dict[str, Any] = {"max_length": max_length}
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    if type(normalizer).__name__ == "BertNormalizer":  # rule 3
        state = json.loads(normalizer.__getstate__())
        strip = state.get("strip_accents")
        options["strip_accents"] = int(state.get("lowercase", False) if strip is None else strip)
    try:
        graph, _ = gen_processing_models(tokenizer, pre_kwargs=options)
        graph = _batch_of_one(graph)
        session_options = ort.SessionOptions()
        session_options.register_custom_ops_library(get_library_path())
        session = ort.InferenceSession(graph.SerializeToString(), session_options)
    except Exception as e:  # ValueError for unsupported classes, onnxruntime's errors
        return Conversion(reason=f"onnxruntime-extensions cannot convert it ({_sentence(e)})")
    names = [o.name for o in session.get_outputs()]

    def run(text: str) -> dict[str, list[int]]:
        values = session.run(None, {"text": np.array([text], dtype=object)})
        return {n: v[0].tolist() for n, v in zip(names, values, strict=True)}

    outputs, reason = _mismatch(tokenizer, max_length, run, "onnxruntime-extensions' graph")
    if reason:
        return Conversion(reason=reason)
    (directory / ONNX_FILE).write_bytes(graph.SerializeToString())
    return Conversion(TokenizerGraph([ONNX_FILE], Path(get_library_path()), outputs, max_length))


def _batch_of_one(model: Any) -> Any:
    """Outputs of shape [1, sequence], as the model's inputs (rule 4)."""
    import onnx
    from onnx import helper

    graph = model.graph
    kept = [o for o in graph.output if o.name in ENCODING_NAMES]
    renamed = {o.name: f"{o.name}_1d" for o in kept}
    for node in graph.node:
        node.output[:] = [renamed.get(name, name) for name in node.output]
    graph.initializer.append(
        onnx.numpy_helper.from_array(np.array([0], dtype=np.int64), "graphport_axis_0")
    )
    for name, flat in renamed.items():
        graph.node.append(helper.make_node("Unsqueeze", [flat, "graphport_axis_0"], [name]))
    del graph.output[:]
    graph.output.extend(
        helper.make_tensor_value_info(n, onnx.TensorProto.INT64, [1, "sequence"]) for n in renamed
    )
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 13)  # Unsqueeze takes its axes as an input
    return model


def _sentence(error: Exception) -> str:
    """The first line of an error, without a trailing period."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__).rstrip(".")[:300]


__all__ = [
    "ONNX_FILE",
    "OPENVINO_FILE",
    "Conversion",
    "TokenizerGraph",
    "convert_onnxruntime",
    "convert_openvino",
    "encode",
    "probe_texts",
    "reference",
]

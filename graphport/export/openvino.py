"""OpenVINO IR (.xml + .bin), converted from the exported ONNX graph by OpenVINO itself.

A decoder-only language model (inputs ``input_ids`` with optional ``attention_mask`` and
``position_ids`` and its ``past_key_values.*``; outputs ``logits`` and ``present.*``) is
saved in the layout openvino-genai reads, so ``openvino_genai.LLMPipeline(OUT, "CPU")``
runs the export directly:

1. Its KV cache becomes state inside the model: a ``beam_idx`` input [batch] (int32)
   gathers the past along the batch axis (the reorder beam search needs), then OpenVINO's
   own MakeStateful transformation turns each past input / present output pair into a
   ReadValue / Assign variable (named past name + present name), whose initial value is
   an empty cache [batch, heads, 0, dim] for the batch of ``input_ids``.
2. The graph is ``openvino_model.xml`` + ``openvino_model.bin``; the tokenizer, converted
   by openvino-tokenizers, ``openvino_tokenizer.xml`` and ``openvino_detokenizer.xml``
   (``write_genai_tokenizer``), beside config.json and generation_config.json.

The manifest keeps the explicit contract (past inputs, present outputs): graphport's
OpenVINO runtime sets and reads the state for them (graphport/runtimes/openvino.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import ExportError
from graphport.manifest import BEAM_IDX, PAST_PREFIX, PRESENT_PREFIX

logger = logging.getLogger(__name__)

GENAI_MODEL_FILE = "openvino_model.xml"
GENAI_TOKENIZER_FILES = (
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
)
DECODER_INPUTS = frozenset({"input_ids", "attention_mask", "position_ids"})


def onnx_to_openvino(onnx_path: Path, xml_path: Path, compress_to_fp16: bool = False) -> Path:
    """Convert with OpenVINO's converter; ``compress_to_fp16`` stores weights in fp16
    (OpenVINO decompresses them at load, so compute precision is unchanged). Returns the
    path written: ``xml_path``, or ``openvino_model.xml`` beside it for a decoder (rule 2)."""
    import openvino as ov

    try:
        model = ov.convert_model(str(onnx_path))
        return save_ir(model, xml_path, compress_to_fp16)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"OpenVINO could not convert the ONNX graph: {e}") from e


def save_ir(model: Any, xml_path: Path, compress_to_fp16: bool = False) -> Path:
    """Save ``model`` as IR; a decoder with an explicit cache is made stateful first, and a
    stateful decoder is saved as ``openvino_model.xml`` beside ``xml_path``."""
    import openvino as ov

    if cache_pairs(model):
        make_stateful(model)
    if is_stateful(model):
        xml_path = xml_path.with_name(GENAI_MODEL_FILE)
    ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)
    return xml_path


def _names(ports: Any) -> set[str]:
    return {name for port in ports for name in port.get_names()}


def is_stateful(model: Any) -> bool:
    """Whether ``model`` keeps state (its KV cache) between calls."""
    return bool(model.get_sinks()) or BEAM_IDX in _names(model.inputs)


def cache_pairs(model: Any) -> dict[str, str]:
    """Past input -> present output names of a decoder-only LM graph with an explicit
    cache, in input order; empty for any other graph (encoder-decoder decoders take the
    encoder's states too, and openvino-genai does not run them)."""
    past = [n for port in model.inputs for n in port.get_names() if n.startswith(PAST_PREFIX)]
    outputs = _names(model.outputs)
    others = [
        port.get_names()
        for port in model.inputs
        if not any(n.startswith(PAST_PREFIX) for n in port.get_names())
    ]
    if not past or "logits" not in outputs or not any("input_ids" in n for n in others):
        return {}
    if not all(names & DECODER_INPUTS for names in others):
        return {}
    pairs = {name: PRESENT_PREFIX + name.removeprefix(PAST_PREFIX) for name in past}
    return pairs if set(pairs.values()) <= outputs else {}


def make_stateful(model: Any) -> None:
    """Rule 1, in place: ``beam_idx`` gathers the past, then the cache becomes state."""
    import openvino as ov
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    pairs = cache_pairs(model)
    input_ids = model.input("input_ids")
    batch_dim = input_ids.get_partial_shape()[0]
    beam_idx = opset13.parameter(ov.PartialShape([batch_dim]), ov.Type.i32, name=BEAM_IDX)
    beam_idx.output(0).get_tensor().set_names({BEAM_IDX})
    model.add_parameters([beam_idx])
    for name in pairs:
        past = model.input(name)
        consumers = past.get_target_inputs()
        gathered = opset13.gather(past, beam_idx, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(model, pairs)
    # Without an initializer a variable with dynamic axes starts with 0 on every one of
    # them, batch included; openvino-genai resets the state before each prompt, so the
    # empty cache must take the prompt's batch.
    batch = opset13.gather(
        opset13.shape_of(input_ids, output_type="i64"), opset13.constant([0]), opset13.constant(0)
    )
    for op in model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims: list[Any] = [
            opset13.constant(np.array([dim.min_length], dtype=np.int64))
            for dim in op.get_output_partial_shape(0)
        ]
        dims[0] = batch
        zeros = opset13.constant(0.0, dtype=op.get_output_element_type(0))
        op.set_arguments([opset13.broadcast(zeros, opset13.concat(dims, axis=0))])
    model.validate_nodes_and_infer_types()


def write_genai_tokenizer(directory: Path) -> tuple[list[str], str | None]:
    """Rule 2's tokenizer files in ``directory`` from the tokenizer saved there: the files
    written, and why none were (None when they were)."""
    if (
        not (directory / "tokenizer_config.json").is_file()
        and not (directory / "tokenizer.json").is_file()
    ):
        return [], "the export has no tokenizer"
    try:
        import openvino as ov
        import openvino_tokenizers
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        encoder, decoder = openvino_tokenizers.convert_tokenizer(tokenizer, with_detokenizer=True)
        ov.save_model(encoder, str(directory / GENAI_TOKENIZER_FILES[0]))
        ov.save_model(decoder, str(directory / GENAI_TOKENIZER_FILES[2]))
    except Exception as e:
        for name in GENAI_TOKENIZER_FILES:
            (directory / name).unlink(missing_ok=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return [], f"openvino-tokenizers cannot convert its tokenizer ({first})"
    return list(GENAI_TOKENIZER_FILES), None


def genai_files(directory: Path) -> list[str]:
    """The tokenizer files openvino-genai needs beside a stateful decoder in
    ``directory`` (none for other graphs); warns, naming why, where it cannot have them."""
    if not (directory / GENAI_MODEL_FILE).is_file():
        return []
    if all((directory / name).is_file() for name in GENAI_TOKENIZER_FILES):
        return list(GENAI_TOKENIZER_FILES)
    files, reason = write_genai_tokenizer(directory)
    if reason is not None:
        logger.warning(
            "openvino_genai.LLMPipeline will not run this export: %s, so it has no "
            "openvino_tokenizer.xml (graphport generate and graphport.load still run it).",
            reason,
        )
    return files

"""The seed text and multimodal architectures of issue 5: each exports a tiny random
checkpoint with its task inferred from ``config.architectures``, validates against eager
on onnxruntime and OpenVINO, and has the graphs, inputs and outputs its family documents.

Every architecture is exported once (a module-scoped cache); the checks specific to a
family (its inputs, its sequence-length rules, its tokenizer) reuse that export.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from graphport.api.export import ExportResult, export_model
from graphport.errors import UnsupportedModelError
from graphport.export.tasks import Task
from graphport.models import get_onnx_config, get_registration, supported_tasks
from graphport.models.mra import TorchMraKernels, sequence_lengths, torch_mra_kernels
from graphport.models.tiny import save_tiny_checkpoint, tiny_config, tiny_model
from tests.conftest import add_word_tokenizer

BOTH = {"onnxruntime", "openvino"}


def add_herbert_tokenizer(checkpoint: Path) -> None:
    """HerBERT's tokenizer class (a BPE over characters here), as its checkpoints ship it."""
    from transformers import HerbertTokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz.!?")
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials + chars + [c + "</w>" for c in chars])}
    HerbertTokenizer(vocab=vocab, merges=[]).save_pretrained(checkpoint)


PHONEMES = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abdefhijklmnopstuvwz", *"əɪʊŋʃʒθ"]


def add_phoneme_tokenizer(checkpoint: Path) -> None:
    """A ``Wav2Vec2PhonemeCTCTokenizer`` over 32 phonemes (the tiny CTC head's width)."""
    from transformers import Wav2Vec2PhonemeCTCTokenizer

    vocab = checkpoint / "phonemes.json"
    vocab.write_text(json.dumps({p: i for i, p in enumerate(PHONEMES)}), encoding="utf-8")
    Wav2Vec2PhonemeCTCTokenizer(str(vocab), do_phonemize=False).save_pretrained(checkpoint)
    vocab.unlink()


def add_canine_tokenizer(checkpoint: Path) -> None:
    from transformers import CanineTokenizer

    CanineTokenizer().save_pretrained(checkpoint)


@dataclasses.dataclass(frozen=True)
class Seed:
    model_type: str
    task: str
    family: str
    graphs: tuple[str, ...] = ("model",)
    tokenizer: Callable[[Path], Any] | None = None
    variant: str = ""

    @property
    def id(self) -> str:
        return self.variant or self.model_type


SEEDS = [
    Seed("fnet", "fill-mask", "fnet"),
    Seed("lilt", "token-classification", "lilt"),
    Seed("luke", "feature-extraction", "luke"),
    Seed("visual_bert", "feature-extraction", "visual_bert"),
    Seed("canine", "text-classification", "canine", tokenizer=add_canine_tokenizer),
    Seed("mra", "fill-mask", "mra"),
    Seed("bert", "fill-mask", "bert", tokenizer=add_herbert_tokenizer, variant="herbert"),
    Seed("roberta-prelayernorm", "question-answering", "bert", tokenizer=add_word_tokenizer),
    Seed(
        "wav2vec2",
        "automatic-speech-recognition",
        "wav2vec2",
        tokenizer=add_phoneme_tokenizer,
        variant="wav2vec2-phoneme",
    ),
    Seed("perceiver", "fill-mask", "perceiver"),
    Seed("perceiver", "feature-extraction", "perceiver", variant="perceiver-model"),
    Seed(
        "vision-text-dual-encoder",
        "feature-extraction",
        "vision-text-dual-encoder",
        ("text", "vision"),
    ),
    Seed("clap", "feature-extraction", "clap", ("text", "audio")),
    Seed("bridgetower", "feature-extraction", "bridgetower"),
    Seed("idefics", "feature-extraction", "idefics"),
    Seed("cpmant", "feature-extraction", "cpmant"),
    Seed("pix2struct", "image-to-text", "pix2struct", ("encoder", "decoder")),
]
BY_ID = {seed.id: seed for seed in SEEDS}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ExportResult]:
    """``exported(seed id)`` -> the export of that seed's tiny checkpoint, made once."""
    cache: dict[str, ExportResult] = {}

    def export(seed_id: str) -> ExportResult:
        if seed_id not in cache:
            seed = BY_ID[seed_id]
            root = tmp_path_factory.mktemp(seed.id)
            checkpoint = save_tiny_checkpoint(seed.model_type, root / "checkpoint", seed.task)
            if seed.tokenizer is not None:
                seed.tokenizer(checkpoint)
            cache[seed_id] = export_model(checkpoint, root / "out")
        return cache[seed_id]

    return export


@pytest.mark.parametrize("seed", SEEDS, ids=[s.id for s in SEEDS])
def test_seed_exports_and_validates(seed: Seed, exported: Callable[[str], ExportResult]):
    result = exported(seed.id)
    manifest, report = result.manifest, result.report
    assert manifest.task == seed.task, "the task is inferred from config.architectures"
    assert manifest.family == seed.family
    assert [g.name for g in manifest.graphs] == list(seed.graphs)
    assert report.passed, "\n".join(report.failures())
    assert set(report.runtimes) == BOTH
    assert {r.runtime for r in report.results} == BOTH
    for case in report.results:
        assert case.outputs, f"{case.runtime} / {case.case} compared nothing"
    for graph in seed.graphs:  # every graph is validated at two shape sets at least
        prefix = f"{graph} / " if len(seed.graphs) > 1 else ""
        assert len({r.case for r in report.results if r.case.startswith(prefix)}) >= 2


def _graph_inputs(result: ExportResult, graph: str = "model") -> list[str]:
    return [t.name for t in result.manifest.graph(graph).inputs]


def _cases(result: ExportResult) -> dict[str, dict[str, int]]:
    return {r.case: r.sizes for r in result.report.results}


def test_fnet_takes_no_attention_mask(exported):
    assert _graph_inputs(exported("fnet")) == ["input_ids", "token_type_ids"]


def test_lilt_takes_boxes(exported):
    result = exported("lilt")
    assert _graph_inputs(result)[:2] == ["input_ids", "bbox"]
    bbox = result.manifest.graph().inputs[1]
    assert bbox.shape[2] == 4


def test_luke_takes_and_returns_entities(exported):
    result = exported("luke")
    assert {"entity_ids", "entity_attention_mask", "entity_position_ids"} <= set(
        _graph_inputs(result)
    )
    outputs = [t.name for t in result.manifest.graph().outputs]
    assert outputs == ["last_hidden_state", "entity_last_hidden_state"]


def test_visual_bert_output_spans_tokens_and_regions(exported):
    result = exported("visual_bert")
    assert "visual_embeds" in _graph_inputs(result)
    (hidden,) = result.manifest.graph().outputs
    assert str(hidden.shape[1]) == "text_and_visual"


def test_canine_takes_any_length_and_real_text(exported):
    """Lengths that are no multiple of the downsampling rate, and tokenized sentences."""
    cases = _cases(exported("canine"))
    assert any(sizes["sequence"] % 4 for sizes in cases.values())
    assert "real sentences" in cases


def test_mra_validates_at_multiples_of_its_block(exported):
    cases = _cases(exported("mra"))
    lengths = {sizes["sequence"] for case, sizes in cases.items() if case.startswith("shape")}
    assert lengths == {64, 128}  # (64 / 32)^2 blocks: all selected; 128: 4 of 16


def test_mra_lengths_follow_the_config():
    released = tiny_config("mra", max_position_embeddings=512, block_per_row=4)
    assert sequence_lengths(released) == [256, 288, 320, 352, 384, 416, 448, 480, 512]
    too_short = tiny_config("mra", max_position_embeddings=64, block_per_row=4)
    config = get_onnx_config(too_short, "feature-extraction")
    with pytest.raises(UnsupportedModelError, match="accepts only sequence lengths"):
        config.trace_shapes()


def test_mra_torch_kernels_are_exact_attention_when_every_block_is_kept():
    from transformers.models.mra.modeling_mra import mra2_attention

    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(3, 1, 64, 32, generator=generator) for _ in range(3))
    mask = torch.ones(3, 64)
    mask[1, 40:] = 0
    with torch_mra_kernels():
        mra = mra2_attention(query, key, value, mask, num_blocks=4, approx_mode="full")
    scores = query @ key.transpose(-1, -2) / math.sqrt(32) - 1e9 * (1 - mask[:, None, None, :])
    exact = torch.softmax(scores, dim=-1) @ value * mask[:, None, :, None]
    torch.testing.assert_close(mra, exact, atol=1e-5, rtol=0)


def test_mra_index_max_rounds_as_the_kernel():
    """Row maxima over the selected blocks, truncated to 1/1000 (the kernel's int atomics)."""
    values = torch.tensor([[[0.12345, -2.5], [1.0009, 0.3]]]).repeat(1, 16, 1)  # [1, 32, 2]
    indices = torch.tensor([[0, 1]], dtype=torch.int32)  # both blocks in block-row 0
    max_vals, scatter = TorchMraKernels.index_max(values, indices, a_blocks=2, b_blocks=2)
    assert max_vals[0, :2].tolist() == pytest.approx([0.123, 1.0])
    assert max_vals[0, 32:].tolist() == pytest.approx([-1e5] * 32)  # block-row 1: unselected
    assert scatter[0, 0].tolist() == pytest.approx([0.123, 0.123])


def test_mra_export_computes_attention():
    """Without its CUDA kernels transformers' MRA attention is zeros; the export is not."""
    model = tiny_model("mra")
    ids = torch.randint(5, 128, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kernel_less = model(input_ids=ids).last_hidden_state
        with torch_mra_kernels():
            with_kernels = model(input_ids=ids).last_hidden_state
    assert (with_kernels - kernel_less).abs().max() > 1e-3


def test_existing_families_cover_the_seed_types():
    """RoBERTa-PreLayerNorm, Data2Vec text and audio were registered before issue 5;
    test_families exports each of their heads, this pins where they belong."""
    assert get_registration("roberta-prelayernorm").family == "bert"
    assert get_registration("data2vec-text").family == "bert"
    assert get_registration("data2vec-audio").family == "wav2vec2"
    assert Task.AUTOMATIC_SPEECH_RECOGNITION in supported_tasks("data2vec-audio")


def test_herbert_tokenizer_feeds_a_bert_export(exported):
    result = exported("herbert")
    config = json.loads((result.path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"].startswith("HerbertTokenizer")
    assert "real sentences" in _cases(result)


def test_phoneme_ctc_export_ships_its_tokenizer(exported):
    result = exported("wav2vec2-phoneme")
    config = json.loads((result.path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Wav2Vec2PhonemeCTCTokenizer"
    (logits,) = result.manifest.graph().outputs
    assert logits.shape[2] == len(PHONEMES)


def test_perceiver_takes_tokens_and_pixels_by_their_processor_names(exported):
    assert _graph_inputs(exported("perceiver")) == ["input_ids", "attention_mask"]
    image = get_onnx_config(tiny_config("perceiver"), Task.IMAGE_CLASSIFICATION)
    assert list(image.inputs) == ["pixel_values"]
    assert image.modality == "vision"


def test_perceiver_model_takes_embeddings_and_returns_latents(exported):
    """The bare PerceiverModel has no preprocessor: ``inputs`` are d_model-wide embeddings,
    and its output is the latent array, whatever the input length."""
    result = exported("perceiver-model")
    assert result.manifest.source["architectures"] == ["PerceiverModel"]
    assert result.manifest.modality == "embeddings"
    inputs = {t.name: t.shape for t in result.manifest.graph().inputs}
    assert inputs == {"inputs": ["batch", "sequence", 32], "attention_mask": ["batch", "sequence"]}
    (latents,) = result.manifest.graph().outputs
    assert (latents.name, latents.shape) == ("last_hidden_state", ["batch", 8, 32])


def test_dual_encoder_towers(exported):
    result = exported("vision-text-dual-encoder")
    assert _graph_inputs(result, "text") == ["input_ids", "attention_mask", "token_type_ids"]
    assert _graph_inputs(result, "vision") == ["pixel_values"]
    assert [t.name for t in result.manifest.graph("vision").outputs] == ["image_embeds"]


def test_clap_audio_tower_takes_the_feature_extractor_window(exported):
    result = exported("clap")
    (features,) = result.manifest.graph("audio").inputs
    assert features.shape[1:] == [1, 1001, 16]  # mono, 10 s at 48 kHz / hop 480, mel bins
    assert [t.name for t in result.manifest.graph("text").outputs] == ["text_embeds"]


def test_bridgetower_is_one_joint_graph(exported):
    result = exported("bridgetower")
    assert _graph_inputs(result) == ["input_ids", "attention_mask", "pixel_values"]


def test_idefics_reads_its_images():
    """The tiny model's cross-attention gates are open, so validation tests the images."""
    model = tiny_model("idefics")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 128, (1, 7), generator=generator)
    feeds = {"input_ids": ids, "image_attention_mask": torch.ones(1, 7, 1, dtype=torch.long)}
    with torch.no_grad():
        a, b = (
            model(**feeds, pixel_values=torch.randn(1, 1, 3, 32, 32, generator=generator))
            for _ in range(2)
        )
    assert (a.last_hidden_state - b.last_hidden_state).abs().max() > 1e-3


def test_cpmant_takes_left_padded_ids_only(exported):
    assert _graph_inputs(exported("cpmant")) == ["input_ids"]


def test_pix2struct_generates_from_patches(exported):
    result = exported("pix2struct")
    assert _graph_inputs(result, "encoder") == ["flattened_patches", "attention_mask"]
    generation = result.report.generation
    assert {(g.runtime, g.case) for g in generation} == {
        (runtime, case) for runtime in BOTH for case in ("single image", "padded batch of 3")
    }
    assert all(g.passed for g in generation)


@pytest.mark.parametrize(
    ("model_type", "architecture", "task"),
    [
        ("cpmant", "CpmAntForCausalLM", "text-generation"),
        ("idefics", "IdeficsForVisionText2Text", "image-to-text"),
    ],
)
def test_generative_heads_ask_for_a_supported_task(model_type, architecture, task, tmp_path):
    """Their generative heads are not exported by these families; the error says which
    task to pass instead."""
    checkpoint = save_tiny_checkpoint(model_type, tmp_path / "checkpoint")
    config_file = checkpoint / "config.json"
    config = json.loads(config_file.read_text())
    config["architectures"] = [architecture]
    config_file.write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=f"is a {task} model.*feature-extraction"):
        export_model(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_canine_dummy_ids_are_code_points():
    config = get_onnx_config(tiny_config("canine"), "feature-extraction")
    ids = config.dummy_inputs(config.trace_shapes())["input_ids"].numpy()
    assert ids.min() >= 0x20 and ids.max() < 0x3000
    assert np.issubdtype(ids.dtype, np.integer)

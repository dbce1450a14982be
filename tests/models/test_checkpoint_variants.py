"""Checkpoint variants that are a registered model type with another tokenizer.

The issue names two: GPT-Sw3 checkpoints are ``gpt2`` models whose tokenizer is the
sentencepiece ``GPTSw3Tokenizer`` (no tokenizer.json, only spiece.model), and NLLB
checkpoints are ``m2m_100`` models whose tokenizer is ``NllbTokenizer`` (source text as
``<language code> tokens </s>``, the target language forced as the first generated token
by the generation config's ``forced_bos_token_id``, as a translation pipeline sets it).
Nothing in the export depends on the tokenizer class, but ``graphport generate`` tokenizes
and decodes with it, so each variant is built here as a tiny checkpoint with a tokenizer
trained in-process, exported with the task inferred from ``config.architectures``, and its
``graphport generate --json`` tokens compared with transformers' greedy ``generate()`` on
both runtimes.

The tiny models' vocabularies are the tokenizers' own size, so every generated id decodes
(a sentencepiece model rejects an id past its pieces). Their generation configs ask for at
least as many new tokens as are compared, so an end token never cuts a comparison short.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from graphport.api.export import export_model
from graphport.cli import cli
from graphport.models.tiny import tiny_model

RUNTIMES = ["onnxruntime", "openvino"]
NEW_TOKENS = 24
PROMPT = "the quick brown fox jumps over the lazy dog"

# Words to train the tiny tokenizers on: enough distinct pieces for a few dozen ids.
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "svenska är kul och det är roligt att läsa",
    "le renard brun saute par dessus le chien paresseux",
    "a model of words and pieces makes a tiny vocabulary",
    "graphport exports models to onnx and openvino",
]


def _generate_json(export: Path, prompt: str, runtime: str) -> dict:
    args = ["generate", str(export), prompt, "--json", "--runtime", runtime]
    result = CliRunner().invoke(cli, [*args, "--max-new-tokens", str(NEW_TOKENS)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _assert_cli_generates(export: Path, runtime: str, tokenizer, expected: list[int]) -> None:
    """``graphport generate --json`` on PROMPT gives eager's tokens and their text."""
    payload = _generate_json(export, PROMPT, runtime)
    assert payload["token_ids"] == expected
    assert payload["text"] == tokenizer.decode(expected, skip_special_tokens=True)


def _eager_new_tokens(model, tokenizer, prompt: str) -> list[int]:
    """transformers' greedy ``generate()`` on the prompt as the checkpoint's tokenizer
    encodes it; the generation config's own rules (minimum length, forced BOS) apply."""
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(
            **encoded,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
    sequences = output.sequences  # a decoder-only model's prompt, or the decoder start
    return sequences[0, sequences.shape[1] - len(output.scores) :].tolist()


# ---- GPT-Sw3: a gpt2 checkpoint with a sentencepiece GPTSw3Tokenizer ---------------------


def save_gpt_sw3_tokenizer(checkpoint: Path):
    """A sentencepiece model trained here, with GPT-Sw3's special pieces, saved as a
    ``GPTSw3Tokenizer`` (spiece.model and tokenizer_config.json)."""
    import sentencepiece
    from transformers import GPTSw3Tokenizer

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 4),
        model_writer=model,
        vocab_size=96,
        hard_vocab_limit=False,  # as many pieces as the sentences give, at most 96
        model_type="unigram",
        # The tiny gpt2's pad, bos and eos ids; GPT-Sw3's end token is <|endoftext|>.
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        bos_piece="<s>",
        eos_piece="<|endoftext|>",
        unk_piece="<unk>",
        minloglevel=2,
    )
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "spiece.model").write_bytes(model.getvalue())
    tokenizer = GPTSw3Tokenizer(
        vocab_file=str(checkpoint / "spiece.model"), name_or_path="tiny-gpt-sw3"
    )
    tokenizer.save_pretrained(checkpoint)
    return tokenizer


def save_and_export(model, checkpoint: Path, out: Path) -> tuple[Path, Path]:
    """Save ``model`` beside its tokenizer, asking for at least NEW_TOKENS new tokens, and
    export it with the task inferred; (checkpoint, export)."""
    model.generation_config.min_new_tokens = NEW_TOKENS
    model.save_pretrained(checkpoint)
    result = export_model(checkpoint, out)
    assert result.report.passed, "\n".join(result.report.failures())
    return checkpoint, result.path


@pytest.fixture(scope="module")
def gpt_sw3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, export) of a tiny GPT-Sw3."""
    root = tmp_path_factory.mktemp("gpt-sw3")
    checkpoint = root / "checkpoint"
    tokenizer = save_gpt_sw3_tokenizer(checkpoint)
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    # At the default init a tiny gpt2 repeats the prompt's last token; wider weights vary.
    model = tiny_model("gpt2", "text-generation", vocab_size=len(tokenizer), initializer_range=0.5)
    return save_and_export(model, checkpoint, root / "out")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_gpt_sw3_cli_generate_matches_eager(gpt_sw3: tuple[Path, Path], runtime: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPTSw3Tokenizer

    checkpoint, export = gpt_sw3
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert isinstance(tokenizer, GPTSw3Tokenizer)
    assert (export / "spiece.model").is_file(), "the export carries the sentencepiece model"
    assert not (export / "tokenizer.json").exists()
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    assert model.config.model_type == "gpt2"
    expected = _eager_new_tokens(model, tokenizer, PROMPT)
    assert len(expected) == NEW_TOKENS and len(set(expected)) > 4, expected

    _assert_cli_generates(export, runtime, tokenizer, expected)


# ---- NLLB: an m2m_100 checkpoint with a tokenizers-backed NllbTokenizer ----------------

SOURCE_LANGUAGE, TARGET_LANGUAGE = "eng_Latn", "fra_Latn"


def save_nllb_tokenizer(checkpoint: Path):
    """A BPE trained here over NLLB's ``▁`` pieces, as an ``NllbTokenizer`` with two
    language codes (special tokens after the pieces, as in NLLB's vocabulary)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import NllbTokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<s>", "<pad>", "</s>", "<unk>"]  # NLLB's ids 0-3
    trainer = trainers.BpeTrainer(vocab_size=96, special_tokens=specials, show_progress=False)
    bpe.train_from_iterator(SENTENCES, trainer)
    state = json.loads(bpe.to_str())["model"]
    tokenizer = NllbTokenizer(
        vocab=state["vocab"],
        merges=[tuple(merge) for merge in state["merges"]],
        extra_special_tokens=[SOURCE_LANGUAGE, TARGET_LANGUAGE],
        src_lang=SOURCE_LANGUAGE,
        tgt_lang=TARGET_LANGUAGE,
    )
    tokenizer.save_pretrained(checkpoint)
    return tokenizer


@pytest.fixture(scope="module")
def nllb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, export) of a tiny NLLB that translates into ``TARGET_LANGUAGE``."""
    root = tmp_path_factory.mktemp("nllb")
    checkpoint = root / "checkpoint"
    tokenizer = save_nllb_tokenizer(checkpoint)
    model = tiny_model("m2m_100", "text2text-generation", vocab_size=len(tokenizer))
    assert model.config.decoder_start_token_id == tokenizer.eos_token_id == 2
    model.generation_config.forced_bos_token_id = tokenizer.convert_tokens_to_ids(TARGET_LANGUAGE)
    return save_and_export(model, checkpoint, root / "out")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_nllb_cli_generate_matches_eager(nllb: tuple[Path, Path], runtime: str):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, NllbTokenizer

    checkpoint, export = nllb
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert isinstance(tokenizer, NllbTokenizer)
    source, target = tokenizer.convert_tokens_to_ids([SOURCE_LANGUAGE, TARGET_LANGUAGE])
    encoded = tokenizer(PROMPT)["input_ids"]
    assert encoded[0] == source and encoded[-1] == tokenizer.eos_token_id
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint).eval()
    assert model.config.model_type == "m2m_100"
    expected = _eager_new_tokens(model, tokenizer, PROMPT)
    assert len(expected) == NEW_TOKENS and len(set(expected)) > 4, expected
    assert expected[0] == target, "the target language is the first token"

    _assert_cli_generates(export, runtime, tokenizer, expected)

"""Vision-language models end to end on tiny random LLaVA and Idefics3 models (built
offline with their processors): ``export_model`` infers image-text-to-text and writes the
vision, embed and decoder graphs, validated graph by graph and by greedy tokens on both
runtimes;
``graphport.load`` generates as eager does (greedy, beam search, sampling; with an image
and from text alone); ``transformers.pipeline``, ``graphport.pipeline`` and
``graphport generate --image`` and ``graphport run IMAGE TEXT`` serve it.

One export per family serves the module."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

import graphport
from graphport.api.export import export_model
from graphport.cli import cli
from graphport.errors import UnsupportedModelError, UsageError
from graphport.export.generic import GenericOnnxConfig
from graphport.export.tasks import Task
from graphport.export.vlm import image_text_config
from graphport.models.registry import get_onnx_config, supported_tasks
from graphport.models.tiny_vlm import (
    IMAGE_TOKEN_ID,
    save_tiny_idefics3,
    save_tiny_llava,
    save_tiny_smolvlm,
)
from graphport.verbosity import set_verbosity

# model type -> (its tiny checkpoint, its vision graph's inputs, image tokens per tile).
FAMILIES = {
    "llava": (save_tiny_llava, ["pixel_values"], 16),
    "idefics3": (save_tiny_idefics3, ["pixel_values", "pixel_attention_mask"], 4),
}
RUNTIMES = ["onnxruntime", "openvino"]
MODES = {
    "greedy": {"do_sample": False},
    "beam search": {"do_sample": False, "num_beams": 3},
    "sampling": {"do_sample": True, "top_k": 8},
}


@pytest.fixture(autouse=True)
def _restore_verbosity() -> Iterator[None]:
    # The CLI sets graphport's log level for the whole process; put the tests' level back.
    yield
    set_verbosity("error")


@pytest.fixture(scope="module", params=list(FAMILIES))
def model_type(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def checkpoint(model_type: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return FAMILIES[model_type][0](tmp_path_factory.mktemp(model_type) / "checkpoint")


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return export_model(checkpoint, tmp_path_factory.mktemp("export") / "out")


@pytest.fixture(scope="module")
def eager(checkpoint: Path) -> Any:
    return transformers.AutoModelForImageTextToText.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="module")
def processor(exported: Any) -> Any:
    return transformers.AutoProcessor.from_pretrained(exported.path, local_files_only=True)


@pytest.fixture(scope="module")
def loaded(exported: Any) -> dict[str, Any]:
    """One loaded model per runtime (loading graphs costs more than short generations)."""
    models: dict[str, Any] = {}

    def get(runtime: str) -> Any:
        if runtime == "openvino":
            pytest.importorskip("openvino", reason="OpenVINO is not installed")
        if runtime not in models:
            models[runtime] = graphport.load(exported.path, runtime)
        return models[runtime]

    return get


def image(seed: int, height: int = 40, width: int = 48) -> Any:
    """A random RGB image of another size than the model's (the processor resizes it)."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def chat(processor: Any, text: str, images: int = 1) -> str:
    content = [{"type": "image"}] * images + [{"type": "text", "text": text}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def generate(model: Any, inputs: Any, seed: int = 0, **options: Any) -> list[list[int]]:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=12, **options).tolist()


def test_export_writes_the_vision_embed_and_decoder_graphs(model_type: str, exported: Any) -> None:
    _, vision_inputs, image_tokens = FAMILIES[model_type]
    manifest = exported.manifest
    assert manifest.task == "image-text-to-text"
    assert (manifest.family, manifest.generic) == (model_type, False)
    graphs = {g.name: g for g in manifest.graphs}
    assert list(graphs) == ["vision", "embed", "decoder"]
    assert [t.name for t in graphs["vision"].inputs] == vision_inputs
    assert [t.name for t in graphs["vision"].outputs] == ["image_features"]
    assert [t.name for t in graphs["embed"].outputs] == ["inputs_embeds"]
    decoder_inputs = [t.name for t in graphs["decoder"].inputs]
    assert decoder_inputs[:3] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert decoder_inputs[3:5] == ["past_key_values.0.key", "past_key_values.0.value"]
    contract = manifest.kv_cache
    assert (contract["graph"], contract["main_input"]) == ("decoder", "inputs_embeds")
    assert (contract["embed_graph"], contract["vision_graph"]) == ("embed", "vision")
    assert (contract["image_token_id"], contract["image_tokens"]) == (IMAGE_TOKEN_ID, image_tokens)
    for name in ("processor_config.json", "chat_template.jinja", "tokenizer.json"):
        assert (exported.path / name).is_file() and name in manifest.files


def test_each_graph_and_greedy_generation_match_eager_on_both_runtimes(exported: Any) -> None:
    report = exported.report
    assert report.passed
    cases = {(r.runtime, r.case) for r in report.results if r.passed}
    for runtime in report.runtimes:
        for graph in ("vision", "embed", "decoder"):
            # Several images in one call, never the traced number of them.
            assert (runtime, f"{graph} / shape set 2") in cases
    checks = {(c.runtime, c.case): c for c in report.generation}
    labels = {"one image", "padded batch of 2 with an image each", "text only"}
    assert {case for _, case in checks} == labels
    assert all(c.passed for c in checks.values())
    assert len({runtime for runtime, _ in checks}) == len(RUNTIMES)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("mode", list(MODES))
def test_generate_from_an_image_matches_eager(
    runtime: str, mode: str, eager: Any, processor: Any, loaded: Any
) -> None:
    model = loaded(runtime)
    prompts = [chat(processor, "w5 w9 w11"), chat(processor, "w7")]
    inputs = processor(
        images=[image(0), image(1, 64, 30)], text=prompts, padding=True, return_tensors="pt"
    )
    assert (inputs["attention_mask"] == 0).any()  # the shorter prompt is left-padded
    expected = generate(eager, inputs, **MODES[mode])
    assert generate(model, inputs, **MODES[mode]) == expected


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_text_only_prompts_generate_as_eager(
    runtime: str, eager: Any, processor: Any, loaded: Any
) -> None:
    inputs = processor(text=["user: w5 w6 w7 assistant:"], return_tensors="pt")
    assert "pixel_values" not in inputs
    assert generate(loaded(runtime), inputs) == generate(eager, inputs)


def test_two_images_in_one_prompt(eager: Any, processor: Any, loaded: Any) -> None:
    inputs = processor(
        images=[image(2), image(3)], text=chat(processor, "w8 w9", images=2), return_tensors="pt"
    )
    tokens = int((inputs["input_ids"] == IMAGE_TOKEN_ID).sum())
    assert tokens and tokens % 2 == 0  # as many for each image
    assert generate(loaded("onnxruntime"), inputs) == generate(eager, inputs)


def test_images_and_image_tokens_must_agree(processor: Any, loaded: Any) -> None:
    inputs = processor(images=[image(4)], text=chat(processor, "w5"), return_tensors="pt")
    two = torch.cat([inputs["pixel_values"]] * 2)
    with pytest.raises(UsageError, match=r"image tokens, but its \d+ image\(s\) give \d+ features"):
        loaded("onnxruntime")(input_ids=inputs["input_ids"], pixel_values=two)


def test_transformers_pipeline_accepts_the_loaded_model(
    eager: Any, processor: Any, loaded: Any
) -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image(5)}, {"type": "text", "text": "w5 w6"}],
        }
    ]
    options = {"max_new_tokens": 6, "do_sample": False}
    served = transformers.pipeline(
        "image-text-to-text", model=loaded("onnxruntime"), processor=processor
    )(text=messages, **options)
    reference = transformers.pipeline("image-text-to-text", model=eager, processor=processor)(
        text=messages, **options
    )
    answer = served[0]["generated_text"][-1]
    assert answer["role"] == "assistant" and answer["content"].strip()
    assert served[0]["generated_text"] == reference[0]["generated_text"]


def test_graphport_pipeline_serves_the_export(exported: Any, processor: Any) -> None:
    pipe = graphport.pipeline(exported.path)
    prompt = chat(processor, "w9 w10")
    result = pipe(images=image(6), text=prompt, max_new_tokens=5, do_sample=False)
    assert result[0]["generated_text"].startswith(prompt.strip())
    assert len(result[0]["generated_text"].split()) > len(prompt.split())


def test_image_text_to_text_beside_the_generic_feature_extraction(
    model_type: str, checkpoint: Path
) -> None:
    config = transformers.AutoConfig.from_pretrained(checkpoint)
    assert supported_tasks(model_type) == (Task.FEATURE_EXTRACTION, Task.IMAGE_TEXT_TO_TEXT)
    assert isinstance(get_onnx_config(config, "feature-extraction"), GenericOnnxConfig)
    vlm = get_onnx_config(config, "image-text-to-text")
    assert type(vlm) is image_text_config(model_type) and vlm.use_past
    with pytest.raises(UnsupportedModelError, match="does not support the task 'fill-mask'"):
        get_onnx_config(config, "fill-mask")


def test_cli_generates_from_an_image_as_eager(
    exported: Any, eager: Any, processor: Any, tmp_path: Path
) -> None:
    image(7).save(tmp_path / "a.png")
    args = ["generate", str(exported.path), "w5 w9", "--image", str(tmp_path / "a.png")]
    result = CliRunner().invoke(cli, [*args, "--max-new-tokens", "6", "--json"])
    assert result.exit_code == 0, result.output
    inputs = processor(images=image(7), text=chat(processor, "w5 w9"), return_tensors="pt")
    with torch.no_grad():
        expected = eager.generate(**inputs, max_new_tokens=6, do_sample=False)
    row = json.loads(result.stdout)
    assert row["token_ids"] == expected[0, inputs["input_ids"].shape[1] :].tolist()
    assert row["text"] == processor.decode(row["token_ids"], skip_special_tokens=True)


def test_cli_run_answers_images_and_texts_as_one_message(
    exported: Any, eager: Any, processor: Any, tmp_path: Path
) -> None:
    image(9).save(tmp_path / "a.png")
    args = ["run", str(exported.path), str(tmp_path / "a.png"), "w5 w9", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)["predictions"][0]["generated_text"]
    inputs = processor(images=image(9), text=chat(processor, "w5 w9"), return_tensors="pt")
    with torch.no_grad():  # the export's generation config: 20 new tokens, greedy
        output = eager.generate(**inputs, max_new_tokens=20, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    assert reply.split() == processor.decode(new, skip_special_tokens=True).split()


@pytest.mark.parametrize(
    ("prompts", "file", "message"),
    [
        (["w5"], "missing.png", "The image .*missing.png does not exist"),
        (["w5"], "bad.png", "bad.png is not an image Pillow can read"),
        (["w5", "w6"], "a.png", "--image goes with one prompt, and 2 were given"),
    ],
)
def test_cli_refuses_bad_images_in_one_sentence(
    exported: Any, tmp_path: Path, prompts: list[str], file: str, message: str
) -> None:
    image(8).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_text("not an image", encoding="utf-8")
    args = ["generate", str(exported.path), *prompts, "--image", str(tmp_path / file)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert re.search(message, result.output), result.output
    assert "Traceback" not in result.output


def test_a_prompt_past_the_models_positions_is_refused(loaded: Any) -> None:
    ids = torch.full((1, 250), 5, dtype=torch.long)
    with pytest.raises(
        UsageError, match="250 tokens; with 10 new tokens that exceeds the model's 256"
    ):
        loaded("onnxruntime").generate(input_ids=ids, max_new_tokens=10)


def test_smolvlm_exports_and_generates_as_eager(tmp_path: Path) -> None:
    """SmolVLM is Idefics3's architecture; its processor needs num2words, so its tokens
    are checked on the export's own generation inputs (images of tiles, a padded batch,
    text alone)."""
    result = export_model(save_tiny_smolvlm(tmp_path / "checkpoint"), tmp_path / "out")
    assert (result.manifest.task, result.manifest.family) == ("image-text-to-text", "idefics3")
    assert result.report.passed
    checks = result.report.generation
    assert len(checks) == 3 * len(RUNTIMES) and all(c.passed for c in checks)

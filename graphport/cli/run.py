"""``graphport run`` and ``graphport generate``: an export on inputs, or generating text."""

from __future__ import annotations

import json
from pathlib import Path

import click

from graphport.cli.common import providers_option, runtime_options


@click.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--runtime",
    default=None,
    help="Default: onnxruntime for ONNX graphs, the export's own runtime otherwise.",
)
@providers_option
@click.option("--json", "as_json", is_flag=True, help="Print all outputs as one JSON object.")
def run(
    export_dir: Path,
    inputs: tuple[str, ...],
    runtime: str | None,
    providers: str | None,
    as_json: bool,
) -> None:
    """Run an export on INPUTS: texts (tokenized with the export's tokenizer), image files
    or audio files (wav, flac, ogg, mp3). A generative export generates text; a two-tower
    export embeds each input with its tower and prints their similarities."""
    from graphport.api.run import predict

    options = runtime_options(providers).get(runtime or "onnxruntime", {})
    prediction = predict(export_dir, list(inputs), runtime, **options)
    if as_json:
        click.echo(json.dumps(prediction.to_json()))
    else:
        click.echo(prediction.render())


@click.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.argument("prompts", nargs=-1, required=True)
@click.option(
    "--max-new-tokens",
    type=int,
    default=None,
    help="Tokens to generate (default: the export's generation config, else 20).",
)
@click.option(
    "--runtime",
    type=click.Choice(["onnxruntime", "openvino", "executorch"]),
    default=None,
    help="Default: onnxruntime for ONNX graphs, else the runtime of the export's format.",
)
@providers_option
@click.option(
    "--sample/--greedy",
    default=None,
    help="Sample, or decode greedily (default: the export's generation config).",
)
@click.option("--temperature", type=float, default=None, help="Default: the generation config.")
@click.option("--top-k", type=int, default=None, help="0: off. Default: the generation config.")
@click.option("--top-p", type=float, default=None, help="Default: the generation config.")
@click.option("--seed", type=int, default=None, help="Seed for --sample (torch.manual_seed).")
@click.option(
    "--repetition-penalty",
    type=float,
    default=None,
    help="Default: the export's generation config (1.0: none).",
)
@click.option(
    "--num-beams",
    type=int,
    default=None,
    help="Beam search with N beams (needs a KV cache). Default: the generation config.",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "transformers", "onnxruntime-genai", "openvino-genai"]),
    default="auto",
    show_default=True,
    help="The decoding loop. auto: onnxruntime-genai (ONNX) or OpenVINO GenAI (IR) where "
    "installed, for greedy or sampled decoding; transformers' generate() otherwise.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="An image file for an image-text-to-text export (repeat for several, in one prompt).",
)
@click.option("--json", "as_json", is_flag=True, help="Print {token_ids, text, engine} as JSON.")
def generate(
    export_dir: Path,
    prompts: tuple[str, ...],
    max_new_tokens: int | None,
    runtime: str | None,
    providers: str | None,
    sample: bool | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    repetition_penalty: float | None,
    num_beams: int | None,
    engine: str,
    images: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Generate text from PROMPTS with a generative export (several prompts: one batch);
    image-to-text and speech-recognition exports take image or audio files. Decoding is
    the fastest engine installed that can do what is asked (--engine), with the export's
    generation config; the engine used is printed."""
    from graphport.api.generate import generate_text

    result = generate_text(
        export_dir,
        list(prompts),
        runtime,
        runtime_options(providers).get(runtime),
        seed=seed,
        engine=engine,
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        num_beams=num_beams,
        images=images,
    )
    if as_json:
        rows = [
            {"token_ids": result.trimmed(row), "text": text, "engine": result.engine}
            for row, text in enumerate(result.texts)
        ]
        click.echo(json.dumps(rows[0] if len(rows) == 1 else rows))
        return
    for text in result.texts:
        click.echo(text)
    click.echo(
        f"[{result.steps} steps, {len(result.texts)} prompt(s), "
        f"{result.tokens_per_second:.1f} tokens/s on {result.runtime} with {result.engine}]",
        err=True,
    )

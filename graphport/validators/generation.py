"""Generation parity: greedy tokens of each runtime against transformers' ``generate()``.

Both sides are transformers' own ``generate()``: eager on the torch model, and on the
export loaded with ``graphport.load`` (the model the Python API and ``graphport generate``
use), so what is validated is the decoding path users run.

Only where logits match to fp32 precision can tokens be expected to match, so the parity
validation runs this for fp32 KV-cache exports; the report records the first step where
any row differs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from graphport.manifest import ExportDirectory
from graphport.runtimes.generate import VALIDATION_STEPS, eager_generate, generation_defaults
from graphport.runtimes.model_factory import load_model


@dataclasses.dataclass
class GenerationCheck:
    """Greedy tokens of one runtime against transformers' ``generate()`` on eager."""

    runtime: str
    case: str
    expected: list[list[int]]
    actual: list[list[int]]
    error: str | None = None

    @property
    def first_difference(self) -> int | None:
        """The first generation step where any row differs (None: identical)."""
        if self.error:
            return 0
        width = max(len(self.expected[0]), len(self.actual[0]) if self.actual else 0)
        for step in range(width):
            for want, got in zip(self.expected, self.actual, strict=True):
                if (want[step] if step < len(want) else None) != (
                    got[step] if step < len(got) else None
                ):
                    return step
        return None

    @property
    def passed(self) -> bool:
        return self.error is None and self.first_difference is None


def check_generation(
    export_dir: ExportDirectory,
    eager: Any,
    config: Any,
    runtimes: Sequence[str],
    runtime_options: Mapping[str, Mapping[str, Any]] | None,
    seed: int = 0,
    steps: int = VALIDATION_STEPS,
) -> list[Any]:
    """Greedy ``generate()`` of the loaded export on each runtime against eager
    ``generate()``: the config's generation inputs (one alone and a padded batch),
    ``steps`` new tokens each."""
    defaults = generation_defaults(export_dir)
    cases = [
        (
            label,
            inputs,
            eager_generate(eager, inputs, steps, defaults["pad_token_id"], steps).tolist(),
        )
        for label, inputs in config.generation_inputs(seed)
    ]
    checks = []
    for name in runtimes:
        try:  # one model per runtime: loading graphs costs more than short generations
            model = load_model(export_dir, name, **dict((runtime_options or {}).get(name, {})))
        except Exception as e:
            checks += [
                GenerationCheck(name, label, expected, [], str(e)) for label, _, expected in cases
            ]
            continue
        for label, inputs, expected in cases:
            try:  # every step is compared, none cut short by an end token
                actual = eager_generate(model, inputs, steps, defaults["pad_token_id"], steps)
            except Exception as e:
                checks.append(GenerationCheck(name, label, expected, [], str(e)))
                continue
            checks.append(GenerationCheck(name, label, expected, actual.tolist()))
    return checks

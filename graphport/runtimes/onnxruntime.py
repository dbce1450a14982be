"""onnxruntime adapter (CPU provider by default; any provider can be passed through)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from graphport.errors import RuntimeUnavailableError
from graphport.runtimes.base import Runtime


class OnnxRuntime(Runtime):
    """Options: ``providers`` (list or comma-separated string), ``threads`` (intra-op)."""

    name = "onnxruntime"
    module = "onnxruntime"
    formats = frozenset({"onnx", "ort"})

    @staticmethod
    def _providers(options: Mapping[str, Any]) -> list[str]:
        providers = options.get("providers") or ["CPUExecutionProvider"]
        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        return list(providers)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        missing = [p for p in cls._providers(options) if p not in available]
        if missing:
            raise RuntimeUnavailableError(
                f"onnxruntime has no {', '.join(missing)} here; available providers are "
                f"{', '.join(available)}."
            )

    def _load(self) -> None:
        import onnxruntime as ort

        self.check_options(self.options)
        providers = self._providers(self.options)
        options = ort.SessionOptions()
        if self.options.get("threads"):
            options.intra_op_num_threads = int(self.options["threads"])
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.export_dir.graph_path(self.spec.name)), options, providers=providers
            )
        except Exception as e:
            raise RuntimeUnavailableError(f"onnxruntime could not load the graph: {e}") from e
        self.providers = self.session.get_providers()

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values, strict=True))

    def describe(self) -> str:
        return f"onnxruntime {self.version()} ({', '.join(self.providers)})"

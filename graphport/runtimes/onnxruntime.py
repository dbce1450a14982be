"""onnxruntime adapter (CPU provider by default; any provider can be passed through)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import RuntimeUnavailableError
from graphport.runtimes.base import Runtime


class OnnxRuntime(Runtime):
    """Options: ``providers`` (list or comma-separated string), ``threads`` (intra-op)."""

    name = "onnxruntime"
    module = "onnxruntime"

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

    def _session(self, model: str | bytes) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.options.get("threads"):
            options.intra_op_num_threads = int(self.options["threads"])
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(model, options, providers=self._providers(self.options))
        except Exception as e:
            raise RuntimeUnavailableError(f"onnxruntime could not load the graph: {e}") from e

    def _load(self) -> None:
        self.check_options(self.options)
        self.session = self._session(str(self.export_dir.graph_path(self.spec.name)))
        self.providers = self.session.get_providers()
        self._exposed: dict[Any, Any] = {}  # the graph with intermediates exposed, by values

    def run_with_intermediates(
        self, feeds: Mapping[str, Any], values: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """A copy of the graph with ``values`` added to its outputs, run once (Polygraphy's
        "mark all" approach: onnxruntime cannot fetch values that are not outputs)."""
        path = self.export_dir.graph_path(self.spec.name)
        if path.suffix != ".onnx":
            return super().run_with_intermediates(feeds, values)
        key = tuple(dict.fromkeys(values))
        cache = self._exposed  # every case asks for the same values: compiled once
        if key not in cache:
            cache.clear()
            cache[key] = self._exposed_session(path, key)
        session, names = cache[key]
        return dict(zip(names, session.run(names, self.check_feeds(feeds)), strict=True))

    def _exposed_session(self, path: Path, values: Sequence[str]) -> tuple[Any, list[str]]:
        import onnx

        model = onnx.load(str(path))
        produced = {out for node in model.graph.node for out in node.output}
        present = {o.name for o in model.graph.output}
        extra = [v for v in values if v in produced and v not in present]
        model.graph.output.extend(onnx.ValueInfoProto(name=v) for v in extra)
        if model.ByteSize() < 2**31 - 2**20:
            session = self._session(model.SerializeToString())
        else:  # protobuf's 2 GiB limit: the copy goes to disk with its weights beside it
            with tempfile.TemporaryDirectory() as scratch:
                copy = Path(scratch) / path.name
                onnx.save(model, str(copy), save_as_external_data=True)
                session = self._session(str(copy))
        return session, [*self.output_names, *extra]

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values, strict=True))

    def describe(self) -> str:
        return f"onnxruntime {self.version()} ({', '.join(self.providers)})"

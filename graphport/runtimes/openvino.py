"""OpenVINO adapter: reads the ONNX graph (or IR) and compiles it for a device (CPU).

A stateful decoder (graphport/export/openvino.py) keeps its KV cache as state, while
its manifest keeps the explicit contract; the adapter bridges the two, so validation and
``generate()`` feed it as any decoder export:

1. Before each call every variable is set from its past input (an empty past: an empty
   cache), and ``beam_idx`` is fed as 0..batch-1 (the past fed is already in beam order).
2. After the call each present output is the variable's value.
3. A past that is the very array the previous call returned as present (generate()
   feeds it back unchanged) is already the state: it is not set again. Arrays returned
   are the caller's; one changed in place and fed back is not seen (none of
   transformers' cache updates do that: reordering and cropping make new tensors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphport.errors import RuntimeUnavailableError
from graphport.manifest import BEAM_IDX, PAST_PREFIX, PRESENT_PREFIX
from graphport.runtimes.base import Runtime

# The inference precision that computes an export as its dtype says. OpenVINO's own default
# on CPUs with bf16 units is bf16 for every graph, which changes an fp32 decoder's greedy
# tokens (BENCHMARKS.md, "OpenVINO GenAI's precision").
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


class OpenVinoRuntime(Runtime):
    """Options: ``device`` (default CPU), ``threads``, ``precision`` (inference precision).

    On CPUs with bf16 units OpenVINO computes fp32 graphs in bf16 unless told otherwise;
    graphport asks for the export's own precision so parity means what it says. Pass
    ``precision="bf16"`` to trade accuracy for speed.
    """

    name = "openvino"
    module = "openvino"

    def _load(self) -> None:
        import openvino as ov

        if self.export_dir.manifest.dtype == "bf16" and self.spec.file.endswith(".onnx"):
            # Seen with openvino 2026.4: bfloat16 ONNX tensors come back as float16 garbage.
            raise RuntimeUnavailableError(
                "OpenVINO misreads bfloat16 ONNX graphs (its results are far from eager); "
                "run bf16 exports on a runtime with bfloat16 kernels."
            )
        self.core = ov.Core()
        self.request = self._compile(self._read()).create_infer_request()
        self._exposed: dict[Any, Any] = {}  # the graph with intermediates exposed, by values
        self._returned: dict[int, dict[str, np.ndarray]] = {}  # rule 3, per request

    def _read(self) -> Any:
        try:
            return self.core.read_model(str(self.export_dir.graph_path(self.spec.name)))
        except Exception as e:
            raise RuntimeUnavailableError(f"OpenVINO could not read the graph: {e}") from e

    def _compile(self, model: Any) -> Any:
        device = self.options.get("device", "CPU")
        default = INFERENCE_PRECISION[self.export_dir.manifest.dtype]
        config = {"INFERENCE_PRECISION_HINT": self.options.get("precision") or default}
        if self.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(self.options["threads"])
        try:
            return self.core.compile_model(model, device, config)
        except Exception as e:
            raise RuntimeUnavailableError(f"OpenVINO could not compile the graph: {e}") from e

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer(self.request, feeds, self.output_names)

    def _infer(self, request: Any, feeds: dict[str, np.ndarray], names: Sequence[str]) -> Any:
        states = request.query_state()
        if not states:
            return self._collect(request.infer(feeds, share_inputs=True), names)
        import openvino as ov

        returned = self._returned.setdefault(id(request), {})
        # A variable is named past name + present name.
        names_of = {
            past + PRESENT_PREFIX + past.removeprefix(PAST_PREFIX): past
            for past in feeds
            if past.startswith(PAST_PREFIX)
        }
        pairs = []
        for state in states:
            past = names_of[state.name]
            present = state.name.removeprefix(past)
            pairs.append((state, present))
            last = returned.get(present)
            value = feeds[past]
            if (  # rule 3
                last is None
                or last.shape != value.shape
                or last.ctypes.data != value.ctypes.data
                or last.strides != value.strides
            ):
                state.state = ov.Tensor(value)  # rule 1 (copied into the state)
        plain = {k: v for k, v in feeds.items() if not k.startswith(PAST_PREFIX)}
        plain[BEAM_IDX] = np.arange(feeds["input_ids"].shape[0], dtype=np.int32)
        results = self._collect(request.infer(plain, share_inputs=True), names)
        for state, present in pairs:  # rule 2
            returned[present] = results[present] = np.array(state.state.data, copy=True)
        return {name: results[name] for name in names if name in results}

    @staticmethod
    def _collect(results: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
        # A compiled output can carry several names (a fused bias add keeps its MatMul's),
        # and get_any_name() may return the other one.
        by_name = {name: value for port, value in results.items() for name in port.get_names()}
        return {name: np.array(by_name[name], copy=True) for name in names if name in by_name}

    def run_with_intermediates(
        self, feeds: Mapping[str, Any], values: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The model read again with a result added for every tensor named in ``values``
        (tensor names survive OpenVINO's conversion; folded ones are gone), compiled and
        run once."""
        wanted = frozenset(values) - set(self.output_names)
        cache = self._exposed  # every case asks for the same values: compiled once
        if wanted not in cache:
            model = self._read()
            ports = [
                port
                for op in model.get_ops()
                if op.get_type_name() not in ("Result", "Constant", "Parameter")
                for port in op.outputs()
                if port.get_names() & wanted
            ]
            if ports:
                model.add_outputs(ports)
            cache.clear()
            self._returned.clear()  # rule 3 holds per request
            cache[wanted] = self._compile(model).create_infer_request()
        return self._infer(cache[wanted], self.check_feeds(feeds), [*self.output_names, *wanted])

    def describe(self) -> str:
        return f"openvino {self.version()} ({self.options.get('device', 'CPU')})"

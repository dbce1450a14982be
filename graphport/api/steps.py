"""The pass pipeline under ``optimize_export`` and ``quantize_export``: every pass checked.

``run_steps`` copies SRC into a staging directory beside DST, runs its steps one by one on
the graph, checks parity against the eager model after each step with the step's budget,
records every step in the manifest, validates the result on its runtimes and moves it into
place. SRC is never modified. A step that breaks its budget fails the command
(``allow_budget_break`` keeps going and records it).

Budgets, and why:
  * fp32 passes (cleanup, fusions) keep the export's own tolerance (atol 1e-4 by default):
    they reorder arithmetic, nothing more;
  * fp16: min cosine 0.999 per output vector (fp16 has ~3 decimal digits; anything worse
    is an overflow or an island missing);
  * int8: min cosine 0.95 per output vector. Per token for hidden states, which is
    stricter than the sentence-level cosine users compare: on MiniLM, dynamic int8 gives
    min per-token cosines of 0.95-0.97, and pooled sentence embeddings of 20 real
    sentences a mean cosine of 0.993 (min 0.973, the same as the peer's int8;
    benchmarks/optimize_vs_peer.py);
  * int4 weight-only: min cosine 0.90 per output vector: 16 levels per weight block cost
    more (measured per token on MiniLM, block 32: 0.941 with rtn, 0.946 with HQQ).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from graphport.errors import ParityError, PassError, UsageError
from graphport.export.genai_config import write_genai_config
from graphport.formats import get_format
from graphport.graphs.quantize import quiet_onnxruntime_tools
from graphport.graphs.scopes import carry_scopes
from graphport.manifest import (
    MANIFEST_NAME,
    ExportDirectory,
    GraphSpec,
    Manifest,
    check_output_path,
    move_into_place,
    staging_directory,
)
from graphport.runtimes import default_runtimes, parse_runtimes
from graphport.validators.parity import INT4_REFERENCE, validate_export
from graphport.validators.reference import load_reference
from graphport.validators.report import ParityReport

logger = logging.getLogger(__name__)

BUDGETS: dict[str, float | None] = {  # min cosine; None: the export's atol
    "fp32": None,
    "fp16": 0.999,
    "int8": 0.95,
    "int4": 0.90,
}
TARGETS = ("onnxruntime", "openvino")

# A step rewrites graph file ``src`` into ``dst`` and returns (modified, details).
Step = Callable[[Path, Path], tuple[bool, dict[str, Any]]]


@dataclasses.dataclass
class TransformResult:
    path: Path
    passes: list[dict[str, Any]]
    report: ParityReport | None


def ir_step(
    make_pass: Callable[[], ir.passes.PassBase],
    details: Callable | None = None,
    must_load: bool = False,
) -> Step:
    """A step running one onnx-ir pass. With ``must_load``, a rewritten graph onnxruntime
    refuses to load is dropped for the graph as it was, and the reason recorded. Seen on
    a cross-attention decoder (vision-encoder-decoder): the fusions leave a rank-2 shape
    annotation on a rank-3 value, and onnxruntime's own extended optimizations then build
    a Gemm on it that fails its shape check. An unfused graph that runs beats a fused one
    that does not."""

    def step(src: Path, dst: Path) -> tuple[bool, dict[str, Any]]:
        model = ir.load(src)
        graph_pass = make_pass()
        result = graph_pass(model)
        ir.save(result.model, dst)
        info = details(graph_pass) if details else {}
        if must_load:  # the fusions pre-optimize the graph even when none fires
            refused = onnxruntime_refuses(dst)
            if refused:
                logger.warning(
                    "Keeping %s unfused: onnxruntime rejects the result (%s)", src.name, refused
                )
                shutil.copy2(src, dst)
                return False, {**info, "skipped": f"onnxruntime rejects the result: {refused}"}
        return result.modified, info

    return step


def settle_external_data(staging: Path, scratch: Path, graph: GraphSpec) -> str | None:
    """Give a rewritten graph's weights the graph's own data file name (``<file>_data``).

    A step leaves the weights it did not touch where they were (onnx-ir keeps a loaded
    graph's external tensors as references to the source's data file), or writes a data
    file of its own under its scratch name (onnxruntime's quantizer): the old file is
    deleted only when the new graph no longer reads it, and a new one is renamed, with the
    graph's references, to the name every export uses. Returns that name (None: no
    external data)."""
    proto = onnx.load(scratch, load_external_data=False)
    external = [
        entry
        for tensor in proto.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    ]
    locations = {entry.value for entry in external}
    if graph.external_data and graph.external_data not in locations:
        (staging / graph.external_data).unlink(missing_ok=True)
    if not locations:
        return None
    final = f"{graph.file}_data"
    if locations != {final}:
        if len(locations) > 1:
            raise PassError(f"{scratch.name} reads its weights from several files: {locations}.")
        (staging / locations.pop()).replace(staging / final)
        for entry in external:
            entry.value = final
        onnx.save(proto, scratch)  # the graph only: its data stays where it now is
    return final


def onnxruntime_refuses(path: Path) -> str | None:
    """Why onnxruntime cannot load the graph at ``path`` with its default (all)
    optimizations, as sessions load it (None: it loads)."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        return str(e).strip().splitlines()[0][:300]
    return None


def copy_source(src: ExportDirectory, staging: Path) -> None:
    for name in [*src.manifest.files, MANIFEST_NAME]:
        shutil.copy2(src.path / name, staging / name)


def run_steps(
    src_dir: str | Path,
    dst_dir: str | Path,
    steps: Sequence[tuple[str, str, Step]],
    target: str | None,
    runtimes: Sequence[str] | None,
    allow_budget_break: bool,
    overwrite: bool,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    src = ExportDirectory(src_dir)
    dst = Path(dst_dir)
    check_source(src, dst)
    check_output_path(dst, overwrite)
    if reference is None:  # the eager model, loaded once for every check
        reference = load_reference(src)
    with staging_directory(dst) as staging:
        copy_source(src, staging)
        directory = ExportDirectory(staging)
        manifest = directory.manifest
        for name, precision, step in steps:
            start = time.perf_counter()
            logger.info("Pass %s", name)
            # A step rewrites every graph of the export (encoder and decoder, both towers).
            modified, details = False, {}
            for index, graph in enumerate(manifest.graphs):
                current = staging / graph.file
                scratch = staging / f".{name}.{graph.name}.onnx"
                with quiet_onnxruntime_tools():
                    graph_modified, graph_details = step(current, scratch)
                carry_scopes(current, scratch)  # new nodes keep mapping to their modules
                external = settle_external_data(staging, scratch, graph)
                scratch.replace(current)
                manifest.graphs[index] = GraphSpec.from_ir(
                    graph.name, graph.file, ir.load(current), external
                )
                modified |= graph_modified
                if graph_details.get("kv_cache") and manifest.kv_cache:  # a new cache contract
                    manifest.kv_cache = {**manifest.kv_cache, **graph_details.pop("kv_cache")}
                if len(manifest.graphs) == 1:
                    details = graph_details
                else:
                    details.setdefault("graphs", {})[graph.name] = graph_details
            if target:  # fused or quantized graphs run on onnxruntime only
                manifest.target = target
            cosine = BUDGETS[precision]
            if cosine is not None:
                manifest.tolerance = {**manifest.tolerance, "min_cosine": cosine}
            if precision == "int4":
                # Judged against eager with the graph's own int4 weights, the float distance
                # reported beside it (validators/quantized.py): on a real 135M model, int4's
                # own error takes KV vectors below any fixed cosine whoever quantizes it.
                manifest.tolerance = {**manifest.tolerance, "reference": INT4_REFERENCE}
            manifest.write(staging)
            check = validate_export(
                ExportDirectory(staging), ["onnxruntime"], reference_model=reference
            )
            if localize and not check.passed:  # say which module the pass broke
                check = validate_export(
                    ExportDirectory(staging),
                    ["onnxruntime"],
                    reference_model=reference,
                    localize=True,
                )
            record = {
                "name": name,
                "modified": modified,
                "seconds": round(time.perf_counter() - start, 3),
                "budget": (
                    {"min_cosine": cosine}
                    if cosine
                    else {"atol": check.atol, "norm_tol": check.norm_tol}
                ),
                "parity": {"passed": check.passed, **check.summary()["worst"]},
                **details,
            }
            manifest.passes.append(record)
            manifest.write(staging)
            if not check.passed:
                message = (
                    f"Pass {name} broke its budget (passes before it: "
                    f"{', '.join(p['name'] for p in manifest.passes[:-1]) or 'none'}): "
                    + "; ".join(check.failures()[:3])
                )
                if not allow_budget_break:
                    raise ParityError(message + ".", check)
                logger.warning("%s (continuing: budget breaks allowed)", message)
        write_genai_config(staging, manifest)  # the cache contract may have changed (-O 2)
        manifest.files = sorted(
            p.name
            for p in staging.iterdir()
            if p.is_file() and p.name not in (MANIFEST_NAME, "parity.json")
        )
        manifest.write(staging)
        names = parse_runtimes(runtimes or default_runtimes(manifest))
        report = validate_export(
            ExportDirectory(staging), names, reference_model=reference, localize=localize
        )
        report.export_dir = str(dst)
        place(staging, dst, manifest, report)
    check_budget(report, dst, f"its budget on {', '.join(names)}", allow_budget_break)
    return TransformResult(dst, manifest.passes, report)


def place(staging: Path, dst: Path, manifest: Manifest, report: ParityReport) -> None:
    """Record the final report in the manifest and parity.json, then move DST in place."""
    manifest.validation = report.summary()
    report.write(staging / "parity.json")
    manifest.write(staging)
    move_into_place(staging, dst)


def check_budget(report: ParityReport, dst: Path, budget: str, allow_break: bool) -> None:
    if not report.passed and not allow_break:
        raise ParityError(
            f"{dst} does not meet {budget}: " + "; ".join(report.failures()[:3]) + ".", report
        )


def check_source(src: ExportDirectory, dst: Path, openvino_reads: bool = False) -> None:
    """SRC must be a format the graph passes rewrite or, with ``openvino_reads`` (a pass
    that works on OpenVINO's model), one that OpenVINO runs."""
    fmt = get_format(src.manifest.format)
    on_openvino = "openvino" in fmt.runtimes
    if not (fmt.takes_passes or (openvino_reads and on_openvino)):
        modes = "quantize --mode openvino-int8-weight or openvino-int4-weight"
        ir = f"; IR exports take {modes}." if on_openvino else "."
        raise UsageError(
            f"Graph passes work on ONNX exports; {src.path} is {src.manifest.format}. Export "
            "with --format onnx, optimize or quantize, then convert" + ir
        )
    if dst.resolve() == src.path.resolve():
        raise UsageError("DST must differ from SRC: SRC stays untouched.")

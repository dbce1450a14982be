"""Optimization and quantization pipelines over export directories, every pass checked.

``optimize_export`` and ``quantize_export`` copy SRC into a staging directory beside DST,
run their passes one by one on the graph, check parity against the eager model after
each pass with the pass's budget, record every pass in the manifest, validate the result
on its runtimes and move it into place. SRC is never modified. A pass that breaks its
budget fails the command (``allow_budget_break`` keeps going and records it).

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
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from graphport.errors import ParityError, PassError, UsageError
from graphport.export.genai_config import GENAI_CONFIG, write_genai_config
from graphport.export.openvino import genai_files
from graphport.export.openvino_quantize import compress_weights, quantize_static
from graphport.formats import get_format
from graphport.graphs import DEFAULT_INT4_METHOD, QUANT_MODES
from graphport.graphs.cleanup import CleanupPass
from graphport.graphs.fusion import OrtCpuKernelsPass, OrtFusionPass, PackAttentionPass
from graphport.graphs.gqa import FAMILIES, GroupQueryAttentionPass
from graphport.graphs.outliers import SplitOutliersPass, feed_forward_blocks
from graphport.graphs.quantize import (
    FeedReader,
    quantize_int4_weights,
    quantize_int8_dynamic,
    quantize_int8_dynamic_to_target,
    quantize_int8_static,
    quiet_onnxruntime_tools,
)
from graphport.graphs.scopes import carry_scopes
from graphport.graphs.smooth import SmoothActivationsPass, activation_ranges, smoothable
from graphport.manifest import (
    MANIFEST_NAME,
    ExportDirectory,
    GraphSpec,
    Manifest,
    check_output_path,
    move_into_place,
    staging_directory,
)
from graphport.models.rotary import attention_shape
from graphport.runtimes import default_runtimes, parse_runtimes
from graphport.runtimes.predict import prepare_inputs
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


def _ir_step(
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
            refused = _onnxruntime_refuses(dst)
            if refused:
                logger.warning(
                    "Keeping %s unfused: onnxruntime rejects the result (%s)", src.name, refused
                )
                shutil.copy2(src, dst)
                return False, {**info, "skipped": f"onnxruntime rejects the result: {refused}"}
        return result.modified, info

    return step


def _settle_external_data(staging: Path, scratch: Path, graph: GraphSpec) -> str | None:
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


def _onnxruntime_refuses(path: Path) -> str | None:
    """Why onnxruntime cannot load the graph at ``path`` with its default (all)
    optimizations, as sessions load it (None: it loads)."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        return str(e).strip().splitlines()[0][:300]
    return None


def _ort_offline_step(src: Path, dst: Path) -> tuple[bool, dict[str, Any]]:
    """onnxruntime's full graph optimizations applied once and saved (O3)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return True, {"level": "extended"}


def _copy_source(src: ExportDirectory, staging: Path) -> None:
    for name in [*src.manifest.files, MANIFEST_NAME]:
        shutil.copy2(src.path / name, staging / name)


def _run(
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
    _check_source(src, dst)
    check_output_path(dst, overwrite)
    if reference is None:  # the eager model, loaded once for every check
        reference = load_reference(src)
    with staging_directory(dst) as staging:
        _copy_source(src, staging)
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
                external = _settle_external_data(staging, scratch, graph)
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
        _place(staging, dst, manifest, report)
    _check_budget(report, dst, f"its budget on {', '.join(names)}", allow_budget_break)
    return TransformResult(dst, manifest.passes, report)


def _place(staging: Path, dst: Path, manifest: Manifest, report: ParityReport) -> None:
    """Record the final report in the manifest and parity.json, then move DST in place."""
    manifest.validation = report.summary()
    report.write(staging / "parity.json")
    manifest.write(staging)
    move_into_place(staging, dst)


def _check_budget(report: ParityReport, dst: Path, budget: str, allow_break: bool) -> None:
    if not report.passed and not allow_break:
        raise ParityError(
            f"{dst} does not meet {budget}: " + "; ".join(report.failures()[:3]) + ".", report
        )


def optimize_export(
    src: str | Path,
    dst: str | Path,
    level: int = 2,
    target: str = "onnxruntime",
    runtimes: Sequence[str] | None = None,
    allow_budget_break: bool = False,
    overwrite: bool = False,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    """O1: cleanup. O2: + onnxruntime fusions, then fused attention packed for the int8
    quantizer and the raw-mask kernels, and the fused norms and GELUs that onnxruntime's
    CPU provider runs slower traded back (onnxruntime target only; OpenVINO fuses at
    compile time itself). O3: + onnxruntime's extended optimizations saved offline.
    ``reference`` is the eager model every pass is checked against (default: loaded from
    the source checkpoint; ``export_model`` hands over the one it traced)."""
    if level not in (1, 2, 3):
        raise UsageError(f"Optimization level {level} does not exist; use 1, 2 or 3.")
    if target not in TARGETS:
        raise UsageError(f"Unknown target {target!r}; use one of {', '.join(TARGETS)}.")
    family = ExportDirectory(src).manifest.family
    steps: list[tuple[str, str, Step]] = [("cleanup", "fp32", _ir_step(CleanupPass))]
    if target == "onnxruntime" and level >= 2:
        gqa = _gqa_step(ExportDirectory(src))
        if gqa is not None:  # before the fusions, while every node carries its scope
            steps.append(("group-query-attention", "fp32", gqa))
        steps.append(
            (
                "ort-fusion",
                "fp32",
                _ir_step(
                    lambda: OrtFusionPass(family),
                    lambda p: {"fusions": p.report.to_dict()},
                    must_load=True,
                ),
            )
        )
        steps.append(
            (
                "pack-attention",
                "fp32",
                _ir_step(lambda: PackAttentionPass(family), lambda p: {"attention": p.counts}),
            )
        )
        steps.append(
            (
                "ort-cpu-kernels",
                "fp32",
                _ir_step(OrtCpuKernelsPass, lambda p: {"rewrites": p.counts}),
            )
        )
    if target == "onnxruntime" and level >= 3:
        steps.append(("ort-offline", "fp32", _ort_offline_step))
    return _run(
        src,
        dst,
        steps,
        "onnxruntime" if len(steps) > 1 else None,
        runtimes,
        allow_budget_break,
        overwrite,
        localize,
        reference,
    )


def _gqa_step(src: ExportDirectory) -> Step | None:
    """The GroupQueryAttention rewrite of a Llama-layout decoder with a KV cache that
    keeps every position (graphs/gqa.py), or None where it does not apply."""
    from transformers import AutoConfig

    manifest = src.manifest
    contract = manifest.kv_cache or {}
    windows = [layer.get("sliding_window") for layer in contract.get("layers") or []]
    if manifest.family not in FAMILIES or not contract or any(windows):
        return None
    if manifest.task != "text-generation" or len(manifest.graphs) != 1:
        return None
    shape = attention_shape(AutoConfig.from_pretrained(src.path, local_files_only=True))
    if shape is None:
        return None

    def details(p: GroupQueryAttentionPass) -> dict[str, Any]:
        info: dict[str, Any] = {
            "layers": len(p.layers),
            "skipped": {str(k): v for k, v in p.skipped.items()},
        }
        if p.shared_buffer:  # the runtime may bind one buffer as past and present
            info["kv_cache"] = {"shared_buffer": True, "max_length": len(shape.cos)}
        return info

    return _ir_step(lambda: GroupQueryAttentionPass(shape), details, must_load=True)


def quantize_export(
    src: str | Path,
    dst: str | Path,
    mode: str,
    calibration: str | Path | None = None,
    block_size: int = 32,
    method: str = DEFAULT_INT4_METHOD,
    runtimes: Sequence[str] | None = None,
    allow_budget_break: bool = False,
    overwrite: bool = False,
    target_cosine: float | None = None,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    """int8-dynamic, int8-static (QDQ, needs --calibration) or int4-weight (MatMulNBits)
    for onnxruntime; openvino-int8-static (needs --calibration), openvino-int8-weight and
    openvino-int4-weight (NNCF, IR) for OpenVINO.
    With calibration data, int8-dynamic first computes the outlier channels of
    feed-forward activations in a small fp32 side path (graphs/outliers.py) and smooths
    the remaining activation outliers into the weights (graphs/smooth.py); given
    ``target_cosine``, it then keeps the most sensitive nodes in fp32 until its outputs
    on the calibration inputs reach that cosine. ``localize`` adds every module's error
    against fp32 eager to the report: where the quantization error accumulates.
    ``reference``: the eager model to check against, as in ``optimize_export``."""
    if mode not in QUANT_MODES:
        raise UsageError(f"Unknown mode {mode!r}; use one of {', '.join(QUANT_MODES)}.")
    if mode == "openvino-int8-static":
        if calibration is None:
            raise UsageError(f"{mode} needs calibration inputs; pass --calibration FILE.")
        return quantize_openvino_static(
            src, dst, calibration, allow_budget_break, overwrite, localize, reference
        )
    if mode.startswith("openvino-"):
        bits = 8 if mode == "openvino-int8-weight" else 4
        return compress_openvino_export(
            src, dst, bits, block_size, allow_budget_break, overwrite, localize, reference
        )
    if target_cosine is not None:
        if mode != "int8-dynamic" or calibration is None:
            raise UsageError("A target cosine needs --mode int8-dynamic and --calibration.")
        if not 0.0 < target_cosine < 1.0:
            raise UsageError(f"The target cosine must lie between 0 and 1, not {target_cosine}.")
    reader = FeedReader(calibration_feeds(src, calibration)) if calibration else None
    if mode == "int8-dynamic":
        steps = [("int8-dynamic", "int8", lambda s, d: (True, quantize_int8_dynamic(s, d)))]
        if reader is not None:  # data to measure activations with: tame their outliers
            feeds = list(reader)
            steps[:0] = [
                ("split-outliers", "fp32", _split_step(feeds)),
                ("smooth-activations", "fp32", _smooth_step(feeds)),
            ]
            if target_cosine is not None:
                steps[-1] = (
                    "int8-dynamic",
                    "int8",
                    lambda s, d: (
                        True,
                        quantize_int8_dynamic_to_target(s, d, feeds, target_cosine),
                    ),
                )
    elif mode == "int8-static":
        if reader is None:
            raise UsageError("int8-static needs calibration inputs; pass --calibration FILE.")
        steps = [("int8-static", "int8", lambda s, d: (True, quantize_int8_static(s, d, reader)))]
    else:
        steps = [
            (
                "int4-weight",
                "int4",
                lambda s, d: (True, quantize_int4_weights(s, d, block_size, method, reader)),
            )
        ]
    return _run(
        src, dst, steps, "onnxruntime", runtimes, allow_budget_break, overwrite, localize, reference
    )


def _split_step(feeds: list[dict]) -> Step:
    def step(src: Path, dst: Path) -> tuple[bool, dict[str, Any]]:
        model = ir.load(src)
        names = [b["act"].outputs[0].name for b in feed_forward_blocks(model.graph)]
        graph_pass = SplitOutliersPass(activation_ranges(src, feeds, names))
        result = graph_pass(model)
        ir.save(result.model, dst)
        details = {
            "ratio": graph_pass.ratio,
            "blocks": len(names),
            "split_channels": sum(graph_pass.split.values()),
            "split_blocks": len(graph_pass.split),
        }
        return result.modified, details

    return step


def _smooth_step(feeds: list[dict]) -> Step:
    def step(src: Path, dst: Path) -> tuple[bool, dict[str, Any]]:
        model = ir.load(src)
        ranges = activation_ranges(src, feeds, list(smoothable(model.graph)))
        graph_pass = SmoothActivationsPass(ranges)
        result = graph_pass(model)
        ir.save(result.model, dst)
        details = {
            "alpha": graph_pass.alpha,
            "calibration_samples": len(feeds),
            "smoothed": len(graph_pass.smoothed),
        }
        return result.modified, details

    return step


def compress_openvino_export(
    src_dir: str | Path,
    dst_dir: str | Path,
    bits: int = 8,
    group_size: int = 64,
    allow_budget_break: bool = False,
    overwrite: bool = False,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    """An OpenVINO IR export of SRC with NNCF-compressed weights, checked on OpenVINO
    against eager with the int8 / int4 budget."""
    logger.info("Compressing the weights to int%d for OpenVINO", bits)
    return _openvino_export(
        src_dir,
        dst_dir,
        f"openvino-int{bits}-weight",
        "int8" if bits == 8 else "int4",
        lambda onnx_path, xml_path: compress_weights(onnx_path, xml_path, bits, group_size),
        allow_budget_break,
        overwrite,
        localize,
        reference,
    )


def quantize_openvino_static(
    src_dir: str | Path,
    dst_dir: str | Path,
    calibration: str | Path,
    allow_budget_break: bool = False,
    overwrite: bool = False,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    """Static int8 for OpenVINO: split-outliers and smooth-activations on the ONNX graph
    (checked on onnxruntime like every fp32 pass), then NNCF's post-training
    quantization calibrated on the same inputs, saved as IR and checked on OpenVINO.

    The outlier passes find single-node GELUs in fused graphs: quantize an ``-O2``
    export (OpenVINO reads the com.microsoft operators it uses).
    """
    src = ExportDirectory(src_dir)
    dst = Path(dst_dir)
    _check_source(src, dst)
    check_output_path(dst, overwrite)
    if len(src.manifest.graphs) != 1:
        raise UsageError("openvino-int8-static quantizes single-graph exports only.")
    feeds = calibration_feeds(src.path, calibration)
    if reference is None:  # one eager model for the ONNX passes and the IR's check
        reference = load_reference(src)
    steps = [
        ("split-outliers", "fp32", _split_step(feeds)),
        ("smooth-activations", "fp32", _smooth_step(feeds)),
    ]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.", dir=dst.parent) as scratch:
        prepared = Path(scratch) / "prepared"
        _run(
            src.path,
            prepared,
            steps,
            None,
            ["onnxruntime"],
            allow_budget_break,
            False,
            reference=reference,
        )
        logger.info("Quantizing weights and activations to int8 for OpenVINO")
        return _openvino_export(
            prepared,
            dst,
            "openvino-int8-static",
            "int8",
            lambda onnx_path, xml_path: quantize_static(onnx_path, xml_path, feeds),
            allow_budget_break,
            overwrite,
            localize,
            reference,
        )


def _openvino_export(
    src_dir: str | Path,
    dst_dir: str | Path,
    name: str,
    precision: str,
    convert: Callable[[Path, Path], dict[str, Any]],
    allow_budget_break: bool,
    overwrite: bool,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    """SRC's graphs converted to IR by ``convert(onnx, xml)``, checked on OpenVINO
    against eager with the budget of ``precision``; SRC's passes are kept."""
    src = ExportDirectory(src_dir)
    dst = Path(dst_dir)
    # Weight compression reads IR as well (NNCF works on OpenVINO's model).
    _check_source(src, dst, openvino_reads=name.endswith("-weight"))
    check_output_path(dst, overwrite)
    if reference is None:
        reference = load_reference(src)
    manifest = Manifest.from_dict(src.manifest.to_dict())
    graph_files = {g.file for g in manifest.graphs} | {
        g.external_data for g in manifest.graphs if g.external_data
    }
    with staging_directory(dst) as staging:
        for file in manifest.files:
            if file not in graph_files and file not in ("parity.json", GENAI_CONFIG):
                shutil.copy2(src.path / file, staging / file)
        start = time.perf_counter()
        for graph in manifest.graphs:
            details = convert(src.path / graph.file, staging / f"{graph.name}.xml")
            # A decoder's IR is stateful, in openvino-genai's layout (export/openvino.py).
            graph.file = details.get("file", f"{graph.name}.xml")
            graph.external_data = str(Path(graph.file).with_suffix(".bin"))
        genai_files(staging)
        cosine = BUDGETS[precision]
        manifest.format, manifest.target = "openvino", "openvino"
        manifest.tolerance = {**manifest.tolerance, "min_cosine": cosine}
        if precision == "int4":  # against its own int4 weights, as the ONNX int4 pass
            manifest.tolerance["reference"] = INT4_REFERENCE
        manifest.files = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest.write(staging)
        report = validate_export(
            ExportDirectory(staging), ["openvino"], reference_model=reference, localize=localize
        )
        report.export_dir = str(dst)
        manifest.passes.append(
            {
                "name": name,
                "modified": True,
                "seconds": round(time.perf_counter() - start, 3),
                "budget": {"min_cosine": cosine},
                "parity": {"passed": report.passed, **report.summary()["worst"]},
                **details,
            }
        )
        _place(staging, dst, manifest, report)
    _check_budget(report, dst, f"the {precision} budget on OpenVINO", allow_budget_break)
    return TransformResult(dst, manifest.passes, report)


def _check_source(src: ExportDirectory, dst: Path, openvino_reads: bool = False) -> None:
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


def calibration_feeds(export_dir: str | Path, calibration: str | Path) -> list[dict]:
    """Feeds from a text file (one sentence per line) or a directory of images."""
    path = Path(calibration)
    if not path.exists():
        raise UsageError(f"Calibration data {path} does not exist.")
    directory = ExportDirectory(export_dir)
    if len(directory.manifest.graphs) > 1:
        raise UsageError(
            f"Calibration inputs feed single-graph exports, and {directory.path} has "
            f"{len(directory.manifest.graphs)} graphs "
            f"({', '.join(g.name for g in directory.manifest.graphs)}); quantize it without "
            "--calibration (int8-dynamic, or int4-weight with rtn or hqq)."
        )
    if path.is_dir():
        items = sorted(str(p) for p in path.iterdir() if p.is_file())
    else:
        items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        items = [line for line in items if line]
    if not items:
        raise UsageError(f"Calibration data {path} is empty.")
    return [prepare_inputs(directory, [item])[0] for item in items]

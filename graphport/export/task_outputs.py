"""Which outputs a graph exports for each task, where the export config does not declare
them: read off the eager head's output by name.

The names are the fields of the ``ModelOutput`` the head returns that the task's
post-processing reads (the transformers pipeline's, or the image processor's
``post_process_*``). A task lists the name sets its heads use, most common first; the
first set the eager output holds in full is exported. Where none is held, every tensor
the head returns is, but hidden states, attentions, caches and the loss (outputs no
post-processing reads, which only make the graph larger and its parity check noisier).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from graphport.export.tasks import Task

TASK_OUTPUTS: dict[Task, tuple[tuple[str, ...], ...]] = {
    Task.OBJECT_DETECTION: (("logits", "pred_boxes"),),
    Task.DEPTH_ESTIMATION: (("predicted_depth",),),
    Task.ZERO_SHOT_IMAGE_CLASSIFICATION: (("logits_per_image", "logits_per_text"),),
    Task.INSTANCE_SEGMENTATION: (
        ("class_queries_logits", "masks_queries_logits"),
        ("logits", "pred_boxes", "pred_masks"),
    ),
    Task.PANOPTIC_SEGMENTATION: (("logits", "pred_boxes", "pred_masks"),),
    Task.UNIVERSAL_SEGMENTATION: (
        ("class_queries_logits", "masks_queries_logits"),
        ("logits", "pred_boxes", "pred_masks"),
    ),
    Task.MASK_GENERATION: (("iou_scores", "pred_masks"),),
    Task.ZERO_SHOT_OBJECT_DETECTION: (("logits", "pred_boxes"),),
    Task.KEYPOINT_DETECTION: (("keypoints", "scores", "descriptors", "mask"),),
    Task.IMAGE_TO_IMAGE: (("reconstruction",),),
    Task.TEXT_TO_AUDIO: (("waveform",),),
    Task.TEXT_TO_SPECTROGRAM: (("spectrogram",),),
    Task.AUDIO_XVECTOR: (("logits", "embeddings"),),
    Task.AUDIO_FRAME_CLASSIFICATION: (("logits",),),
    Task.MASKED_IM: (("reconstruction",),),
    Task.TIME_SERIES_FORECASTING: (("mean_predictions", "full_predictions"),),
    Task.REINFORCEMENT_LEARNING: (("state_preds", "action_preds", "return_preds"),),
}

# Output names (or their prefixes, before a ``.``) no post-processing reads.
AUXILIARY = ("loss", "hidden_states", "attentions", "past_key_values", "cross_attentions")


def _auxiliary(name: str) -> bool:
    head = name.split(".")[0]
    return head in AUXILIARY or head.endswith(("_hidden_states", "_attentions"))


def default_output_names(task: Task) -> tuple[str, ...]:
    """The outputs ``task`` usually exports, before an eager run says which it returns."""
    sets = TASK_OUTPUTS.get(task)
    return sets[0] if sets else ("logits",)


def task_output_names(task: Task, returned: Iterable[str]) -> list[str] | None:
    """The outputs to export for ``task`` from the names an eager run returned, in the order
    of the task's name set; None where the task lists no set (its config declares them)."""
    names = list(returned)
    sets = TASK_OUTPUTS.get(task)
    if sets is None:
        return None
    for wanted in sets:
        if set(wanted) <= set(names):
            return list(wanted)
    return [n for n in names if not _auxiliary(n)] or names[:1]


def eager_output_classes(model_type: str, task: str) -> tuple[type, ...]:
    """The ``ModelOutput`` classes the eager head of ``task`` for ``model_type`` returns, as
    its ``forward`` annotates them (``-> XOutput`` or ``-> tuple | XOutput``); empty where
    the task or head is unknown or unannotated."""
    import typing

    import transformers
    from transformers.utils import ModelOutput

    try:
        name = Task(task).model_class_name(model_type)
        head = getattr(transformers, name) if name else None
        hints = typing.get_type_hints(head.forward) if head is not None else {}
    except Exception:  # an unknown task, or an annotation that does not resolve
        return ()
    returned = hints.get("return")
    members = typing.get_args(returned) or (returned,)
    return tuple(m for m in members if isinstance(m, type) and issubclass(m, ModelOutput))


def output_axes(
    names: Sequence[str],
    first: tuple[Any, Mapping[str, Any]],
    second: tuple[Any, Mapping[str, Any]],
    preference: Sequence[str],
) -> dict[str, dict[int, str]]:
    """Each output axis named after the input axis it follows across two runs (``(shape
    set, tensors)`` each), the first of ``preference`` whose sizes match; an axis that
    changes another way gets a name of its own, one that does not change is static."""
    (shapes_a, tensors_a), (shapes_b, tensors_b) = first, second
    outputs: dict[str, dict[int, str]] = {}
    for name in names:
        axes: dict[int, str] = {}
        for axis, (a, b) in enumerate(
            zip(tensors_a[name].shape, tensors_b[name].shape, strict=False)
        ):
            if a == b:
                continue
            follows = [n for n in preference if (shapes_a.sizes[n], shapes_b.sizes[n]) == (a, b)]
            axes[axis] = follows[0] if follows else f"{name}_{axis}"
        outputs[name] = axes
    return outputs

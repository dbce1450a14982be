"""One evaluator per task for ``graphport evaluate``, registered by task name.

An evaluator turns the data into model-ready batches once (shared by eager and every
export), gathers from a model's output what its metrics need (``gather``), prepares
eager's share once per batch (``reference``), accumulates per model (``score``) and
turns the sums into metric values (``finish``). The metric arithmetic itself is in
graphport/validators/task_metrics.py. Models are called as transformers models (eager,
or ``graphport.load``'s runtime model) with torch tensors; what comes back is numpy.

Rules:

1. Causal LMs: the text is tokenized as one stream and cut into fixed-length windows
   (stride = window), each run from an empty past, teacher-forced: every position but a
   window's last predicts the next token. Perplexity per model; KL(eager || export) and
   top-1 agreement of each position's distribution with eager's.
2. Classification (text): accuracy and macro-F1 against a ``label`` column (ids, or
   names from the config's ``label2id``), else agreement with eager.
3. Feature extraction: masked mean-pooled embeddings, cosine to eager; with sentence
   pairs (``sentence1``, ``sentence2``, ``score``) also the Spearman correlation of each
   model's pair cosines with the scores.
4. Fill-mask: 15 % of each text's tokens masked (seeded); accuracy at restoring them,
   top-1 and top-5 agreement with eager's predictions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from graphport.api.evaluate_data import EvalData
from graphport.errors import UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes.generate import max_positions
from graphport.validators import task_metrics as tm
from graphport.validators.evaluation import Metric

Batch = dict[str, Any]
EVALUATORS: dict[str, type[TaskEvaluator]] = {}
# Logits held per batch (eager's, its probabilities and an export's): keep each under this.
LOGITS_BYTES = 256 * 2**20


def register(*tasks: str) -> Callable[[type[TaskEvaluator]], type[TaskEvaluator]]:
    def add(cls: type[TaskEvaluator]) -> type[TaskEvaluator]:
        for task in tasks:
            EVALUATORS[task] = cls
        return cls

    return add


def call(model: Any, inputs: Mapping[str, np.ndarray], **flags: Any) -> Any:
    """``model(**inputs)`` with torch tensors and no autograd."""
    import torch

    with torch.inference_mode():
        return model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}, **flags)


def numpy(tensor: Any) -> np.ndarray:
    import torch

    return (tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor).numpy()


class TaskEvaluator(abc.ABC):
    """The metrics of one task (see the module docstring)."""

    def __init__(
        self,
        directory: ExportDirectory,
        data: EvalData,
        tokenizer: Any,
        limit: int | None,
        window: int,
        batch_size: int,
    ) -> None:
        self.directory, self.data, self.tokenizer = directory, data, tokenizer
        self.limit, self.window, self.batch_size = limit, window, batch_size
        self.task = directory.manifest.task
        self.metrics: list[Metric] = []
        self.examples = 0
        self.tokens: int | None = None

    @abc.abstractmethod
    def batches(self) -> Iterator[Batch]: ...

    @abc.abstractmethod
    def gather(self, model: Any, batch: Batch) -> Any: ...

    def reference(self, gathered: Any, batch: Batch) -> Any:
        return gathered

    @abc.abstractmethod
    def score(self, sums: dict[str, Any], out: Any, ref: Any, batch: Batch) -> None: ...

    @abc.abstractmethod
    def finish(self, sums: dict[str, Any]) -> dict[str, float]: ...

    def max_length(self) -> int:
        limits = [self.window, getattr(self.tokenizer, "model_max_length", None)]
        limits.append(max_positions(self.directory))
        return min(int(n) for n in limits if n and n < 10**9)

    def texts(self) -> list[str]:
        texts = self.data.text_column(self.task)
        return texts[: self.limit] if self.limit else texts

    def encode(self, texts: list[str], pairs: list[str] | None = None, **extra: Any) -> Batch:
        encoded = self.tokenizer(
            texts,
            pairs,
            padding=True,
            truncation=True,
            max_length=self.max_length(),
            return_tensors="np",
            **extra,
        )
        return {k: np.asarray(v) for k, v in encoded.items()}

    def model_inputs(self, batch: Batch) -> dict[str, np.ndarray]:
        names = ("input_ids", "attention_mask", "token_type_ids")
        return {k: batch[k] for k in names if k in batch}


@register("text-generation")
class CausalLMEvaluator(TaskEvaluator):
    """Rule 1: perplexity, KL(eager || export), top-1 agreement, over fixed windows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = [
            Metric("perplexity", higher_is_better=False),
            Metric("kl", higher_is_better=False, against_eager=True),
            Metric("top1_agreement", against_eager=True),
        ]
        text = "\n\n".join(self.data.text_column(self.task))
        if self.limit:
            text = text[: 16 * self.limit]  # no token is 16 characters: enough text to cut
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.limit]
        window = min(self.window, max_positions(self.directory) or self.window)
        self.rows = [ids[i : i + window] for i in range(0, len(ids), window)]
        self.rows = [row for row in self.rows if len(row) > 1]
        if not self.rows:
            raise UsageError(
                f"{self.data.name} has {len(ids)} tokens for this tokenizer; perplexity needs "
                "at least 2; pass more text."
            )
        self.examples = len(self.rows)
        self.tokens = sum(len(row) for row in self.rows)
        vocab = int(getattr(self.directory_config(), "vocab_size", 0) or 50_000)
        self.per_batch = max(1, min(self.batch_size, LOGITS_BYTES // (window * vocab * 4)))

    def directory_config(self) -> Any:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.directory.path, local_files_only=True)

    def batches(self) -> Iterator[Batch]:
        i = 0
        while i < len(self.rows):
            # Full windows together; the shorter last one on its own.
            length = len(self.rows[i])
            group = [r for r in self.rows[i : i + self.per_batch] if len(r) == length]
            i += len(group)
            ids = np.asarray(group, dtype=np.int64)
            yield {"input_ids": ids, "targets": ids[:, 1:].reshape(-1), "tokens": ids.size}

    def gather(self, model: Any, batch: Batch) -> np.ndarray:
        logits = numpy(call(model, {"input_ids": batch["input_ids"]}, use_cache=False).logits)
        return logits[:, :-1].reshape(-1, logits.shape[-1])

    def reference(self, gathered: np.ndarray, batch: Batch) -> dict[str, np.ndarray]:
        lse, probs = tm.log_sum_exp(gathered)
        return {"logits": gathered, "lse": lse, "probs": probs, "top1": gathered.argmax(-1)}

    def score(self, sums: dict[str, Any], out: np.ndarray, ref: Any, batch: Batch) -> None:
        lse = ref["lse"] if out is ref["logits"] else tm.log_sum_exp(out, probabilities=False)[0]
        nll = tm.token_nll(out, lse, batch["targets"])
        kl = tm.kl_divergence(ref["logits"], ref["lse"], ref["probs"], out, lse)
        sums["nll"] = sums.get("nll", 0.0) + float(nll.sum())
        sums["kl"] = sums.get("kl", 0.0) + float(kl.sum())
        sums["agree"] = sums.get("agree", 0) + int((out.argmax(-1) == ref["top1"]).sum())
        sums["count"] = sums.get("count", 0) + len(nll)

    def finish(self, sums: dict[str, Any]) -> dict[str, float]:
        count = sums.get("count", 0)
        return {
            "perplexity": tm.perplexity(sums.get("nll", 0.0), count),
            "kl": sums.get("kl", 0.0) / count if count else float("nan"),
            "top1_agreement": sums.get("agree", 0) / count if count else float("nan"),
        }


@register("text-classification")
class TextClassificationEvaluator(TaskEvaluator):
    """Rule 2: accuracy and macro-F1 with labels, else agreement with eager."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.directory.path, local_files_only=True)
        self.classes = list(range(int(config.num_labels)))
        self.pairs = not self.data.has("text") and self.data.has("sentence1", "sentence2")
        if self.pairs:
            first = [str(v) for v in self.data.columns["sentence1"]]
            second = [str(v) for v in self.data.columns["sentence2"]]
            self.inputs: list[Any] = list(zip(first, second, strict=True))
        else:
            self.inputs = self.data.text_column(self.task)
        self.inputs = self.inputs[: self.limit] if self.limit else self.inputs
        self.labels = None
        if self.data.has("label"):
            raw = self.data.columns["label"][: len(self.inputs)]
            self.labels = np.asarray(_label_ids(raw, config, self.data.name), dtype=np.int64)
        self.metrics = [Metric("agreement", against_eager=True)]
        if self.labels is not None:
            self.metrics[:0] = [Metric("accuracy"), Metric("macro_f1")]
        self.examples = len(self.inputs)

    def batches(self) -> Iterator[Batch]:
        for i in range(0, len(self.inputs), self.batch_size):
            chunk = self.inputs[i : i + self.batch_size]
            if self.pairs:
                batch = self.encode([a for a, _ in chunk], [b for _, b in chunk])
            else:
                batch = self.encode(chunk)
            if self.labels is not None:
                batch["labels"] = self.labels[i : i + len(chunk)]
            yield batch

    def gather(self, model: Any, batch: Batch) -> np.ndarray:
        return numpy(call(model, self.model_inputs(batch)).logits).argmax(-1)

    def score(self, sums: dict[str, Any], out: np.ndarray, ref: np.ndarray, batch: Batch) -> None:
        sums.setdefault("predicted", []).append(out)
        sums.setdefault("eager", []).append(ref)
        if "labels" in batch:
            sums.setdefault("labels", []).append(batch["labels"])

    def finish(self, sums: dict[str, Any]) -> dict[str, float]:
        predicted = np.concatenate(sums["predicted"])
        values = {"agreement": tm.agreement(predicted, np.concatenate(sums["eager"]))}
        if "labels" in sums:
            labels = np.concatenate(sums["labels"])
            values["accuracy"] = tm.accuracy(predicted, labels)
            values["macro_f1"] = tm.macro_f1(predicted, labels, self.classes)
        return values


def _label_ids(raw: list[Any], config: Any, source: str) -> list[int]:
    """Labels as class ids: ids as given, names through ``label2id``; one outside the
    model's label set is an error naming the set."""
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    count = int(config.num_labels)
    ids = []
    for value in raw:
        if isinstance(value, str) and value in label2id:
            ids.append(label2id[value])
        elif _is_int(value) and 0 <= value < count:
            ids.append(int(value))
        else:
            names = ", ".join(f"{i} ({n})" for n, i in sorted(label2id.items(), key=lambda x: x[1]))
            raise UsageError(
                f"The label {value!r} in {source} is outside the model's label set "
                f"({names or f'ids 0 to {count - 1}'}); map the labels to those."
            )
    return ids


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@register("feature-extraction")
class FeatureExtractionEvaluator(TaskEvaluator):
    """Rule 3: cosine of pooled embeddings to eager; Spearman on scored pairs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(self.directory.manifest.graphs) > 1:
            raise UsageError(
                f"{self.directory.path} has {len(self.directory.manifest.graphs)} graphs (towers); "
                "evaluate measures single-graph text embedding exports."
            )
        self.pairs = self.data.has("sentence1", "sentence2")
        if self.pairs:
            count = len(self.data)
            count = min(count, self.limit) if self.limit else count
            self.gold = np.asarray(self.data.column("score", self.task)[:count], dtype=np.float64)
            first = [str(v) for v in self.data.columns["sentence1"][:count]]
            second = [str(v) for v in self.data.columns["sentence2"][:count]]
            self.inputs = first + second
            self.metrics = [Metric("spearman"), Metric("cosine", against_eager=True)]
        else:
            self.inputs = self.texts()
            self.metrics = [Metric("cosine", against_eager=True)]
        self.examples = len(self.inputs) // 2 if self.pairs else len(self.inputs)

    def batches(self) -> Iterator[Batch]:
        for i in range(0, len(self.inputs), self.batch_size):
            yield self.encode(self.inputs[i : i + self.batch_size])

    def gather(self, model: Any, batch: Batch) -> np.ndarray:
        output = call(model, self.model_inputs(batch))
        states = getattr(output, "last_hidden_state", None)
        states = numpy(states if states is not None else output[0])
        return tm.mean_pool(states, batch["attention_mask"])

    def score(self, sums: dict[str, Any], out: np.ndarray, ref: np.ndarray, batch: Batch) -> None:
        sums.setdefault("embeddings", []).append(out)
        sums.setdefault("eager", []).append(ref)

    def finish(self, sums: dict[str, Any]) -> dict[str, float]:
        embeddings = np.concatenate(sums["embeddings"])
        values = {"cosine": tm.mean_cosine(embeddings, np.concatenate(sums["eager"]))}
        if self.pairs:
            half = len(embeddings) // 2
            similarity = tm.row_cosines(embeddings[:half], embeddings[half:])
            values["spearman"] = tm.spearman(similarity, self.gold)
        return values


@register("fill-mask")
class FillMaskEvaluator(TaskEvaluator):
    """Rule 4: restore-the-masked-token accuracy, top-1 and top-5 agreement with eager."""

    MASKED = 0.15
    TOP_K = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if getattr(self.tokenizer, "mask_token_id", None) is None:
            raise UsageError(
                f"The tokenizer of {self.directory.path} has no mask token, so fill-mask "
                "cannot be evaluated; save a tokenizer with a mask token into the export."
            )
        self.inputs = self.texts()
        self.metrics = [
            Metric("accuracy"),
            Metric("top1_agreement", against_eager=True),
            Metric(f"top{self.TOP_K}_agreement", against_eager=True),
        ]
        self.examples = len(self.inputs)
        self.rng = np.random.default_rng(0)

    def batches(self) -> Iterator[Batch]:
        for i in range(0, len(self.inputs), self.batch_size):
            batch = self.encode(
                self.inputs[i : i + self.batch_size], return_special_tokens_mask=True
            )
            special = batch.pop("special_tokens_mask").astype(bool)
            candidates = (batch["attention_mask"] == 1) & ~special
            chosen = candidates & (self.rng.random(candidates.shape) < self.MASKED)
            for row in np.flatnonzero(candidates.any(1) & ~chosen.any(1)):
                chosen[row, self.rng.choice(np.flatnonzero(candidates[row]))] = True
            batch["targets"] = batch["input_ids"][chosen]
            batch["input_ids"] = np.where(chosen, self.tokenizer.mask_token_id, batch["input_ids"])
            batch["masked"] = chosen
            yield batch

    def gather(self, model: Any, batch: Batch) -> np.ndarray:
        return numpy(call(model, self.model_inputs(batch)).logits)[batch["masked"]]

    def score(self, sums: dict[str, Any], out: np.ndarray, ref: np.ndarray, batch: Batch) -> None:
        count = len(out)
        top1 = out.argmax(-1)
        sums["count"] = sums.get("count", 0) + count
        sums["correct"] = sums.get("correct", 0) + int((top1 == batch["targets"]).sum())
        sums["top1"] = sums.get("top1", 0.0) + count * tm.agreement(top1, ref.argmax(-1))
        sums["topk"] = sums.get("topk", 0.0) + count * tm.top_k_agreement(out, ref, self.TOP_K)

    def finish(self, sums: dict[str, Any]) -> dict[str, float]:
        count = sums.get("count", 0) or float("nan")
        return {
            "accuracy": sums.get("correct", 0) / count,
            "top1_agreement": sums.get("top1", 0.0) / count,
            f"top{self.TOP_K}_agreement": sums.get("topk", 0.0) / count,
        }

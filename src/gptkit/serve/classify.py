"""/v1/classify: a fine-tuned task model (task.json + head.safetensors) scores request inputs.

Request inputs are read exactly like rows of a task file (same column names, same checks), then go
through the same input transformation the model was fine-tuned with.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import GptkitError
from ..tasks.batching import iterate_batches
from ..tasks.readers import Row
from ..tasks.taskfile import parse_examples
from ..tasks.transforms import EncodedExample, InputTransform


class Classifier:
    def __init__(self, task_model: Any, tokenizer: Any) -> None:
        self.model = task_model
        self.tok = tokenizer
        self.spec = task_model.spec
        self.transform = InputTransform(self.spec, tokenizer, self.spec.max_len or task_model.gpt.config.n_ctx)

    def encode(self, inputs: str | dict[str, Any] | list[str | dict[str, Any]]) -> list[EncodedExample]:
        """Validate and encode on the request side (errors -> 400) before anything is queued."""
        items = inputs if isinstance(inputs, list) else [inputs]
        if not items:
            raise GptkitError("input: give at least one example")
        rows = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                kind = self.spec.type
                if len(kind.text_fields) != 1 or kind.extra_fields:
                    raise GptkitError(f"input[{i}]: a {self.spec.task} model needs an object with its fields, not a string")
                item = {kind.text_fields[0]: item}
            rows.append(Row(fields=item, source="request input", line=i))
        return self.transform.encode_all(parse_examples(self.spec, rows, need_label=False), name="request")

    @torch.inference_mode()
    def run(self, encoded: list[EncodedExample]) -> list[dict[str, Any]]:
        """On the worker thread: label probabilities (or values) per example."""
        spec, kind, results = self.spec, self.spec.type, []
        device = next(self.model.parameters()).device
        for batch in iterate_batches(encoded, 32, self.tok.pad_id, spec):
            probs = self.model.probabilities(self.model(batch.to(device)).logits).float().cpu()
            results.extend(kind.response(spec, p.numpy()) for p in probs)
        return [{"index": i, **r} for i, r in enumerate(results)]

"""Schemas of genlab's own callbacks whose constructors take settings a schema can check: the evaluator
(genlab/callbacks/evaluator.py). Its metric objects have no schema: each one is any
``genlab.metrics.base.Metric`` a user names, so their constructors check their own arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from genlab.config.fields import opt


@dataclass
class EvaluatorConfig:
    _target_: str = "genlab.callbacks.evaluator.Evaluator"
    seed: int = opt(0, ge=0, lt=2**32)  # every random draw of the evaluation
    classifier_cache: Optional[str] = None  # the folder of dataset classifiers; null: no classifier metrics
    classifier_epochs: int = opt(3, ge=1)  # passes of the dataset classifier's training (at least 500 steps)
    sample_steps: Optional[int] = opt(None, ge=1)  # the step budget of iterative samplers; null: their default
    max_test: Optional[int] = opt(None, ge=1)  # test images the metrics score (a fixed random subset); null: all
    metrics: Optional[dict[str, Any]] = None  # the metric objects by name, in the order they run


SCHEMAS = {"callbacks": {"evaluator": EvaluatorConfig}}

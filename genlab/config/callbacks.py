"""Schemas of genlab's own callbacks whose constructors take settings a schema can type: the evaluator
(genlab/callbacks/evaluator.py). Its metric objects have no schema: each one is any
``genlab.metrics.base.Metric`` a user names, whose signature declares its arguments' ranges (``Bounds``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class EvaluatorConfig:
    """The evaluator's keys and types; the ranges are declared in Evaluator's signature (``Bounds``)."""

    _target_: str = "genlab.callbacks.evaluator.Evaluator"
    seed: int = 0  # every random draw of the evaluation
    classifier_cache: Optional[str] = None  # the folder of dataset classifiers; null: no classifier metrics
    classifier_epochs: int = 3  # passes of the dataset classifier's training (at least 500 steps)
    sample_steps: Optional[int] = None  # the step budget of iterative samplers; null: their default
    max_test: Optional[int] = None  # test images the metrics score (a fixed random subset); null: all
    metrics: Optional[dict[str, Any]] = None  # the metric objects by name, in the order they run


SCHEMAS = {"callbacks": {"evaluator": EvaluatorConfig}}

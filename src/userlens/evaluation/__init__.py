"""Honest evaluation: full-ranking metrics, confidence intervals, paired comparisons."""

from userlens.evaluation.runner import EvalResult, MetricSummary, Protocol, evaluate

__all__ = ["EvalResult", "MetricSummary", "Protocol", "evaluate"]

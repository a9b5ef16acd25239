"""How the pages speak of a task's metric (trainer.tasks.Metric): accuracy as a percentage, perplexity and
mean return as plain numbers, each under its own name. Classification pages keep their old words
("accuracy", "test acc.", "%")."""
from __future__ import annotations

from trainer.tasks import ACCURACY, Metric


def shown(value: float | None, metric: Metric = ACCURACY) -> float | None:
    """A stored value in the unit the page shows: percent for a fraction, else as it is."""
    if value is None:
        return None
    return 100.0 * value if metric.percent else value


def axis_title(prefix: str, metric: Metric = ACCURACY, suffix: str = "") -> str:
    """'test accuracy (%)', 'test perplexity', 'validation mean return (early stop)'."""
    words = " ".join(part for part in (prefix, metric.label, suffix) if part)
    return f"{words} (%)" if metric.percent else words


def hover_number(placeholder: str, metric: Metric = ACCURACY) -> str:
    """A plotly hover value with two decimals and a % sign for a percentage: '%{y:.2f}%'."""
    return f"%{{{placeholder}:.2f}}" + ("%" if metric.percent else "")


def page_words(metric: Metric = ACCURACY) -> dict:
    """What templates need to name the metric in headers and notes."""
    return {"key": metric.key, "label": metric.label, "percent": metric.percent,
            "short": "acc." if metric == ACCURACY else metric.label,
            "higher_is_better": metric.higher_is_better,
            "tolerance_words": "within one point of dense" if metric.percent else "within 1% of dense",
            "direction": "higher is better" if metric.higher_is_better else "lower is better"}

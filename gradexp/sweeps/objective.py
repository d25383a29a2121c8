"""The number a job hands back to a sweeper that searches (Optuna): a metric of its summary, in
which a run that diverged or failed scores as the worst possible result for the sweeper's own
direction rather than stopping the study, so the search learns to avoid that region instead of
crashing into it. Never NaN and never an exception: either would end an Optuna study."""

import math

from omegaconf import DictConfig

# Metrics a search can optimise: summary.json keys, and `stable_lr`, the learning rate of a run
# that finished with a validation loss at least LEARNED below the one it started with (0 when it
# diverged, failed or did not learn), which a search maximises to find the largest learning rate
# that still trains.
OBJECTIVES = ("final_val_loss", "final_train_loss", "final_val_acc", "grad_ratio_first_last", "stable_lr")
LEARNED = 0.9  # a run learned if its final validation loss is below 90% of its initial one


def objective(summary: dict, cfg: DictConfig, direction: object = "minimize") -> float:
    """`direction` is the sweeper's (`hydra.sweeper.direction`); sweepers without one ignore the
    value, and a multi-objective list is scored by its first direction."""
    if isinstance(direction, list | tuple) or type(direction).__name__ == "ListConfig":
        direction = direction[0] if len(direction) else "minimize"
    worst = -math.inf if str(direction).lower() == "maximize" else math.inf
    try:
        if cfg.objective.metric == "stable_lr":
            return stable_lr(summary, cfg)
        value = summary.get(cfg.objective.metric) if summary.get("status") == "completed" else None
    except Exception:  # noqa: BLE001 (an unreadable summary is a failed run: the worst score)
        return worst
    if not isinstance(value, int | float) or not math.isfinite(value):
        return worst
    return float(value)


def stable_lr(summary: dict, cfg: DictConfig) -> float:
    start, end = summary.get("initial_val_loss"), summary.get("final_val_loss")
    learned = (
        summary.get("status") == "completed"
        and start is not None
        and end is not None
        and end < LEARNED * start
    )
    return float(cfg.optimizer.lr) if learned else 0.0

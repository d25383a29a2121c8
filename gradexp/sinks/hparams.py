"""TensorBoard's HParams dashboard for a run: its swept values and its final metrics, written
into the run's own event file.

`SummaryWriter.add_hparams` writes into a new sub-folder per call, which TensorBoard then lists as
a second run beside the real one; here the three HParams records (the experiment, the session's
start with its values, its end with its status) go into the run's file, and each metric is a
scalar tag `hparams/<metric>` of that same run, so the dashboard's table links to the run's
curves. Every run of a sweep writes the same experiment (the same columns), since TensorBoard
reads the experiment of whichever run it finds first.
"""

import math

from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

# The metrics the dashboard shows for every run (summary.json keys); string results such as the
# status and the verdict are shown as hparam columns, since HParams metrics are numbers.
METRICS = {
    "final_train_loss": "loss on the training set after the last step",
    "final_val_loss": "loss on the validation set after the last step",
    "final_val_acc": "accuracy on the validation set after the last step",
    "grad_ratio_first_last": "first layer's gradient norm / last layer's, at the last logged step",
    "steps_completed": "optimizer updates applied before the run ended",
}
RESULT_COLUMNS = ("status", "verdict")
_STATUS = {
    "completed": api_pb2.STATUS_SUCCESS,
    "diverged": api_pb2.STATUS_FAILURE,
    "failed": api_pb2.STATUS_FAILURE,
    "interrupted": api_pb2.STATUS_UNKNOWN,  # the proto has no "stopped" status
}


def columns(cfg: DictConfig, overrides: list[str], summary: dict) -> dict[str, object]:
    """A run's HParams columns: each override it was given (in a sweep, the swept values), typed
    as in its config, then its status and verdict."""
    values: dict[str, object] = {}
    for override in overrides:
        key, _, text = override.partition("=")
        key = key.lstrip("+~")
        node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        values[key] = node if isinstance(node, bool | int | float | str) else text  # a group: its choice
    values["status"] = summary["status"]
    values["verdict"] = summary.get("verdict") or "none"
    return values


def hparams_summaries(hparams: dict[str, object], status: str) -> list[Summary]:
    """The experiment, session-start and session-end records for one run; `hparams` maps each
    column (a config key, or status and verdict) to a number, a string or a bool."""
    values = {name: _value(v) for name, v in hparams.items()}
    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=name, type=_type(v)) for name, v in values.items()],
        metric_infos=[
            api_pb2.MetricInfo(name=api_pb2.MetricName(tag=f"hparams/{m}"), description=d)
            for m, d in METRICS.items()
        ],
    )
    start = plugin_data_pb2.SessionStartInfo()
    for name, value in values.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, float):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = value
    end = plugin_data_pb2.SessionEndInfo(status=_STATUS.get(status, api_pb2.STATUS_UNKNOWN))
    return [
        _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
        _summary(
            metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)
        ),
        _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)),
    ]


def metric_values(summary: dict) -> dict[str, float]:
    """The dashboard's metrics from a run's summary, as scalar tags; a missing or non-finite
    metric (a diverged run has no final loss) is left out rather than written as NaN."""
    return {
        f"hparams/{m}": float(summary[m])
        for m in METRICS
        if isinstance(summary.get(m), int | float) and math.isfinite(summary[m])
    }


def _value(value: object) -> bool | float | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return "none" if value is None else str(value)


def _type(value: bool | float | str) -> int:
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    return api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, float) else api_pb2.DATA_TYPE_STRING


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])

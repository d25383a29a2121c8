"""TensorBoard's HParams dashboard: each run's values and final metrics, and one experiment record
that declares the dashboard's columns.

`SummaryWriter.add_hparams` writes into a new sub-folder per call, which TensorBoard then lists as
a second run beside the real one. Here each run writes its session records (its values when it
ends, and its status) into its own event file, and each metric is a scalar tag `hparams/<metric>`
of that same run, so the dashboard's rows link to the run's curves.

TensorBoard takes the experiment record (the columns and their types) from whichever run it finds
first, so there must be only one per log directory: the sweep table writes it beside the table,
from every job's columns (`events.out.tfevents.0000000000.hparams`, replaced each time), and a
single run gets one in its own directory.
"""

import math
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from gradexp.atomic import write_atomic
from gradexp.sinks.event_file import file_version, record

# The metrics the dashboard shows for every run (summary.json keys); string results such as the
# status and the verdict are hparam columns, since HParams metrics are numbers.
METRICS = {
    "final_train_loss": "loss on the training set after the last step",
    "final_val_loss": "loss on the validation set after the last step",
    "final_val_acc": "accuracy on the validation set after the last step",
    "grad_ratio_first_last": "first layer's gradient norm / last layer's, at the last logged step",
    "steps_completed": "optimizer updates applied before the run ended",
}
EXPERIMENT_FILE = "events.out.tfevents.0000000000.hparams"
_STATUS = {
    "completed": api_pb2.STATUS_SUCCESS,
    "diverged": api_pb2.STATUS_FAILURE,
    "failed": api_pb2.STATUS_FAILURE,
    "interrupted": api_pb2.STATUS_UNKNOWN,  # the proto has no "stopped" status
}

Value = bool | float | str


def columns(summary: dict) -> dict[str, Value]:
    """A run's HParams columns, from its summary: each override it was given (in a sweep, the
    swept values) typed as in its config, then its status and verdict. A null value is left
    out, so that a column keeps one type across runs (`clip.max_norm=null,1.0`)."""
    config = summary.get("config") or {}
    values: dict[str, Value] = {}
    for override in summary.get("overrides") or []:
        key, _, text = override.partition("=")
        key = key.lstrip("+~")
        node = _select(config, key, default=text)
        if node is not None:  # a config group's node: its choice, as typed
            values[key] = _value(node if isinstance(node, bool | int | float | str) else text)
    values["status"] = summary["status"]
    values["verdict"] = summary.get("verdict") or "none"
    return values


def _select(config: dict, key: str, default: str) -> object:
    """The value at a dotted key (`trainer.clip.max_norm`, `optimizer.betas.0`) of the summary's
    resolved config, or `default` where there is none: what `OmegaConf.select` gives, without
    making the whole config an OmegaConf node for each run (3 ms)."""
    node: object = config
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return default
    return node


def session_records(values: dict[str, Value], status: str) -> list[Summary]:
    """A run's session start (its values) and end (its status)."""
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


def write_experiment(folder: Path, runs: list[dict[str, Value]]) -> Path:
    """The experiment record for the runs under `folder`: one column per key any run has, typed
    by its values (a column whose runs disagree is a string column), and the metrics."""
    infos = []
    for name in sorted({k for run in runs for k in run}):
        values = [run[name] for run in runs if name in run]
        types = {type(v) for v in values}
        kind = types.pop() if len(types) == 1 else str
        info = api_pb2.HParamInfo(name=name, type=_TYPES[kind])
        if kind is str:
            info.domain_discrete.extend(sorted(set(map(str, values))))
        infos.append(info)
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[
            api_pb2.MetricInfo(name=api_pb2.MetricName(tag=f"hparams/{m}"), description=d)
            for m, d in METRICS.items()
        ],
    )
    summary = _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EXPERIMENT_FILE
    write_atomic(path, lambda f: f.write(record(file_version()) + record(Event(summary=summary))))
    return path


_TYPES = {bool: api_pb2.DATA_TYPE_BOOL, float: api_pb2.DATA_TYPE_FLOAT64, str: api_pb2.DATA_TYPE_STRING}


def _value(value: bool | int | float | str) -> Value:
    return value if isinstance(value, bool | str) else float(value)


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])

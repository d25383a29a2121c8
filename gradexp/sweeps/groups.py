"""Seeds as error bars: a sweep's jobs grouped by configuration (every swept key but the seed),
with the spread of each final metric over the seeds and how many seeds completed, diverged or
failed. One seed's run is an anecdote; the spread says whether two configurations differ.

The statistics are over the seeds whose value is a finite number (a diverged job has no final
loss); each says over how many (`n`). The standard deviation is the sample one (n - 1), none
for a single value.
"""

import math
import statistics
from dataclasses import dataclass

SEED_KEY = "trainer.seed"
SPREAD_METRICS = ("final_train_loss", "final_val_loss", "final_val_acc", "grad_ratio_first_last")
VERDICTS = ("verdict", "verdict_last")
STATUS_ORDER = ("completed", "diverged", "failed", "interrupted", "unfinished")
STATISTICS = ("mean", "std", "min", "max", "n")  # a Spread's fields: a CSV column each


@dataclass
class Spread:
    mean: float
    std: float | None
    min: float
    max: float
    n: int  # the seeds with a finite value

    @classmethod
    def of(cls, values: list) -> "Spread | None":
        finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
        if not finite:
            return None
        std = statistics.stdev(finite) if len(finite) > 1 else None
        return cls(statistics.fmean(finite), std, min(finite), max(finite), len(finite))

    def text(self, digits: int = 3) -> str:
        """'0.412 ± 0.031' (or the value alone, for one seed)."""
        mean = f"{self.mean:.{digits}g}"
        return mean if self.std is None else f"{mean} ± {self.std:.2g}"


@dataclass
class Group:
    values: dict[str, str]  # the configuration: each swept key but the seed, as typed
    jobs: list  # the table's Job rows, one per seed

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values.items()) or "all jobs"

    def statuses(self) -> dict[str, int]:
        counts = {s: sum(j.status == s for j in self.jobs) for s in STATUS_ORDER}
        return {s: n for s, n in counts.items() if n}

    def spread(self, metric: str) -> Spread | None:
        return Spread.of([j.summary.get(metric) for j in self.jobs])

    def verdicts(self, key: str) -> str | None:
        """'vanishing 5/5', or 'vanishing 3/5, stable 2/5': each verdict over the group's seeds."""
        found = [j.summary.get(key) for j in self.jobs if j.summary.get(key)]
        if not found:
            return None
        counts = {v: found.count(v) for v in dict.fromkeys(found)}
        return ", ".join(
            f"{v} {n}/{len(self.jobs)}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1])
        )

    def row(self) -> dict:
        """The group as sweep_table.json's `groups` holds it."""
        spreads = {m: self.spread(m) for m in SPREAD_METRICS}
        return {
            "group": self.name,
            **self.values,
            "seeds": len(self.jobs),
            "statuses": self.statuses(),
            **{m: None if s is None else vars(s) for m, s in spreads.items()},
            **{key: self.verdicts(key) for key in VERDICTS},
            "jobs": [j.name for j in self.jobs],
        }

    def flat_row(self) -> dict:
        """The group as a row of sweep_group_table.csv: `row`, with a column per status and
        per statistic."""
        row = self.row()
        flat = {"group": row["group"], **self.values, "seeds": row["seeds"]}
        flat.update({s: row["statuses"].get(s, 0) for s in STATUS_ORDER})
        for metric in SPREAD_METRICS:
            flat.update({f"{metric}_{stat}": (row[metric] or {}).get(stat) for stat in STATISTICS})
        flat.update({key: row[key] for key in VERDICTS})
        return flat


def group_jobs(jobs: list, swept: list[str]) -> list[Group]:
    """The jobs grouped by their values of every swept key but the seed, in the order each
    configuration first ran."""
    keys = [k for k in swept if k != SEED_KEY]
    groups: dict[tuple, Group] = {}
    for job in jobs:
        values = {k: job.overrides.get(k, "-") for k in keys}
        groups.setdefault(tuple(values.values()), Group(values, [])).jobs.append(job)
    return list(groups.values())


def csv_columns(swept: list[str]) -> list[str]:
    stats = [f"{m}_{s}" for m in SPREAD_METRICS for s in STATISTICS]
    keys = [k for k in swept if k != SEED_KEY]
    return ["group", *keys, "seeds", *STATUS_ORDER, *stats, *VERDICTS]

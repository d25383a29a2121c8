"""The jobs a command line asks for, and which of its values can run.

A sweep is the grid of every override's values. Checking every job of a large grid before the
first one starts would cost a compose each, so the preflight checks a few that between them
try every value (the base job, then each other value in turn), and asks the grid for more only
where one of those fails. A failure is then one of two things:

- a value that can never run (`model.depth=-2`, a choice that does not exist): the whole
  command line is refused, before any job starts;
- a combination (`-m model=mlp,rnn model.depth=2`: depth is an MLP's key): each value runs in
  some job, so the jobs that combine them become failed rows of the sweep table, as the README
  promises. A key that Hydra could not even compose into such a job is passed to it as
  `++key=value`, so that the job starts and its validation, not Hydra, reports the problem.
"""

import itertools
from collections.abc import Callable

from hydra.core.override_parser.types import Override, ValueType

from gradexp.config.errors import ConfigError

MAX_EXTRA_JOBS = 16  # further jobs tried, per failing value, to find one where it runs

Attempt = Callable[[list[str]], ConfigError | None]


def values_of(o: Override, group_options: Callable[[str], list[str]]) -> list[str] | None:
    """Each `key=value` the override can take (one for a plain override); None for an interval,
    which a searching sweeper samples itself."""
    if o.is_delete() or not o.is_sweep_override():
        return [o.input_line]
    if o.value_type == ValueType.INTERVAL_SWEEP:
        return None
    key = o.get_key_element()
    if o.value_type == ValueType.GLOB_CHOICE_SWEEP:
        return [f"{key}={name}" for name in o.value().filter(group_options(o.key_or_group))]
    return [f"{key}={Override._get_value_element_as_str(v)}" for v in o.sweep_iterator()]


def representative_jobs(choices: list[list[str]]) -> list[list[str]]:
    """Jobs that between them try every value at least once: the first value of everything,
    then each other value with the rest at their first."""
    base = [values[0] for values in choices]
    jobs = [base]
    for position, values in enumerate(choices):
        jobs += [base[:position] + [other] + base[position + 1 :] for other in values[1:]]
    return jobs


def check_grid(choices: list[list[str]], attempt: Attempt) -> set[str]:
    """Raise the ConfigError of a value that runs in no job, or of a grid where no job runs;
    return the overrides that must be forced (`++`) for the combinations they fail in to
    compose. `attempt(job)` returns a job's error, or None when it can run."""
    tried: dict[tuple[str, ...], ConfigError | None] = {}
    forced: set[str] = set()

    def run(job: list[str]) -> ConfigError | None:
        job = [f"++{line.lstrip('+')}" if line in forced else line for line in job]
        if tuple(job) not in tried:
            tried[tuple(job)] = attempt(job)
        return tried[tuple(job)]

    combination_error = None
    for job in representative_jobs(choices):
        while (error := run(job)) is not None:
            culprit = culprit_of(job, error)
            if culprit is None:  # the error names a key no override sets: a combination of values
                combination_error = combination_error or error
                break
            if not _runs_somewhere(culprit, choices, run):
                raise error
            if not getattr(error, "at_compose", False) or culprit in forced:
                break
            forced.add(culprit)  # compose the job again: another key of it may need forcing too
    if combination_error is not None and all(e is not None for e in tried.values()):
        raise combination_error
    return forced


def culprit_of(job: list[str], error: ConfigError) -> str | None:
    """The override of `job` that the error is about: the one whose key it names (or the group
    or mapping that key sits in)."""
    keys = {line: line.partition("=")[0].lstrip("+~") for line in job}
    exact = [line for line, key in keys.items() if key == error.key]
    if exact:
        return exact[0]
    around = [
        line
        for line, key in keys.items()
        if error.key.startswith(key + ".") or key.startswith(error.key + ".")
    ]
    return max(around, key=lambda line: len(keys[line]), default=None)


def _runs_somewhere(culprit: str, choices: list[list[str]], run: Attempt) -> bool:
    """Whether some job of the grid holding `culprit` can run (trying a bounded number)."""
    position = next(i for i, values in enumerate(choices) if culprit in values)
    pinned = [[culprit] if i == position else values for i, values in enumerate(choices)]
    for job in itertools.islice(itertools.product(*pinned), MAX_EXTRA_JOBS + 1):
        if run(list(job)) is None:
            return True
    return False

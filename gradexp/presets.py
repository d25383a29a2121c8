"""The presets a user can run (`configs/experiment/`, `configs/hparams_search/`), a line each:
`gradexp --presets`. Each preset's YAML file opens with a comment whose first sentence says what
it shows; that sentence is its line here, so the list never drifts from the files."""

import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from gradexp.config import CONFIG_DIR

GROUPS = ("experiment", "hparams_search")


@dataclass
class Preset:
    group: str
    name: str
    summary: str  # the first sentence of the file's opening comment
    sweeps: list[str]  # the keys its grid varies; empty for a single run
    seeds: int = 1  # each configuration runs over this many seeds (its sweep.seeds)

    @property
    def command(self) -> str:
        return f"gradexp {'-m ' if self.sweeps else ''}{self.group}={self.name}"


def find_presets(config_dir: Path = CONFIG_DIR) -> list[Preset]:
    found = []
    for group in GROUPS:
        for path in sorted((config_dir / group).glob("*.yaml")):
            preset = OmegaConf.load(path)
            params = OmegaConf.select(preset, "hydra.sweeper.params") or {}
            seeds = OmegaConf.select(preset, "sweep.seeds") or 1
            found.append(
                Preset(group, path.stem, _summary(path.read_text()), [str(k) for k in params], seeds)
            )
    return found


def _summary(text: str) -> str:
    """The opening comment's first sentence (up to a colon or a full stop)."""
    lines = [
        line[1:].strip() for line in text.splitlines() if line.startswith("#") and "@package" not in line
    ]
    comment = " ".join(lines)
    return re.split(r"[:.](?:\s|$)", comment, maxsplit=1)[0].strip()


def presets_text() -> str:
    """The listing `gradexp --presets` prints: the command, then what the preset shows."""
    presets = find_presets()
    lines = ["Presets (configs/experiment/, configs/hparams_search/); each file explains its numbers:"]
    for preset in presets:
        seeds = f", over {preset.seeds} seeds" if preset.seeds > 1 else ""
        swept = f" (sweeps {', '.join(preset.sweeps)}{seeds})" if preset.sweeps else " (one run)"
        lines.append(f"  {preset.command}")
        lines.append(f"      {preset.summary}{swept}")
    return "\n".join(lines)

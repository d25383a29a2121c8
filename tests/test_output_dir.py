"""One writer per run or sweep directory: the lock and the checks the CLI makes before Hydra
writes anything (output_dir.claim)."""

import pytest

from gradexp.config.errors import ConfigError
from gradexp.output_dir import claim, release_all


@pytest.fixture(autouse=True)
def release():
    yield
    release_all()


def test_a_directory_held_by_another_writer_is_refused_even_for_a_resume(tmp_path):
    held = claim(tmp_path / "run", "hydra.run.dir", resume=False, typed=True, allowed="-")
    assert held == tmp_path / "run" and held.is_dir()
    with pytest.raises(ConfigError, match="another gradexp process is writing into it"):
        claim(held, "hydra.run.dir", resume=True, typed=True, allowed="-")


def test_a_directory_with_files_is_refused_unless_resumed(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"already holds files \(summary.json\)"):
        claim(tmp_path / "run", "hydra.run.dir", resume=False, typed=True, allowed="-")
    assert claim(tmp_path / "run", "hydra.run.dir", resume=True, typed=True, allowed="-") == tmp_path / "run"


def test_a_busy_default_directory_gives_way_to_the_next_free_sibling(tmp_path):
    first = claim(tmp_path / "12-00-00", "hydra.run.dir", resume=False, typed=False, allowed="-")
    second = claim(tmp_path / "12-00-00", "hydra.run.dir", resume=False, typed=False, allowed="-")
    assert (first.name, second.name) == ("12-00-00", "12-00-00-1")
    release_all()  # the first run ended: its directory holds files now, so it is still not reused
    (first / "summary.json").write_text("{}")
    assert claim(first, "hydra.run.dir", resume=False, typed=False, allowed="-").name == "12-00-00-1"

"""--report-to fails at start, with the install command, when the tracker's package is missing."""

from __future__ import annotations

import importlib.util

import pytest

from hf_attn.training.args import UsageError
from hf_attn.training.trackers import TRACKERS, TrackerNotInstalledError, require_tracker, tracker_available

MISSING = [name for name in ("wandb", "trackio") if importlib.util.find_spec(TRACKERS[name][0]) is None]


@pytest.fixture()
def missing_tracker(monkeypatch) -> str:
    """A tracker whose package is not installed here (wandb or trackio); if both are, pretend wandb is missing."""
    if MISSING:
        return MISSING[0]
    from accelerate.utils import imports

    monkeypatch.setattr(imports, TRACKERS["wandb"][1], lambda: False)
    return "wandb"


def test_missing_tracker_is_an_error_with_the_install_command(missing_tracker):
    assert not tracker_available(missing_tracker)
    with pytest.raises(TrackerNotInstalledError, match=f"pip install {TRACKERS[missing_tracker][0]}") as info:
        require_tracker(missing_tracker)
    assert isinstance(info.value, UsageError)  # the recipes print it as one line, exit code 2
    assert "--report-to none" in str(info.value)


def test_none_and_installed_trackers_pass():
    require_tracker("none")
    require_tracker(None)
    if importlib.util.find_spec("tensorboard") is not None:  # in the dev extra
        require_tracker("tensorboard")
    with pytest.raises(UsageError, match="expected one of"):
        require_tracker("neptune")


def test_train_recipes_fail_before_training(missing_tracker, tmp_path):
    """Both recipes stop at start: no data is read, no output folder is written."""
    from hf_attn.training.embed import train_embedder
    from hf_attn.training.embed.args import EmbedTrainingArguments
    from hf_attn.training.lm import train_lm
    from hf_attn.training.lm.args import LMTrainingArguments

    with pytest.raises(TrackerNotInstalledError, match="pip install"):
        train_embedder(EmbedTrainingArguments(output_dir=str(tmp_path / "embed"), data_dir=str(tmp_path / "nothing"),
                                              report_to=missing_tracker))
    with pytest.raises(TrackerNotInstalledError, match="pip install"):
        train_lm(LMTrainingArguments(output_dir=str(tmp_path / "lm"), data=str(tmp_path / "nothing.txt"),
                                     report_to=missing_tracker))
    assert not (tmp_path / "embed").exists() and not (tmp_path / "lm").exists()

"""Word options that Hydra reads as YAML scalars (true, false, on, off, 1, 0) reach the code whole.

Every option whose valid values include such a word goes through :func:`locseg.options.word`:
``roi.test_centres`` (training), ``roi_centres`` and ``postprocess.*`` (evaluate), ``postprocess.*``
(training: ``auto`` or a switch). predict's ``tta/largest/fill`` are typed bool fields of its
structured config, which OmegaConf already reads the same way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from locseg.evaluation.postprocess import switch_options
from locseg.inference.postprocess import PostProcess
from locseg.options import switch, word
from locseg.roi.geometry import RoiError, check_centre_source

REPO = Path(__file__).resolve().parents[1]


def typed(text: str):
    """What a Hydra override ``key=TEXT`` hands the code."""
    return OverridesParser.create().parse_override(f"key={text}").value()


def test_hydra_reads_true_as_a_boolean_and_on_as_a_word():
    assert typed("true") is True and typed("True") is True and typed("false") is False
    assert typed("on") == "on" and typed("1") == 1 and typed("null") is None


@pytest.mark.parametrize("text", ["true", "True", "TRUE", "on", "yes", "1"])
def test_word_takes_every_spelling_of_true(text):
    assert word("x", typed(text), ("predicted", "true")) == "true"
    assert switch("x", typed(text)) is True


@pytest.mark.parametrize("text", ["false", "off", "no", "0"])
def test_switch_takes_every_spelling_of_false(text):
    assert switch("x", typed(text)) is False


def test_word_refuses_other_values_naming_the_option():
    with pytest.raises(ValueError, match=r"x='guess' is not one of predicted, true"):
        word("x", "guess", ("predicted", "true"))
    with pytest.raises(ValueError, match=r"x=False is not one of predicted, true"):
        word("x", False, ("predicted", "true"))  # false is not a centre source
    with pytest.raises(ValueError, match=r"x=None is not one of"):
        word("x", None, ("predicted", "true"))
    assert word("x", None, ("null", "auto")) == "null"
    with pytest.raises(ValueError, match=r"x='maybe' is not one of true, false"):
        switch("x", "maybe")


def test_centre_source_as_hydra_types_it():
    """roi.test_centres=true (training) and roi_centres=true (evaluate): the oracle bound."""
    assert check_centre_source(typed("true")) == "true"
    assert check_centre_source(typed("predicted")) == "predicted"
    assert check_centre_source("Predicted") == "predicted"
    with pytest.raises(RoiError, match=r"roi_centres=False is not one of predicted, true"):
        check_centre_source(typed("false"), "roi_centres")


def test_training_postprocess_switches_as_hydra_types_them():
    """postprocess.tta=auto|true|false, plus on/off, as typed on the command line."""
    given = {"tta": typed("auto"), "largest": typed("on"), "fill": typed("false")}
    assert switch_options(given) == {"largest": True, "fill": False}
    assert switch_options({"fill": "off", "tta": "TRUE"}) == {"fill": False, "tta": True}


def test_evaluate_postprocess_switches_as_hydra_types_them():
    """A quoted 'false' was bool('false') = True: the switch went on when told off."""
    switches = PostProcess.from_options({"largest": "false", "fill": "off", "tta": True})
    assert switches == PostProcess(largest=False, fill=False, tta=True)
    with pytest.raises(ValueError, match=r"postprocess.fill='auto' is not one of true, false"):
        PostProcess.from_options({"fill": "auto"})  # evaluate has no validation images


def test_roi_datamodule_takes_the_boolean_true():
    from locseg.roi.datamodule import RoiSegmentationDataModule

    module = RoiSegmentationDataModule(root="unused", roi={"test_centres": True})
    assert module.centre_source == "true"


def test_evaluate_command_accepts_roi_centres_true(tmp_path):
    """The documented ``python -m locseg.evaluate ... roi_centres=true`` gets past its options.

    The checkpoint is missing on purpose: the command must fail on that, not on the option.
    """
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "locseg.evaluate",
            f"ckpt={tmp_path / 'missing.ckpt'}",
            f"data.root={tmp_path}",
            f"output={tmp_path / 'out'}",
            "roi_centres=true",
            "device=cpu",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "missing.ckpt" in result.stderr and "not one of" not in result.stderr, result.stderr

"""``locseg.quiet_known_noise``: a training job's output holds no litlogger tip and no LeafSpec
deprecation, while a genuine warning and Lightning's other info lines still show.

Each run is a fresh interpreter (warning filters and logging are process-wide) that trains a tiny
segmenter for one ``fast_dev_run`` step through the real Hydra entry point. What importing
``locseg.train`` sets up (it calls the function) is undone first, so the test measures one call;
the same run without it is the control that shows the noise is really there to remove, and
``python -m locseg.train`` itself shows that the entry point calls it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_dataset

SCRIPT = """
import logging, sys, warnings
import locseg, locseg.logs, locseg.train
# Undo what importing locseg.train set up, so that the function alone is tested.
warnings.resetwarnings()
warnings.simplefilter("default")    # Python's default for warnings raised in __main__
for name in locseg.logs.RANK_ZERO_LOGGERS:
    logging.getLogger(name).removeFilter(locseg.logs.TIP_FILTER)
if sys.argv[1] == "quiet":
    locseg.quiet_known_noise()
    locseg.quiet_known_noise()      # idempotent
else:                               # the control: run_job's own call (for launcher workers) too
    locseg.quiet_known_noise = lambda: None
sys.argv = ["locseg.train", *sys.argv[2:]]
locseg.train.main()
warnings.warn("something real")
"""


def train_output(mode: str, root: Path, run_dir: Path) -> subprocess.Popen:
    overrides = [
        "+phase=segment",
        f"data.root={root}",
        f"hydra.run.dir={run_dir}",
        "+trainer.fast_dev_run=true",
        "logger=csv",
        "callbacks.progress_bar=null",
        "data.image_size=32",
        "data.batch_size=4",
        "data.num_folds=3",
        "net.base_width=4",
        "net.depth=2",
        "threads=1",
    ]
    command = ["-m", "locseg.train"] if mode == "train" else ["-c", SCRIPT, mode]
    return subprocess.Popen(
        [sys.executable, *command, *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("quiet")
    root = make_dataset(tmp / "data", n_masked=12)
    runs = {mode: train_output(mode, root, tmp / mode) for mode in ("loud", "quiet", "train")}
    texts = {}
    for mode, process in runs.items():
        out, _ = process.communicate(timeout=240)
        assert process.returncode == 0, out[-3000:]
        assert (tmp / mode / "metrics.json").is_file(), out[-3000:]
        texts[mode] = out
    return texts


def test_without_the_function_the_noise_is_there(outputs):
    loud = outputs["loud"]
    assert "litlogger" in loud and "isinstance(treespec, LeafSpec)" in loud, loud[-3000:]


def test_the_function_removes_exactly_the_known_noise(outputs):
    quiet = outputs["quiet"]
    assert "litlogger" not in quiet and "LeafSpec" not in quiet, quiet[-3000:]
    assert "UserWarning: something real" in quiet, quiet[-3000:]
    # Lightning's other info lines come through the same logger as the tip: they still show.
    assert "GPU available:" in quiet, quiet[-3000:]


def test_the_training_command_calls_it(outputs):
    plain = outputs["train"]  # python -m locseg.train, as documented
    assert "litlogger" not in plain and "LeafSpec" not in plain, plain[-3000:]
    assert "GPU available:" in plain, plain[-3000:]

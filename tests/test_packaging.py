"""A plain (non-editable) `pip install .` ships the Hydra configs with the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_configs_found_after_plain_install(tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    assert (site / "locseg" / "conf" / "phase" / "segment.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import locseg; print(locseg.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site))
    job = subprocess.run(
        [
            sys.executable,
            "-m",
            "locseg.train",
            "+phase=segment",
            "experiment=paper",
            "--cfg",
            "job",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert job.returncode == 0, job.stderr[-2000:]
    assert "locseg.models.segmenter.SegmenterModule" in job.stdout
    assert "base_width: 32" in job.stdout

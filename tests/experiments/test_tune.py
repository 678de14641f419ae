"""The tuning sweep ranks its variants on complete evidence and names the best one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from locseg.experiments.report.collect import ReportError
from locseg.experiments.tune import chosen_overrides, rank_variants
from locseg.tune import main as tune_main

# (side, jitter, Dice of fold 0, Dice of fold 1 or None = failed, seconds per job)
GRID = [
    ("2.0", "0.05", 0.930, 0.920, 10),
    ("2.0", "0.15", 0.950, 0.940, 12),
    ("3.0", "0.05", 0.960, 0.930, 9),  # ties 2.0/0.15 on the mean, cheaper: ranked first
    ("3.0", "0.15", 0.990, None, 10),  # best fold 0, but its fold 1 failed: ranked last
]


def write_job(job: Path, overrides: list[str], dice: float | None, wall: float) -> None:
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    record = {"phase": "segment", "arm": "scratch", "fold": 0, "fraction": 1.0, "config_hash": "h"}
    (job / "job.json").write_text(json.dumps(record))
    if dice is None:
        metrics = {**record, "status": "failed", "error": "RuntimeError: diverged"}
    else:
        metrics = {**record, "status": "ok", "test": {"dice_native": dice}, "wall_time_s": wall}
    (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for side, jitter, dice0, dice1, wall in GRID:
        given = ["data=idrid", "+sweep=tune", f"roi.side_diameters={side}", f"roi.jitter={jitter}"]
        for fold, dice in enumerate([dice0, dice1]):
            job = tmp_path / "tune" / f"side_{side}_jitter_{jitter}" / f"fold_{fold}"
            write_job(job, [*given, f"data.fold={fold}"], dice, wall)
    return tmp_path


def test_a_variant_is_the_grid_point_averaged_over_folds(sweep):
    variants = rank_variants(sweep)
    assert [v.label() for v in variants] == [
        "roi.jitter=0.05 roi.side_diameters=3.0",
        "roi.jitter=0.15 roi.side_diameters=2.0",
        "roi.jitter=0.05 roi.side_diameters=2.0",
        "roi.jitter=0.15 roi.side_diameters=3.0",
    ]
    assert variants[0].score == pytest.approx(0.945) and variants[0].jobs == 2
    assert variants[1].score == pytest.approx(0.945) and variants[1].wall_s == 24
    last = variants[-1]
    assert math.isnan(last.score) and last.failed == 1, "a failed job disqualifies its variant"


def test_the_command_writes_the_table_and_the_chosen_overrides(sweep, capsys):
    assert tune_main([str(sweep)]) == 0
    assert yaml.safe_load((sweep / "chosen.yaml").read_text()) == {
        "roi.jitter": "0.05",
        "roi.side_diameters": "3.0",
    }
    table = (sweep / "tune.md").read_text()
    assert "| **roi.jitter=0.05 roi.side_diameters=3.0** | 0.9450 | 2 | 0 | 18 |" in table
    assert "| roi.jitter=0.15 roi.side_diameters=3.0 | n/a | 2 | 1 | 10 |" in table
    assert "chosen: roi.jitter=0.05 roi.side_diameters=3.0" in capsys.readouterr().out
    line = (sweep / "chosen.overrides").read_text()
    assert line == "roi.jitter=0.05 roi.side_diameters=3.0\n", "one line for the next command"


def test_nothing_is_chosen_without_a_complete_variant(tmp_path, capsys):
    write_job(tmp_path / "tune" / "a", ["roi.jitter=0.1"], None, 1)
    write_job(tmp_path / "tune" / "b", ["roi.jitter=0.2"], None, 1)
    with pytest.raises(ReportError, match="no variant finished"):
        chosen_overrides(rank_variants(tmp_path))
    assert tune_main([str(tmp_path)]) == 2
    assert "no variant finished" in capsys.readouterr().err
    assert not (tmp_path / "chosen.yaml").exists()


def test_a_job_without_recorded_overrides_is_refused(sweep):
    (sweep / "tune" / "side_2.0_jitter_0.05" / "fold_0" / ".hydra" / "overrides.yaml").unlink()
    with pytest.raises(ReportError, match="overrides.yaml is missing.*multirun"):
        rank_variants(sweep)


@pytest.mark.parametrize(
    ("template", "keys", "n"),
    [
        ("tune", {"roi.side_diameters", "roi.jitter"}, 12),
        ("tune_training", {"net.base_width", "model.scheduler"}, 4),
    ],
)
def test_the_tuning_templates_sweep_on_scratch_fold_0_all_masks(template, keys, n):
    from tests.test_config import compose_cfg

    cfg = compose_cfg("+sweep=tune", "experiment=real", "data=idrid", hydra=True)
    params = cfg.hydra.sweeper.params
    assert set(params) == {"roi.side_diameters", "roi.jitter"}
    assert (
        len(str(params["roi.side_diameters"]).split(","))
        * len(str(params["roi.jitter"]).split(","))
        == 12
    )
    assert (cfg.phase, cfg.model.init, cfg.data.fold, cfg.data.fraction) == (
        "segment",
        "scratch",
        0,
        1.0,
    )
    assert cfg.roi.test_centres == "predicted", "tuning scores crops the localizer places"


def test_each_real_recipe_is_tuned_on_the_other_dataset():
    """The rule of docs/recipe.md, as the Makefile wires it: make drions runs the recipe that
    make tune-drions chose, and make tune-drions never sees a DRIONS-DB photograph (and the
    same for IDRiD)."""
    import subprocess

    from tests.test_config import compose_cfg

    def dry_run(target: str) -> str:
        return subprocess.run(
            ["make", "-n", target], capture_output=True, text=True, check=True
        ).stdout

    for target, other in (("drions", "idrid"), ("idrid", "drions")):
        tuning = dry_run(f"tune-{target}")
        assert f"data={other} " in tuning and f"data={target} " not in tuning
        assert f"experiment=real_{target}" in dry_run(target)
        recipe = compose_cfg("+phase=segment", f"experiment=real_{target}", f"data={target}")
        assert recipe.roi.test_centres == "predicted" and recipe.steps.segment == 500

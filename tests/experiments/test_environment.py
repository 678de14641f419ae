"""metrics.json says what "same seed, same numbers" depends on (#16.10): versions, CPU, ISA."""

from __future__ import annotations

import json
import platform

import numpy as np
import pytorch_lightning as pl
import torch

from locseg.benchmark.system import cpu_name
from locseg.experiments.environment import environment

FIELDS = {
    "torch",
    "lightning",
    "numpy",
    "python",
    "cpu",
    "cpu_capability",
    "threads",
    "device",
    "device_name",
}


def check_environment(record: dict, threads: int | None = None) -> None:
    assert FIELDS <= set(record), FIELDS - set(record)
    assert record["torch"] == torch.__version__
    assert record["lightning"] == pl.__version__
    assert record["numpy"] == np.__version__
    assert record["python"] == platform.python_version()
    assert record["cpu"] == cpu_name() and record["cpu"]
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["threads"] == (threads or torch.get_num_threads())


def test_environment_is_torchs_own_answers():
    record = environment()
    check_environment(record)
    assert record["device"] == "cpu" and record["device_name"] is None
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert environment("cpu")["threads"] == 1
    finally:
        torch.set_num_threads(previous)
    json.dumps(record)  # plain JSON


def test_isa_overrides_are_recorded(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert environment()["isa_overrides"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_training_and_evaluation_metrics_record_the_environment(tmp_path):
    from conftest import make_dataset
    from test_train import compose_job

    from locseg.evaluate import evaluate
    from locseg.train import run_job

    root = make_dataset(tmp_path / "d", n_masked=9)
    cfg = compose_job("segment", tmp_path / "S", root, "steps.segment=2", "threads=1")
    previous = torch.get_num_threads()
    try:
        run_job(cfg)
        trained = json.loads((tmp_path / "S" / "metrics.json").read_text())
        assert trained["status"] == "ok"
        check_environment(trained["environment"], threads=1)  # the job's threads=1
        assert trained["environment"]["device"] == "cpu"
        ckpt = trained["best_checkpoint"]
        evaluate(ckpt, root, tmp_path / "E", cache_dir=tmp_path / "cache", device="cpu")
    finally:
        torch.set_num_threads(previous)
    evaluated = json.loads((tmp_path / "E" / "metrics.json").read_text())
    check_environment(evaluated["environment"], threads=1)  # evaluated under the same 1
    assert evaluated["environment"]["device"] == evaluated["device"] == "cpu"

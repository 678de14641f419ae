"""``python -m locseg.bench``: does locseg cost its users speed? One run, ratios against targets.

This file parses the command line and calls :mod:`locseg.benchmark` (the sections, the paired
statistics, the table). ``--quick`` is the CI smoke run: tiny sizes, one round.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console

from locseg.benchmark.core import SECTIONS, Row  # noqa: F401  (re-exported for scripts and tests)
from locseg.benchmark.memory import memory_child
from locseg.benchmark.render import render
from locseg.benchmark.run import make_settings, run, scales
from locseg.benchmark.system import (  # noqa: F401  (re-exported)
    choose_threads,
    peak_rss_mib,
    rss_mib,
    silence_lightning,
)
from locseg.benchmark.timing import (  # noqa: F401  (re-exported)
    epoch_images,
    median_interval,
    paired_ratios,
    rotations,
)
from locseg.io import write_json_atomic


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m locseg.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--image-size", type=int, help="demo input size in px (default 64)")
    parser.add_argument("--paper-size", type=int, help="paper input size in px (default 256)")
    parser.add_argument(
        "--batches",
        type=int,
        help="batches per measurement (8) and per timed epoch in (1) (default: whole epochs)",
    )
    parser.add_argument("--epochs", type=int, help="timed epochs per side in (1) (20)")
    parser.add_argument("--repeats", type=int, help="interleaved rounds in (2)-(4) (9)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (0: default; 1 if busy)"
    )
    parser.add_argument(
        "--compile",
        choices=("auto", "all", "none"),
        default="auto",
        help="torch.compile: auto = both sizes on CUDA, demo size only on CPU",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (CI smoke)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for option in ("image_size", "paper_size", "batches", "epochs", "repeats"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device; use --device cpu or auto")
    args.parser = parser
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return None
    from locseg.models.unet import check_input_size

    demo, paper = scales(args.quick, args.image_size, args.paper_size)
    for scale, option in ((demo, "--image-size"), (paper, "--paper-size")):
        try:
            check_input_size(scale.image_size, scale.depth)
        except ValueError as error:
            args.parser.error(f"{option}: {error}")
    silence_lightning()
    settings, why = make_settings(
        demo,
        paper,
        quick=args.quick,
        device=args.device,
        threads=args.threads,
        batches=args.batches,
        repeats=args.repeats,
        epochs=args.epochs,
        compile=args.compile,
    )
    rows, result = run(settings, why)
    Console(width=max(Console().width, 160)).print(render(rows, result["meta"]))
    if args.json:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()

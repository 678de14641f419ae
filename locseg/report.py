"""python -m locseg.report SWEEP_DIR: collect a sweep's metrics.json files into a report.

Writes ``results.csv`` (one row per job), ``report.md`` (Dice per fraction and arm, the localizer's
error, paired tests against the baseline arm, failed, incomplete and stale jobs) and
``dice_vs_fraction.png`` into SWEEP_DIR, and logs the table and the figure to W&B (offline unless
WANDB_MODE says otherwise). Parses, wires and calls ``locseg.experiments.report``; reads files
only (no torch, no models), so it starts fast and runs anywhere the sweep folder is.
"""

from __future__ import annotations

import argparse
import sys

from locseg.experiments.report import ReportError, run_report
from locseg.experiments.report.console import print_summary

__all__ = ["main"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m locseg.report",
        description="Collect a sweep's metrics.json files into results.csv, report.md and "
        "dice_vs_fraction.png (written into SWEEP_DIR).",
    )
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="output folder of a sweep")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    parser.add_argument(
        "--baseline-arm", default="scratch", help="arm the others are tested against"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        paths, rep = run_report(args.sweep_dir, not args.no_wandb, args.baseline_arm)
    except ReportError as exc:
        print(f"locseg.report: error: {exc}", file=sys.stderr)
        return 2
    print_summary(rep, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())

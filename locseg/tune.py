"""``python -m locseg.tune SWEEP_DIR [--metric test.dice_native]``

Rank a tuning sweep's variants (``+sweep=tune``) and name the best one. Writes
``SWEEP_DIR/tune.md`` (the ranked table), ``SWEEP_DIR/chosen.yaml`` (the winning overrides) and
``SWEEP_DIR/chosen.overrides`` (the same on one line, to pass to the next command).
Run it on a sweep over another dataset than the one the recipe is reported on (docs/recipe.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from locseg.experiments.report.collect import ReportError
from locseg.experiments.tune import chosen_overrides, rank_variants, render
from locseg.io import write_text_atomic


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m locseg.tune", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--metric", default="test.dice_native", help="metrics.json key to rank")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        variants = rank_variants(args.sweep_dir, args.metric)
        table = render(variants, args.metric, args.sweep_dir)
        chosen = chosen_overrides(variants)
    except ReportError as exc:
        print(f"locseg.tune: error: {exc}", file=sys.stderr)
        return 2
    write_text_atomic(args.sweep_dir / "tune.md", table)
    line = " ".join(f"{k}={v}" for k, v in chosen.items())
    write_text_atomic(args.sweep_dir / "chosen.yaml", yaml.safe_dump(chosen, sort_keys=True))
    write_text_atomic(args.sweep_dir / "chosen.overrides", line + "\n")
    print(table)
    print(f"chosen: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

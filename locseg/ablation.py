"""``python -m locseg.ablation LABEL=SWEEP ... --baseline LABEL --out ablation.md``

A table across sweeps (one per localizer variant: head x pool), every arm paired with the
baseline sweep's scratch arm on the same folds, with each localizer's test error. Sweeps whose
folds, data or test-crop localizer differ from the baseline's are refused (exit 1, naming both
sweeps and what differs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from locseg.experiments.ablation import AblationError, ablation, render
from locseg.experiments.report.collect import ReportError
from locseg.io import write_text_atomic


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m locseg.ablation", description=__doc__)
    parser.add_argument("sweeps", nargs="+", help="LABEL=SWEEP_DIR, one per localizer variant")
    parser.add_argument("--baseline", required=True, help="LABEL of the sweep holding scratch")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sweeps = dict(item.split("=", 1) for item in args.sweeps)
    if args.baseline not in sweeps:
        print(f"error: --baseline {args.baseline} is not one of {sorted(sweeps)}", file=sys.stderr)
        return 1
    try:
        rows, label = ablation({k: Path(v) for k, v in sweeps.items()}, args.baseline)
    except (AblationError, ReportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    text = render(rows, label)
    print(text)
    if args.out:
        write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

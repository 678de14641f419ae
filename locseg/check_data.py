"""``python -m locseg.check_data DIR``: verify a dataset folder and print its summary.

Exit 0 when every file is sound, 1 when not, naming every bad file and the fix.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from locseg.data.dataset import DatasetError, check_dataset, describe, load_dataset


def summary_table(summary: dict, title: str) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        table.add_row(str(key), str(value))
    return table


def report(root: str, mask_threshold: int | None = None, console: Console | None = None) -> int:
    """Print the summary and every problem; return the exit code."""
    console = console or Console()
    problems = check_dataset(root, mask_threshold)
    try:
        console.print(
            summary_table(describe(load_dataset(root, mask_threshold)), f"Dataset {root}")
        )
    except DatasetError:
        pass  # the problem is already in the list
    if problems:
        console.print(f"[bold red]{len(problems)} problem(s):[/]")
        for problem in problems:
            console.print(f"  - {problem}", highlight=False, soft_wrap=True)
        return 1
    console.print("[bold green]Dataset is sound.[/]")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m locseg.check_data", description=__doc__)
    parser.add_argument("root", help="dataset folder (images/, masks/, centers.csv)")
    parser.add_argument("--mask-threshold", type=int, default=None, help="binarise masks at > T")
    args = parser.parse_args(argv)
    return report(args.root, args.mask_threshold)


if __name__ == "__main__":
    sys.exit(main())

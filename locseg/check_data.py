"""``python -m locseg.check_data DIR``: verify a dataset folder and print its summary.

Exit 0 when every file is sound, 1 when not, naming every bad file and the fix.

Near-duplicate photographs (the same photo re-encoded, resized or re-exposed, or a second shot
of the same eye; see :mod:`locseg.data.fingerprints`) are listed inside DIR and, with
``--against OTHER ...``, between DIR and each OTHER folder; ``--duplicates-csv OUT.csv`` writes
them as ``image,other_root,other_image,score,registered`` (``score``: the fingerprint score that
made the pair a candidate; ``registered``: the aligned comparison that decided). They are
information, not errors: the exit code stays 0.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from locseg.data.dataset import DatasetError, check_dataset, describe, load_dataset
from locseg.data.fingerprints import (
    DEFAULT_THRESHOLD,
    REGISTERED_THRESHOLD,
    DuplicatePair,
    find_duplicates,
    folder_images,
    within_duplicates,
)
from locseg.io import atomic_path

CSV_COLUMNS = ("image", "other_root", "other_image", "score", "registered")
SHOWN_PAIRS = 20  # the console lists this many pairs; the CSV holds all


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


def duplicate_rows(
    root: str | Path,
    against: list[str | Path],
    threshold: float = DEFAULT_THRESHOLD,
    cache_dir: Path | None = None,
    registered_threshold: float = REGISTERED_THRESHOLD,
) -> list[dict]:
    """Near-duplicate pairs inside ``root`` then between ``root`` and each ``against`` folder.

    Rows hold ``CSV_COLUMNS``; image ids are file stems, as in the canonical format.
    """
    images = folder_images(Path(root))
    rows = [
        _row(pair, root)
        for pair in within_duplicates(images, cache_dir, threshold, registered_threshold)
    ]
    for other in against:
        others = folder_images(Path(other))
        pairs = find_duplicates(images, others, cache_dir, threshold, registered_threshold)
        rows += [_row(pair, other) for pair in pairs]
    return rows


def _row(pair: DuplicatePair, other_root: str | Path) -> dict:
    return {
        "image": pair.query.stem,
        "other_root": str(other_root),
        "other_image": pair.reference.stem,
        "score": f"{pair.score:.4f}",
        "registered": f"{pair.registered:.4f}",
    }


def write_duplicates_csv(path: str | Path, rows: list[dict]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def duplicates_report(
    root: str,
    against: list[str],
    threshold: float,
    csv_path: str | None,
    console: Console,
    registered_threshold: float = REGISTERED_THRESHOLD,
) -> int:
    """Print (and write) the near-duplicate pairs; 1 only if a folder cannot be read."""
    try:
        rows = duplicate_rows(root, against, threshold, None, registered_threshold)
    except DatasetError as error:
        console.print(f"[bold red]duplicate search failed:[/] {error}", soft_wrap=True)
        return 1
    folders = ", ".join([root, *against])
    if rows:
        table = Table(title=f"Near-duplicate photographs (registered <= {registered_threshold})")
        for column in CSV_COLUMNS:
            table.add_column(column)
        for row in rows[:SHOWN_PAIRS]:
            table.add_row(*(row[column] for column in CSV_COLUMNS))
        console.print(table)
        more = f" ({len(rows) - SHOWN_PAIRS} more in the CSV)" if len(rows) > SHOWN_PAIRS else ""
        console.print(f"{len(rows)} near-duplicate pair(s) in {folders}{more}.", highlight=False)
    else:
        console.print(f"No near-duplicate photographs in {folders}.", highlight=False)
    if csv_path:
        console.print(f"Pairs written to {write_duplicates_csv(csv_path, rows)}", highlight=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m locseg.check_data", description=__doc__)
    parser.add_argument("root", help="dataset folder (images/, masks/, centers.csv)")
    parser.add_argument("--mask-threshold", type=int, default=None, help="binarise masks at > T")
    parser.add_argument(
        "--against",
        nargs="+",
        default=[],
        metavar="OTHER",
        help="also list photographs of DIR that are in these folders (dataset or image folders)",
    )
    parser.add_argument(
        "--duplicates-csv", metavar="OUT.csv", help="write the near-duplicate pairs to this CSV"
    )
    parser.add_argument(
        "--duplicate-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="T",
        help="fingerprint score up to which a pair is a candidate, checked by registration "
        f"(nearest neighbours are candidates anyway; default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--registered-threshold",
        type=float,
        default=REGISTERED_THRESHOLD,
        metavar="R",
        help="registered score (1 - correlation once aligned) up to which a candidate is the "
        f"same photograph or eye (default {REGISTERED_THRESHOLD})",
    )
    parser.add_argument(
        "--no-duplicates", action="store_true", help="skip the near-duplicate search"
    )
    args = parser.parse_args(argv)
    console = Console()
    code = report(args.root, args.mask_threshold, console)
    if args.no_duplicates:
        return code
    if code != 0:
        console.print("Near-duplicate search skipped: fix the problems above first.")
        return code
    return duplicates_report(
        args.root,
        args.against,
        args.duplicate_threshold,
        args.duplicates_csv,
        console,
        args.registered_threshold,
    )


if __name__ == "__main__":
    sys.exit(main())

"""``python -m locseg.prepare NAME ...``: make a canonical dataset (dispatch only).

Each preparer is a module with ``HELP``, ``add_arguments(parser)`` and ``prepare(args) -> dict``;
this file builds the command line, runs it, prints the summary and checks the output folder.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from locseg.check_data import report, summary_table

PREPARERS = {
    "synthetic": "locseg.data.synthetic",
    "drishti": "locseg.data.converters.drishti",
    "idrid": "locseg.data.converters.idrid",
    "refuge": "locseg.data.converters.refuge",
    "rimone": "locseg.data.converters.rimone",
    "folder": "locseg.data.converters.folder",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m locseg.prepare", description=__doc__)
    commands = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, module_name in PREPARERS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=getattr(module, "HELP", module.__doc__))
        module.add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    summary = args.module.prepare(args)
    console.print(summary_table(summary, f"prepare {args.name}"))
    return report(str(args.out_dir), console=console)


if __name__ == "__main__":
    sys.exit(main())

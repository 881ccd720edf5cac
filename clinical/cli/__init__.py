"""The ``clinical`` command.

Each sub-command lives in its own module here and exposes ``add_parser``;
this module only assembles them. Heavy libraries are imported inside the
handlers, so ``clinical --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from clinical import __version__
from clinical.cli import (
    audit,
    federate,
    ingest,
    mil,
    pretrain,
    pull,
    rejections,
    report,
    screen,
    serve,
    split,
    study,
    synth,
    train,
)
from clinical.errors import ClinicalError

__all__ = ["main"]

#: Sub-command modules, in the order of the data flow.
COMMANDS = (synth, ingest, pull, rejections, split, audit, pretrain, train, mil, screen, study, federate, report, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinical", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"clinical {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; domain errors become one readable line and exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except ClinicalError as error:
        print(f"clinical {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`cvae-data`: data set tools. Each verb lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import sys

from ..errors import CvaeError


def build_parser() -> argparse.ArgumentParser:
    from . import check, convert, pack, synth

    parser = argparse.ArgumentParser(prog="cvae-data", description="Data set tools for cvae_video.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    synth.add_parser(sub)
    convert.add_parser(sub)
    check.add_parser(sub)
    pack.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CvaeError as e:
        print(f"cvae-data {args.verb}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

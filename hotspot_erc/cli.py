"""The ``hotspot-erc`` command line: train, evaluate, predict, inspect, ablate, convert, info, bench.

Exit codes, the same for every command (``EXIT_CODES``):

  0    success
  1    unexpected error: a bug, printed with its traceback (please report it)
  2    usage or settings: unknown or malformed flags, values out of range, a --config file that is
       missing or not TOML, an unavailable --device, a missing optional package; for convert, an
       option the format does not take or a bad value (checked before anything is read)
  3    data: a corpus or source file that is missing, unreadable, truncated, not in the expected
       layout or inconsistent (labels, feature dims, splits, speakers, nothing labelled); for
       convert, anything wrong found once reading has begun
  4    checkpoint: missing, corrupt, truncated, edited, or not fitting the corpus or the settings
  5    output: the output location cannot be written (a file, read-only, full disk) or holds
       something hotspot-erc refuses to replace or delete
  6    training diverged: the loss or the weights became NaN/Inf (nothing non-finite is saved)
  130  interrupted (Ctrl-C); a training run keeps its last completed epoch (--resume continues it)

Every error a user can fix prints one line to stderr, ``hotspot-erc <command>: error: <message>``,
naming the argument or file and what was expected; argparse's own usage errors also exit with 2.
"""
from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
import textwrap

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_DATA, EXIT_CHECKPOINT, EXIT_OUTPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = \
    0, 1, 2, 3, 4, 5, 6, 130
EXIT_CODES = {EXIT_OK: "success", EXIT_BUG: "unexpected error (a bug: traceback printed)",
              EXIT_USAGE: "usage or settings", EXIT_DATA: "corpus or source data", EXIT_CHECKPOINT: "checkpoint",
              EXIT_OUTPUT: "output location", EXIT_DIVERGED: "training diverged (NaN/Inf)",
              EXIT_INTERRUPTED: "interrupted"}
# Errors of the environment, never of the code: reported as output problems wherever they escape.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

EPILOG = """\
exit codes: 0 ok, 1 bug (traceback), 2 usage/settings, 3 data, 4 checkpoint, 5 output location,
            6 training diverged (NaN/Inf), 130 interrupted

examples:
  hotspot-erc train --synthetic          # generate the synthetic corpus, train, evaluate, report
  hotspot-erc train --corpus data/iemocap --config my.toml --no-graph
  torchrun --nproc_per_node 2 -m hotspot_erc.cli train --synthetic --device cpu
  hotspot-erc evaluate runs/<run>/checkpoints/best.safetensors --corpus data/iemocap --split test
  hotspot-erc predict runs/<run>/checkpoints/best.safetensors --corpus data/iemocap --dialogue Ses05F_impro01 -o pred.json
  hotspot-erc inspect runs/<run>         # runs/<run>/report.html: gates, routing, graph, robustness, dialogues
  hotspot-erc ablate --synthetic --seeds 0 1 2
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks, wraps long descriptions."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=100)

    def _fill_text(self, text, width, indent):
        return "\n".join(textwrap.fill(p, width, initial_indent=indent, subsequent_indent=indent)
                         if len(p) > width and not p.startswith(" ") else p for p in text.splitlines())


_formatter = _Formatter


def build_parser() -> argparse.ArgumentParser:
    from hotspot_erc.train import config as C
    from hotspot_erc.train.run import DEFAULT_VARIANTS, VARIANTS

    p = argparse.ArgumentParser(
        prog="hotspot-erc", formatter_class=_formatter, epilog=EPILOG,
        description="Multimodal emotion recognition in conversations with emotion hotspots.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    # ---------------------------------------------------------------- train
    t = sub.add_parser("train", formatter_class=_formatter,
                       help="train a model, evaluate it on test and write a run folder",
                       description="Train HotspotERC on a corpus, keep the best dev epoch (weighted F1), "
                                   "evaluate it on test and write the run folder: config.json, "
                                   "checkpoints/{last,best}.safetensors, metrics.json, history.json, "
                                   "confusion matrix, diagnostic plots and report.html (see `hotspot-erc "
                                   "inspect`). Settings come from defaults, then --config TOML, then flags.")
    t.add_argument("--config", metavar="TOML", help="TOML file with [model], [train] and [data] tables")
    t.add_argument("--run-dir", metavar="DIR", help="run folder (default: <runs-root>/<UTC timestamp>)")
    t.add_argument("--runs-root", metavar="DIR", default="runs", help="parent of new run folders (default: runs)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from checkpoints/last.safetensors; ends as the "
                        "uninterrupted run would")
    C.add_arguments(t)

    # ---------------------------------------------------------------- evaluate
    e = sub.add_parser("evaluate", formatter_class=_formatter, help="metrics of a checkpoint on a corpus split",
                       description="Accuracy, weighted F1, per-class F1 and the confusion matrix of a checkpoint "
                                   "on one split; with --out, also the report plots and predictions.")
    e.add_argument("checkpoint", help="a .safetensors checkpoint (e.g. runs/<run>/checkpoints/best.safetensors)")
    _corpus_args(e)
    e.add_argument("--split", default="test", help="split to evaluate (default: test)")
    e.add_argument("--out", metavar="DIR", help="write metrics.json, plots and predictions into DIR")
    _runtime_args(e, C)

    # ---------------------------------------------------------------- predict
    r = sub.add_parser("predict", formatter_class=_formatter,
                       help="per-utterance emotions and probabilities from a checkpoint",
                       description="Apply a checkpoint to a corpus (all dialogues, one split, or one "
                                   "conversation) and write the predicted emotion and class probabilities "
                                   "of every utterance as JSON or CSV.")
    r.add_argument("checkpoint", help="a .safetensors checkpoint")
    _corpus_args(r)
    r.add_argument("--split", help="only this split (default: every dialogue of the corpus)")
    r.add_argument("--dialogue", metavar="ID", help="only this conversation (its dialogue id)")
    r.add_argument("-o", "--output", metavar="FILE",
                   help="output file; its extension picks the format: .json or .csv (anything else is "
                        "refused) (default: print JSON lines to stdout)")
    _runtime_args(r, C)

    # ---------------------------------------------------------------- inspect
    i = sub.add_parser("inspect", formatter_class=_formatter,
                       help="write one offline HTML report of a trained run (and a JSON of its numbers)",
                       description="Check a trained run on held-out data and write report.html, one self-contained "
                                   "page that opens offline, with report.json beside it: the run and its metrics; "
                                   "HGF gates against frame intensity and, on the synthetic stories, against the "
                                   "planted bursts (verdict: concentrated / flat / inverted); MoA expert usage per "
                                   "class, speaker and turn with the mutual information against shuffled labels; "
                                   "where MoA's hotspot queries attend; graph edge families removed at inference, "
                                   "per dialogue length; missing modalities and noise; MoA against plain "
                                   "cross-attention time; and a dialogue browser. Ablations reuse the trained "
                                   "weights.")
    i.add_argument("run_dir", help="a run folder written by `hotspot-erc train` (its checkpoints/best.safetensors)")
    i.add_argument("--corpus", metavar="DIR", help="corpus to inspect on (default: the run's own, from its "
                                                   "config.json); it must fit the checkpoint")
    i.add_argument("--split", help="split to inspect (default: test; dev when test has no labelled utterance)")
    i.add_argument("-o", "--output", metavar="FILE",
                   help="report file ending in .html (default: RUN_DIR/report.html); the JSON of the same "
                        "numbers is written beside it with .json")
    i.add_argument("--max-dialogues", type=int, default=40, metavar="N",
                   help="dialogues in the per-dialogue view; a larger split is sampled, and the report says "
                        "how many of how many it shows (default: 40)")
    i.add_argument("--seed", type=int, default=0,
                   help="seed of the dialogue sample, the missing-modality and noise draws, the bootstrap "
                        "and the shuffles (default: 0)")
    C.add_arguments(i, sections=("train",), only=("batch_size", "device", "progress"),
                    default_note="the checkpoint's setting")

    # ---------------------------------------------------------------- ablate
    a = sub.add_parser("ablate", formatter_class=_formatter,
                       help="train the ablation grid over seeds and print a mean ± std table",
                       description="Train each variant (the settings below as the base) for each seed, "
                                   "evaluate on test and print test weighted F1 / accuracy as mean ± std. "
                                   "Variants: " + ", ".join(f"{k} {v or '(base settings)'}" for k, v in VARIANTS.items()))
    a.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS),
                   metavar="VARIANT", help=f"variants to run (default: {' '.join(DEFAULT_VARIANTS)})")
    a.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="SEED", help="seeds (default: 0 1 2)")
    a.add_argument("--config", metavar="TOML", help="TOML file with the base settings")
    a.add_argument("--run-dir", metavar="DIR", help="output folder (default: <runs-root>/ablate-<UTC timestamp>)")
    a.add_argument("--runs-root", metavar="DIR", default="runs", help="parent of new run folders (default: runs)")
    C.add_arguments(a)

    # ---------------------------------------------------------------- convert / info / bench
    c = sub.add_parser("convert", formatter_class=_formatter,
                       help="convert IEMOCAP / COGMEN / MOSEI pickles or conversation CSVs to the native corpus format",
                       description="Write a corpus in the native format from a source format. Options are checked "
                                   "before anything is read (a bad one exits 2); a problem with the source exits 3, "
                                   "one with the output folder 5.")
    try:
        from hotspot_erc.data.convert import add_convert_arguments
    except ImportError as exc:
        c.set_defaults(_convert_missing=str(exc))
    else:
        _register_text_converter()
        add_convert_arguments(c)
    sub.add_parser("info", help="versions, build facts and which backend each op uses")
    sub.add_parser("bench", formatter_class=_formatter, help="run the benchmarks (python -m benchmarks.run_all)",
                   description="Run `python -m benchmarks.run_all` from the repository root; every further "
                               "argument (e.g. --quick) is passed on to it.")
    return p


def _register_text_converter() -> None:
    """``convert conversation-csv``: the text layer's converter sits above the data layer's
    registry, so the CLI (which may import every layer) hands it over."""
    from hotspot_erc.data.convert import CONVERTERS, Converter, register

    if "conversation-csv" in CONVERTERS:
        return
    try:
        from hotspot_erc.text.convert import add_csv_arguments, run_csv_convert
    except ImportError:
        return

    def add(parser) -> None:
        parser.add_argument("src", help="a CSV file (a split column, else all train) or a folder of per-split "
                                        "CSVs (train_sent_emo.csv, emorynlp_dev_final.csv, ...)")
        parser.add_argument("out_dir", help="corpus folder to create")
        add_csv_arguments(parser)

    register(Converter("conversation-csv", "MELD, EmoryNLP or any conversation CSV, with word-level text features",
                       add, run_csv_convert, "Read conversation CSVs (one row per utterance) and write a corpus "
                                             "with word-level text features and per-word intensity."))


def _corpus_args(p) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--corpus", metavar="DIR", help="corpus folder in the native format")
    g.add_argument("--synthetic", action="store_true", help="the synthetic corpus in --synthetic-dir")
    p.add_argument("--synthetic-dir", default="data/synthetic", metavar="DIR",
                   help="synthetic corpus folder (default: data/synthetic)")


def _runtime_args(p, C) -> None:
    """The model and every other setting come from the checkpoint; these [train] flags override it."""
    C.add_arguments(p, sections=("train",), only=C.RUNTIME_FIELDS, default_note="the checkpoint's setting")


def _version() -> str:
    from hotspot_erc import __version__

    return f"hotspot-erc {__version__}"


def _corpus_path(args) -> str:
    if args.corpus:
        return args.corpus
    if not os.path.exists(os.path.join(args.synthetic_dir, "meta.json")):
        from hotspot_erc.train.run import DataError

        raise DataError(f"no synthetic corpus in {args.synthetic_dir}; run `hotspot-erc train --synthetic` first")
    return args.synthetic_dir


# ----------------------------------------------------------------------------- commands

def _config(args):
    from hotspot_erc.train import config as C
    from hotspot_erc.train.run import UserError

    try:
        return C.from_args(args, args.config)
    except ValueError as exc:  # unknown TOML keys, wrong types, values out of range
        raise UserError(str(exc)) from exc


def cmd_train(args) -> int:
    from hotspot_erc.train import run

    cfg = _config(args)
    res = run.train(cfg, run_dir=args.run_dir, resume=args.resume, root=args.runs_root)
    if res["files"]:
        m = res["metrics"]
        split = "test" if m.get("test") else "dev"
        print(f"best epoch {m['best_epoch']}/{m['epochs_run']}: {split} accuracy {m[split]['accuracy']:.4f}, "
              f"weighted F1 {m[split]['weighted_f1']:.4f}")
        for w in m.get("warnings", []):
            print(f"warning: {w}")
        print(f"metrics: {os.path.join(res['run_dir'], 'metrics.json')}")
        _train_report(res["run_dir"], cfg)
    return 0


def _train_report(run_dir: str, cfg) -> None:
    """The run's report.html, or the command that makes it."""
    from hotspot_erc.train.run import UserError

    again = f"hotspot-erc inspect {run_dir}"
    if not cfg.train.report:
        print(f"report: not written (--no-report); make it with: {again}")
        return
    from hotspot_erc.inspect import inspect_run

    try:
        got = inspect_run(run_dir, device=cfg.train.device, batch_size=cfg.train.batch_size,
                          progress=cfg.train.progress)
    except UserError as exc:  # the trained run is kept; only its report is missing
        print(f"report: not written ({exc}); make it with: {again}")
        return
    print(f"report: {got['html']}")


def cmd_inspect(args) -> int:
    from hotspot_erc.inspect.report import inspect_run, summary_lines
    from hotspot_erc.train import config as C

    rt = C.flag_values(args).get("train", {})
    got = inspect_run(args.run_dir, corpus=args.corpus, split=args.split, out=args.output,
                      device=rt.get("device"), batch_size=rt.get("batch_size"),
                      max_dialogues=args.max_dialogues, seed=args.seed, progress=rt.get("progress"))
    for line in summary_lines(got["report"]):
        print(line)
    print(f"numbers: {got['json']}")
    print(f"report: {got['html']}")
    return 0


def _runtime(args) -> dict:
    from hotspot_erc.train import config as C

    return C.flag_values(args).get("train", {})


def cmd_evaluate(args) -> int:
    import json

    from hotspot_erc.train import run

    m = run.evaluate(args.checkpoint, _corpus_path(args), split=args.split, out_dir=args.out, **_runtime(args))
    s = m[args.split]
    print(f"{args.split}: accuracy {s['accuracy']:.4f}  weighted F1 {s['weighted_f1']:.4f}  "
          f"({s['support']} labelled utterances)")
    print("per-class F1: " + json.dumps({k: round(v, 4) for k, v in s["per_class_f1"].items()}))
    for w in m.get("warnings", []):
        print(f"warning: {w}")
    if args.out:
        print(f"report: {os.path.join(args.out, 'metrics.json')}")
    return 0


def cmd_predict(args) -> int:
    import json

    from hotspot_erc.train import run

    res = run.predict_corpus(args.checkpoint, _corpus_path(args), split=args.split, dialogue=args.dialogue,
                             out=args.output, **_runtime(args))
    if args.output:
        print(f"wrote {len(res['utterance_ids'])} predictions to {args.output}")
        return 0
    names = res["label_names"]
    for uid, pred, prob in zip(res["utterance_ids"], res["preds"], res["probs"]):
        print(json.dumps({"utterance_id": uid, "predicted": names[int(pred)],
                          "probabilities": {n: round(float(p), 6) for n, p in zip(names, prob)}}))
    return 0


def cmd_ablate(args) -> int:
    from hotspot_erc.train import run

    cfg = _config(args)
    res = run.ablate(cfg, variants=args.variants, seeds=args.seeds, root=args.runs_root, run_dir=args.run_dir)
    print(res["table"])
    print(f"report: {os.path.join(res['run_dir'], 'ablation.json')}")
    return 0


def cmd_convert(args) -> int:
    if getattr(args, "_convert_missing", None):
        print(f"hotspot-erc convert: error: the converters are not available in this install "
              f"({args._convert_missing})", file=sys.stderr)
        return EXIT_USAGE
    from hotspot_erc.data.convert import run_converter

    return run_converter(args)


def cmd_info(args) -> int:
    from hotspot_erc import info

    rc = info.main()
    return int(rc or 0)


def cmd_bench(args) -> int:
    root = os.getcwd()
    if not os.path.exists(os.path.join(root, "benchmarks", "run_all.py")):
        print("error: `hotspot-erc bench` runs benchmarks/run_all.py from a source checkout, and there is none in "
              f"{root} (benchmarks are not installed with the package; run it from the repository root)",
              file=sys.stderr)
        return 2
    extra = [a for a in args.extra if a != "--"]
    return subprocess.call([sys.executable, "-m", "benchmarks.run_all", *extra], cwd=root)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "inspect": cmd_inspect,
            "ablate": cmd_ablate, "convert": cmd_convert, "info": cmd_info, "bench": cmd_bench}


def exit_code_for(exc: BaseException, command: str | None = None) -> int | None:
    """The exit code of the policy above for an error a user can fix; None for anything else."""
    from hotspot_erc.data.format import CorpusFormatError, CorpusWriteError, OutputRefused, RecordError
    from hotspot_erc.data.iemocap import ReaderError
    from hotspot_erc.data.safe_pickle import UnreadablePickleError, UnsafePickleError
    from hotspot_erc.train.checkpoint import CheckpointError
    from hotspot_erc.train.run import UserError
    from hotspot_erc.train.trainer import TrainingDiverged

    if isinstance(exc, UserError):
        return exc.exit_code
    if isinstance(exc, CheckpointError):
        return EXIT_CHECKPOINT
    if isinstance(exc, TrainingDiverged):
        return EXIT_DIVERGED
    if isinstance(exc, (CorpusWriteError, OutputRefused, FileExistsError)):
        return EXIT_OUTPUT
    if isinstance(exc, (CorpusFormatError, RecordError, ReaderError, UnsafePickleError, UnreadablePickleError)):
        return EXIT_DATA
    try:
        from hotspot_erc.text.csv_reader import CsvFormatError
        from hotspot_erc.text.encoders import MissingTextExtra
        from hotspot_erc.text.lexicon import TaggerFileError
    except ImportError:
        pass
    else:
        if isinstance(exc, (CsvFormatError, TaggerFileError)):
            return EXIT_DATA
        if isinstance(exc, MissingTextExtra):
            return EXIT_USAGE
    if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
        return EXIT_OUTPUT
    if command == "convert" and isinstance(exc, ValueError):
        # Data errors are typed (above); a plain ValueError is an option check that runs before
        # reading (data.convert.check_options, the CSV converter's argument checks).
        return EXIT_USAGE
    return None


def error_exit(exc: BaseException, command: str) -> int:
    """Print ``exc`` as the one-line error of the policy and return its exit code; re-raise what is
    not a user's problem, so a bug keeps its traceback."""
    code = exit_code_for(exc, command)
    if code is None:
        raise exc
    msg = str(exc)
    if isinstance(exc, OSError) and exc.strerror and msg.startswith("["):
        msg = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    print(f"hotspot-erc {command}: error: {' '.join(msg.split())}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        kept = ("; the last completed epoch's checkpoint is kept (continue with --resume)"
                if args.command in ("train", "ablate") else "")
        print(f"hotspot-erc {args.command}: interrupted{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - error_exit re-raises anything that is not a user's problem
        return error_exit(exc, args.command)


if __name__ == "__main__":
    raise SystemExit(main())

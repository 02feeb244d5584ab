"""``devlab space ...`` and ``devlab estimator ...``: search-space tables and latency estimators.

Thin wrappers over ``backends.space``: parse arguments, call, render with rich. Exit codes:
0 done, 1 the work failed (too few usable points, modules missing from the table), 2 a bad
argument or input file (the message names it and the fix). Never imports textual.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from backends.core.extras import MissingExtra
from console.cli.exit_codes import ExitCode, UsageError

EPILOG_SPACE = """\
examples:
  devlab space show assets/spaces/mobilenetv2_cifar10.json
  devlab space modules assets/spaces/mobilenetv2_cifar10.json --out space/modules
  devlab space sample assets/spaces/mobilenetv2_cifar10.json --n 50 --seed 0 --out space/sampled
  devlab --run space/modules --device host:cpu --threads 1 --out space/modules-results
"""
EPILOG_ESTIMATOR = """\
examples:
  devlab estimator fit --table space/modules-results/latency_table.csv \\
      --sampled space/sampled-results/results.csv --out space/estimator.json
  devlab estimator predict space/estimator.json space/sampled/arch_007.onnx
  devlab estimator predict space/estimator.json --space SPACE.json --arch arch.json
"""


def run_space_tool(args: list[str], err: Console) -> int:
    """``space modules|sample|show ...`` or ``estimator fit|predict ...``; returns the exit code."""
    try:
        if args[:1] == ["space"]:
            parsed = build_space_parser().parse_args(args[1:])
        elif args[:1] == ["estimator"]:
            parsed = build_estimator_parser().parse_args(args[1:])
        else:
            raise UsageError("expected 'space' or 'estimator' as the first argument")
        return int(parsed.handler(parsed, err))
    except UsageError as error:
        err.print(f"devlab: error: {error}", markup=False, highlight=False)
        return ExitCode.USAGE
    except SystemExit as exit_:  # argparse: --help (0) and its own usage errors (2)
        return int(exit_.code or 0)


# --- parsers ---------------------------------------------------------------------------------


def build_space_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab space",
        description="Search spaces: their module latency tables and sampled architectures.",
        epilog=EPILOG_SPACE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = sub.add_parser(
        "modules", help="write one ONNX model per unique module, plus index.json"
    )
    modules.add_argument("space", metavar="SPACE", help="space file (JSON)")
    modules.add_argument("--out", required=True, metavar="DIR", help="folder for the models")
    modules.add_argument(
        "--granularity",
        choices=("block", "op"),
        default="block",
        help="block: stem, each block, head (default, most accurate on ORT CPU); "
        "op: one module per ONNX op (nnabla-nas style)",
    )
    modules.set_defaults(handler=modules_command)
    sample = sub.add_parser("sample", help="write N sampled architectures, plus index.json")
    sample.add_argument("space", metavar="SPACE", help="space file (JSON)")
    sample.add_argument("--n", type=int, default=50, metavar="N", help="how many (default 50)")
    sample.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    sample.add_argument("--out", required=True, metavar="DIR", help="folder for the models")
    sample.set_defaults(handler=sample_command)
    show = sub.add_parser("show", help="blocks, choices, unique modules, search-space size")
    show.add_argument("space", metavar="SPACE", help="space file (JSON)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=show_command)
    return parser


def build_estimator_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devlab estimator",
        description="Fit and use latency estimators (table sums corrected by a fitted line).",
        epilog=EPILOG_ESTIMATOR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fit = sub.add_parser("fit", help="fit per (device, runtime) and report held-out accuracy")
    fit.add_argument(
        "--table",
        required=True,
        metavar="FILE",
        help="module latencies: latency_table.csv/.json, or the modules' results.csv",
    )
    fit.add_argument(
        "--sampled", required=True, metavar="FILE", help="results.csv of the sampled models"
    )
    fit.add_argument(
        "--key", default="Total Inference Time", help="latency key (default: %(default)s)"
    )
    fit.add_argument(
        "--stat", help="Min_Time, Avg_Time, Median_Time or Max_Time (default: median if present)"
    )
    fit.add_argument("--device", metavar="ID", help="only this device")
    fit.add_argument("--runtime", metavar="NAME", help="only this runtime")
    fit.add_argument(
        "--granularity", choices=("block", "op"), help="default: what the table covers"
    )
    fit.add_argument("--folds", type=int, default=5, metavar="K", help="k-fold (default 5)")
    fit.add_argument("--seed", type=int, default=0, metavar="S", help="fold shuffle seed (0)")
    fit.add_argument("--out", required=True, metavar="FILE", help="estimator JSON to write")
    fit.add_argument("--plots", metavar="DIR", help="folder for the PNGs (default: beside --out)")
    fit.add_argument("--no-plots", action="store_true", help="do not draw plots")
    fit.set_defaults(handler=fit_command)
    predict = sub.add_parser("predict", help="estimate a model or an architecture")
    predict.add_argument("estimator", metavar="ESTIMATOR", help="estimator JSON")
    predict.add_argument(
        "model", nargs="?", metavar="MODEL", help="an .onnx made by devlab space sample"
    )
    predict.add_argument(
        "--arch", metavar="ARCH", help="block choices: a JSON file or inline JSON list"
    )
    predict.add_argument("--space", metavar="SPACE", help="space file for --arch")
    predict.add_argument("--device", metavar="ID", help="device of the fit to use")
    predict.add_argument("--runtime", metavar="NAME", help="runtime of the fit to use")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.set_defaults(handler=predict_command)
    return parser


# --- space -----------------------------------------------------------------------------------


def modules_command(args: argparse.Namespace, err: Console) -> int:
    from backends.space.modules import write_modules

    space = _space(args.space)
    out = Path(args.out)
    before = {p.name for p in out.glob("*.onnx")} if out.is_dir() else set()
    index, entries = write_modules(space, out, args.granularity)
    others = sorted(before - {e.file for e in entries})
    if others:
        err.print(
            f"warning: {out} also holds {len(others)} other .onnx file(s) (e.g. {others[0]}); "
            "devlab --run on the folder would bench them too",
            markup=False,
            highlight=False,
        )
    err.print(
        f"wrote {len(entries)} {args.granularity}-level module models of {space.name} and "
        f"{index.name} into {out}\nbench them: devlab --run {out} --device host:cpu --threads 1",
        markup=False,
        highlight=False,
    )
    return ExitCode.OK


def sample_command(args: argparse.Namespace, err: Console) -> int:
    from backends.models.intake import ModelError
    from backends.space.sample import write_samples

    space = _space(args.space)
    try:
        with err.status(f"building {args.n} architectures of {space.name}..."):
            index, entries = write_samples(space, args.out, args.n, args.seed)
    except ModelError as error:  # a generated model failed devlab's own checks: a bug
        err.print(f"devlab: {error}", markup=False, highlight=False)
        return ExitCode.JOBS_FAILED
    err.print(
        f"wrote {len(entries)} architectures of {space.name} (seed {args.seed}) and "
        f"{index.name} into {args.out}",
        markup=False,
        highlight=False,
    )
    return ExitCode.OK


def show_command(args: argparse.Namespace, err: Console) -> int:
    from backends.space.modules import unique_modules

    space = _space(args.space)
    options: dict[int, int] = {}
    for slot in space.slots:
        options[len(slot.options)] = options.get(len(slot.options), 0) + 1
    summary = {
        "name": space.name,
        "description": space.description,
        "input": list(space.input_shape),
        "classes": space.classes,
        "blocks": len(space.slots),
        "blocks_by_choice_count": {str(k): v for k, v in sorted(options.items())},
        "unique_modules": {g: len(unique_modules(space, g)) for g in ("block", "op")},
        "search_space_size": space.size,
    }
    if args.json:
        _print_json(summary)
        return ExitCode.OK
    table = Table(title=f"{space.name}", show_header=False, title_justify="left")
    table.add_row("input", "x".join(map(str, space.input_shape)))
    table.add_row("classes", str(space.classes))
    table.add_row("blocks", f"{len(space.slots)} (plus stem and head)")
    table.add_row(
        "choices",
        ", ".join(f"{v} block(s) with {k}" for k, v in sorted(options.items())),
    )
    for granularity, count in summary["unique_modules"].items():
        table.add_row(f"unique modules ({granularity})", str(count))
    table.add_row("search-space size", f"{space.size:,} ({space.size:.3g})")
    _stdout().print(table)
    return ExitCode.OK


# --- estimator -------------------------------------------------------------------------------


def fit_command(args: argparse.Namespace, err: Console) -> int:
    from backends.space.estimator import (
        EstimatorError,
        fit_estimator,
        read_latency_table,
        read_sampled,
    )

    notes: list[str] = []
    try:
        table = read_latency_table(args.table)
        sampled = read_sampled(args.sampled, notes)
    except EstimatorError as error:
        raise UsageError(str(error)) from None
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    try:
        estimator = fit_estimator(
            table,
            sampled,
            key=args.key,
            stat=args.stat,
            folds=args.folds,
            seed=args.seed,
            device=args.device,
            runtime=args.runtime,
            granularity=args.granularity,
        )
    except EstimatorError as error:
        err.print(f"devlab: estimator fit failed: {error}", markup=False, highlight=False)
        return ExitCode.JOBS_FAILED
    estimator.sources = {"table": str(args.table), "sampled": str(args.sampled)}
    for warning in estimator.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    out = estimator.save(args.out)
    _stdout().print(report_table(estimator))
    err.print(f"estimator written to {out}", markup=False, highlight=False)
    if not args.no_plots:
        _draw_plots(estimator, Path(args.plots) if args.plots else out.parent, out.stem, err)
    return ExitCode.OK


def predict_command(args: argparse.Namespace, err: Console) -> int:
    from backends.space.estimator import Estimator, EstimatorError, model_module_uids
    from backends.space.modules import arch_module_uids
    from backends.space.spec import SpaceError

    if (args.model is None) == (args.arch is None):
        raise UsageError("give either MODEL.onnx or --arch ARCH (with --space SPACE)")
    try:
        estimator = Estimator.load(args.estimator)
        if args.model is not None:
            uids = model_module_uids(args.model, estimator.granularity)
            what = args.model
        else:
            if args.space is None:
                raise UsageError("--arch needs --space SPACE (the space file it belongs to)")
            space = _space(args.space)
            arch = space.parse_arch(_arch_value(args.arch))
            uids = arch_module_uids(space, arch, estimator.granularity)
            what = f"--arch {args.arch}"
        fit = estimator.fit_for(args.device, args.runtime)
    except (EstimatorError, SpaceError) as error:
        raise UsageError(str(error)) from None
    try:
        latency = fit.predict(uids)
    except EstimatorError as error:
        err.print(f"devlab: {error}", markup=False, highlight=False)
        return ExitCode.JOBS_FAILED
    if args.json:
        record = {
            "input": what,
            "device": fit.device,
            "runtime": fit.runtime,
            "key": estimator.key,
            "stat": estimator.stat,
            "estimate_us": latency,
            "modules": len(uids),
        }
        _print_json(record)
    else:
        _stdout().print(
            f"{what}: {latency:,.1f} us ({estimator.key}, {estimator.stat}; {fit.runtime} on "
            f"{fit.device}; {len(uids)} modules)",
            markup=False,
            highlight=False,
        )
    return ExitCode.OK


def report_table(estimator: Any) -> Table:
    """The accuracy report of every fit: held-out, in-sample, and the unfitted sum."""
    table = Table(
        title=f"latency estimator: {estimator.key}, {estimator.stat}, "
        f"{estimator.granularity} granularity",
        title_justify="left",
    )
    for column in (
        "device / runtime",
        "n",
        "scale",
        "bias us",
        "evaluation",
        "RMSE us",
        "MAPE %",
        "max APE %",
        "within 5 %",
        "within 10 %",
    ):
        table.add_column(
            column, justify="left" if "/" in column or column == "evaluation" else "right"
        )
    for fit in estimator.fits:
        report = fit.report
        for label, acc in (
            (report.evaluation, report.heldout),
            ("in-sample fit", report.in_sample),
            ("raw sum (unfitted)", report.raw_sum),
        ):
            first = acc is report.heldout
            table.add_row(
                f"{fit.device} / {fit.runtime}" if first else "",
                str(report.n) if first else "",
                f"{fit.scale:.4f}" if first else "",
                f"{fit.bias:.1f}" if first else "",
                label,
                f"{acc.rmse_us:.1f}",
                f"{acc.mape_pct:.2f}",
                f"{acc.max_ape_pct:.2f}",
                f"{acc.within5_pct:.1f}",
                f"{acc.within10_pct:.1f}",
            )
    return table


# --- helpers ---------------------------------------------------------------------------------


def _draw_plots(estimator: Any, folder: Path, stem: str, err: Console) -> None:
    from backends.space.plots import plot_latency_vs_macs, plot_predicted_vs_measured

    written: list[Path] = []
    try:
        for fit in estimator.fits:
            suffix = "" if len(estimator.fits) == 1 else "_" + _slug(f"{fit.runtime}@{fit.device}")
            written.append(
                plot_predicted_vs_measured(fit, folder / f"{stem}_pred_vs_measured{suffix}.png")
            )
        written.append(plot_latency_vs_macs(estimator.fits, folder / f"{stem}_latency_vs_macs.png"))
    except (MissingExtra, RuntimeError, OSError) as error:
        err.print(f"warning: plots skipped: {error}", markup=False, highlight=False)
        return
    err.print(f"plots: {', '.join(str(p) for p in written)}", markup=False, highlight=False)


def _space(path: str) -> Any:
    from backends.space.spec import SpaceError, load_space

    try:
        return load_space(path)
    except SpaceError as error:
        raise UsageError(str(error)) from None


def _arch_value(text: str) -> Any:
    """``--arch``: a JSON file, or inline JSON (a list of choices or an index entry)."""
    path = Path(text)
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UsageError(f"--arch {text}: not a readable JSON file: {error}") from None
    try:
        return json.loads(text)
    except ValueError:
        raise UsageError(
            f"--arch {text!r}: neither a file nor JSON; give a file or a list like "
            '\'["e1k3", "e6k3", "skip", ...]\''
        ) from None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)


def _print_json(data: Any) -> None:
    _stdout().out(json.dumps(data, indent=2), highlight=False)


def _stdout() -> Console:
    out = Console()
    return out if out.is_terminal else Console(width=160)


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - for python -m use
    import sys

    return run_space_tool(list(sys.argv[1:] if argv is None else argv), Console(stderr=True))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

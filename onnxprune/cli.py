"""The ``onnxprune`` command: a thin layer over the Python API.

Exit codes are part of the interface for build pipelines: 0 success, 1 a
validation or quality gate failed, 2 bad usage or bad input.  User errors end
in one line on stderr; ``--verbose`` adds the traceback for bug reports.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from onnxprune import __version__
from onnxprune import ir as irx
from onnxprune.analysis.cost import model_cost
from onnxprune.bench import benchmark
from onnxprune.calibration import load_calibration
from onnxprune.config import COMMAND_LINE, OPTIONS, PruneConfig, did_you_mean, find_config_file, load_config_file
from onnxprune.errors import InputError, OnnxPruneError, first_line
from onnxprune.gates import pair_gates
from onnxprune.option_spec import Option, OptionFamily
from onnxprune.options import GateOptions
from onnxprune.pipeline import prune, sensitivity_table
from onnxprune.plots import plot_sensitivity, plot_tradeoff
from onnxprune.report import (
    inspect_data,
    print_json,
    render_bench,
    render_inspect,
    render_prune,
    render_sensitivity,
    render_validation,
    write_json,
)
from onnxprune.simplify import simplify
from onnxprune.tradeoff import tradeoff_curve
from onnxprune.validate import InputSource, validate

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other user error.

    Abbreviated flags are refused (``--channel`` must not silently mean
    ``--channel-ratio`` today and something else once a flag is added), and a
    mistyped flag gets the closest known one as a suggestion.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{self._suggestion(message)} (see {self.prog} --help)\n")

    def _suggestion(self, message: str) -> str:
        """For 'unrecognized arguments: --chanel-ratio 0.5', the closest flag this parser or its subcommands know."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        unknown = next((word.split("=")[0] for word in message.split()[2:] if word.startswith("--")), None)
        return did_you_mean(unknown, self._flags()) if unknown else ""

    def _flags(self) -> set[str]:
        flags = {flag for action in self._actions for flag in action.option_strings}
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                flags.update(flag for parser in action.choices.values() if isinstance(parser, _Parser) for flag in parser._flags())
        return flags


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = _build_parser()
    arguments = parser.parse_args(argv)
    console = Console(soft_wrap=True)
    try:
        return arguments.handler(arguments, console)
    except OnnxPruneError as error:
        if arguments.verbose:
            traceback.print_exc()
        print(f"onnxprune: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("onnxprune: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as error:  # a model the passes cannot handle must not end in a traceback
        if arguments.verbose:
            traceback.print_exc()
        print(
            f"onnxprune: error: cannot process this model: {type(error).__name__}: {first_line(error)} (rerun with --verbose for details)",
            file=sys.stderr,
        )
        return EXIT_USAGE


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxprune", description="Prune ONNX models, then validate and time the result in onnxruntime.")
    parser.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    inspect = commands.add_parser("inspect", help="inputs, outputs, parameters, MACs, op histogram")
    inspect.add_argument("model")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _add_options(inspect, ("input-shape",))
    inspect.set_defaults(handler=_inspect)

    check = commands.add_parser("validate", help="check CANDIDATE and compare its outputs with REFERENCE's")
    check.add_argument("reference")
    check.add_argument("candidate")
    _add_options(check, ("inputs", "samples", "seed", "rtol", "atol", "input-shape", "runs", "warmup", "threads", *GATE_FLAGS))
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=_validate)

    timing = commands.add_parser("bench", help="onnxruntime CPU latency, models interleaved")
    timing.add_argument("models", nargs="+")
    _add_options(timing, ("runs", "warmup", "threads", "input-shape"))
    timing.add_argument("--json", action="store_true")
    timing.set_defaults(handler=_bench)

    pruning = commands.add_parser("prune", help="prune, validate and time against the original")
    pruning.add_argument("model")
    pruning.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    pruning.add_argument(
        "--config", help="TOML file, or a pyproject.toml with [tool.onnxprune] (default: the nearest onnxprune.toml or such pyproject.toml upward)"
    )
    pruning.add_argument("--no-config", action="store_true", help="ignore config files found from the current folder")
    pruning.add_argument("--profile", help="a [profile.NAME] table of the config file")
    pruning.add_argument("--report", help="write the JSON report here")
    pruning.add_argument("--json", action="store_true", help="print the JSON report instead of tables")
    _add_options(pruning, [option.flag for option in OPTIONS])
    pruning.set_defaults(handler=_prune)

    sensitivity = commands.add_parser(
        "sensitivity", help="what cutting each channel group costs (drift on held-out calibration data) and saves (MACs)"
    )
    sensitivity.add_argument("model")
    sensitivity.add_argument("-o", "--output", help="write the table (and curve) as JSON here")
    sensitivity.add_argument("--plot-dir", help="draw sensitivity.png (and tradeoff.png with --curve) in this folder")
    sensitivity.add_argument(
        "--curve", action="store_true", help="also prune at uniform ratios 0.25/0.5/0.75 and allocated plans of the same MACs, and time them"
    )
    sensitivity.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _add_options(sensitivity, SENSITIVITY_FLAGS)
    sensitivity.set_defaults(handler=_sensitivity)

    for sub in (inspect, check, timing, pruning, sensitivity):
        sub.add_argument("-v", "--verbose", action="store_true", help="show details (tracebacks) on errors")
    return parser


def _add_options(parser: argparse.ArgumentParser, flags: Collection[str]) -> None:
    """The declared options named by ``flags``, in one help group per family.

    Unset flags stay None, so the defaults and the config file show through.
    """
    groups: dict[type[OptionFamily], argparse._ArgumentGroup] = {}
    for option in OPTIONS:
        if option.flag in flags:
            if option.family not in groups:
                groups[option.family] = parser.add_argument_group(option.family.title)
            _add_option(groups[option.family], option)


def _add_option(parser: argparse._ArgumentGroup, option: Option) -> None:
    """Booleans get ``--x/--no-x``, lists repeat the flag, everything else takes one value of the declared type."""
    flag = f"--{option.flag}"
    text = option.help + (f" (default {option.default})" if option.default not in (None, ()) else "")
    if option.kind is bool:
        parser.add_argument(flag, dest=option.key, action=argparse.BooleanOptionalAction, default=None, help=text)
    elif option.many:
        parser.add_argument(flag, dest=option.key, action="append", default=None, choices=option.choices, help=text)
    else:
        parser.add_argument(flag, dest=option.key, type=option.kind, default=None, choices=option.choices, help=text)


def _inspect(arguments: argparse.Namespace, console: Console) -> int:
    model = irx.load(arguments.model)
    config = _command_line_config(arguments, PruneConfig())
    data = inspect_data(model, model_cost(model, arguments.model, shapes=config.input_shapes()))
    if arguments.json:
        print_json(console, data)
    else:
        render_inspect(console, data)
    return EXIT_OK


def _validate(arguments: argparse.Namespace, console: Console) -> int:
    config = _command_line_config(arguments, PruneConfig())
    reference = irx.load(arguments.reference)
    # A candidate failing the checker is a failed validation (exit 1), reported by validate(), not bad input.
    candidate = irx.load(arguments.candidate, check=False)
    source = InputSource(config.inputs, config.samples, config.seed, config.input_shapes())
    result = validate(reference, candidate, source, rtol=config.rtol, atol=config.atol)
    # With gates, the pair is judged by them (a lossy pair can pass); without, by equivalence within rtol/atol.
    gated = any(config.values[flag.replace("-", "_")] is not None for flag in GATE_FLAGS)
    gates = pair_gates(reference, candidate, config, result) if gated and result.checker_error is None and not result.problems else []
    passed = (not result.problems and all(gate.passed for gate in gates)) if gated else result.passed
    if arguments.json:
        print_json(console, {**result.to_dict(), "gates": [gate.to_dict() for gate in gates], "passed": passed})
    else:
        render_validation(console, result, gates, passed)
    return EXIT_OK if passed else EXIT_FAILED


GATE_FLAGS = tuple(option.flag for option in OPTIONS if option.family is GateOptions)

SENSITIVITY_FLAGS = (
    "calibration", "labels", "input-shape", "simplify", "round-to", "min-channels", "channel-exclude", "channel-override",
    "importance", "reconstruct", "jobs", "sensitivity-cache", "runs", "warmup", "threads",
)  # fmt: skip


def _sensitivity(arguments: argparse.Namespace, console: Console) -> int:
    config = _command_line_config(arguments, PruneConfig())
    if config.calibration is None:
        raise InputError("sensitivity is measured on calibration data: give --calibration")
    if arguments.plot_dir:
        Path(arguments.plot_dir).mkdir(parents=True, exist_ok=True)
    if arguments.output:
        irx.check_output_directory(Path(arguments.output))
    original = irx.load(arguments.model)
    model = simplify(irx.copy_model(original))[0] if config.simplify else original
    calibration = load_calibration(config.calibration, model, labels=config.labels)
    table = sensitivity_table(model, config, calibration, quiet=arguments.json)
    data: dict[str, Any] = {"model": arguments.model, "sensitivity": table.to_dict(), "cached": table.cached}
    if arguments.curve:
        data["curve"] = tradeoff_curve(arguments.model, original, config, calibration, quiet=arguments.json)
    if arguments.plot_dir:
        plot_sensitivity(data["sensitivity"], Path(arguments.plot_dir) / "sensitivity.png", title=f"{Path(arguments.model).name}: drift per channel group")
        if arguments.curve:
            curve = data["curve"]
            points = {kind: [(point["speedup"], point[curve["metric"]]) for point in curve[kind]] for kind in ("uniform", "allocated")}
            plot_tradeoff(points, None, Path(arguments.plot_dir) / "tradeoff.png", f"{Path(arguments.model).name}: quality vs speedup", curve["metric"])
    if arguments.output:
        write_json(data, arguments.output)
    if arguments.json:
        print_json(console, data)
    else:
        render_sensitivity(console, data)
    return EXIT_OK


def _bench(arguments: argparse.Namespace, console: Console) -> int:
    config = _command_line_config(arguments, PruneConfig())
    models = [irx.load(path) for path in arguments.models]
    timings = benchmark(
        models,
        runs=config.runs,
        warmup=config.warmup,
        threads=config.threads,
        shapes=config.input_shapes(),
        quiet=arguments.json,
    )
    if arguments.json:
        print_json(console, [{"model": path, **timing.to_dict()} for path, timing in zip(arguments.models, timings)])
    else:
        render_bench(console, arguments.models, timings, config.threads)
    return EXIT_OK


def _prune(arguments: argparse.Namespace, console: Console) -> int:
    config, config_file = _effective_config(arguments)
    output = Path(arguments.output)
    _refuse_clashing_paths(arguments, config, config_file)
    result = prune(arguments.model, config, quiet=arguments.json)
    # The input's files survive whatever replacing or removing the previous output deletes.
    keep = irx.model_files(arguments.model)
    if result.passed:
        result.save(output, keep=keep)
    else:
        # A failed build must not leave a model behind that looks fine, nor the data file of one.
        irx.remove_output(output, keep=keep)
    result.report["output"] = str(output) if result.passed else None
    result.report["config_file"] = str(config_file) if config_file is not None else None
    if arguments.report:
        write_json(result.report, arguments.report)
    if arguments.json:
        print_json(console, result.report)
    else:
        render_prune(console, result.report)
        console.print(f"wrote {output}" if result.passed else f"[red]not written: {output}[/]")
    return EXIT_OK if result.passed else EXIT_FAILED


def _effective_config(arguments: argparse.Namespace) -> tuple[PruneConfig, Path | None]:
    """Defaults, then the config file (given, or found from the current folder upward) and profile, then the command line."""
    config = PruneConfig()
    path = Path(arguments.config) if arguments.config else None if arguments.no_config else find_config_file()
    if path is not None:
        config.update(load_config_file(path, arguments.profile), source=str(path))
    elif arguments.profile:
        raise InputError("--profile needs a config file: --config FILE, or an onnxprune.toml or [tool.onnxprune] in pyproject.toml")
    return _command_line_config(arguments, config), path


def _command_line_config(arguments: argparse.Namespace, config: PruneConfig) -> PruneConfig:
    """``config`` overridden by the options given as flags (a subcommand's parser has only some of them)."""
    given = {option.key: value for option in OPTIONS if (value := getattr(arguments, option.key, None)) is not None}
    config.update(given, source=COMMAND_LINE)
    return config


def _refuse_clashing_paths(arguments: argparse.Namespace, config: PruneConfig, config_file: Path | None) -> None:
    """Before any work: no output may be an input (model, its data, calibration, config) or the other output, and each must be writable."""
    inputs = {path.resolve(): "the input model or its external data" for path in irx.model_files(arguments.model)}
    for label, value in (("--calibration", config.calibration), ("--labels", config.labels), ("--inputs", config.inputs), ("the config file", config_file)):
        if value is not None:
            inputs[Path(value).resolve()] = label
    output = Path(arguments.output)
    if Path(f"{output}.data").resolve() in inputs:
        raise InputError(f"{output}: its external data file would overwrite the input model's weights; choose another path")
    outputs = [("-o", output)] + ([("--report", Path(arguments.report))] if arguments.report else [])
    if len(outputs) == 2 and outputs[1][1].resolve() == output.resolve():
        raise InputError(f"{arguments.report}: --report and -o name the same file; choose another path")
    for flag, path in outputs:
        if path.resolve() in inputs:
            raise InputError(f"{path}: {flag} would overwrite {inputs[path.resolve()]}; choose another path")
        irx.check_output_directory(path)
        if path.exists() and not os.access(path, os.W_OK):
            raise InputError(f"{path}: not writable")


if __name__ == "__main__":
    sys.exit(main())

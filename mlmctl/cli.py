"""The `mlmctl` command line: one thin command per stage, shared options, `main()`.

Only the standard library, typer and mlmctl's light modules are imported here; each command
imports its stage module (and with it torch or tokenizers) when it runs, so `mlmctl --help`
answers at once.
"""

from __future__ import annotations

import inspect as pyinspect
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlmctl import __version__
from mlmctl.errors import Interrupted, MlmctlError
from mlmctl.stages import REGISTRY, StageSpec
from mlmctl.stages import module as stage_module

app = typer.Typer(
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Pretrain masked-language models (BERT family) from raw text, one stage at a time.",
    epilog="Stages chain through directories: clean -> tokenize -> build-vocab -> pretrain -> "
    "finetune -> eval. Each reads a YAML config (-c) and writes manifest.json last. "
    "`mlmctl STAGE --print-config > STAGE.yaml` writes a starter config.",
)

ConfigOpt = Annotated[Optional[Path], typer.Option("-c", "--config", metavar="YAML", help="Stage YAML file (defaults if omitted).")]
InputOpt = Annotated[Optional[list[str]], typer.Option("--input", "-i", metavar="DIR", help="Input directory (sets `input`).")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", metavar="DIR", help="Output directory (sets `output`).")]
PrintOpt = Annotated[bool, typer.Option("--print-config", help="Print the resolved config with comments and exit (without -c: a starter file).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Delete mlmctl's output in --output first, then rebuild it.")]
RebuildOpt = Annotated[
    bool, typer.Option("--rebuild", help="Make-style: rebuild only if config or input changed; the old output stays until the new one is done.")
]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", metavar="N", help="Worker processes.")]
TaskOpt = Annotated[
    Optional[str], typer.Option("--task", metavar="I/N", help="Do only part I of N (0-based, e.g. 3/8); rerun without it to finish.")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Accepted for old scripts: rerunning the same command already continues.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]


def _set_opt(example: str):
    """The `--set` option, with an example that is valid for the stage it documents."""
    return Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE",
                                                       help=f"Override a config key, e.g. --set {example} (repeatable).")]


ResumeFromOpt = Annotated[
    Optional[str], typer.Option("--resume-from", metavar="DIR", help="Continue from this checkpoint directory (of any run).")
]


def _epilog(spec: StageSpec) -> str:
    # "\b" keeps click from re-wrapping the example lines into one paragraph.
    cmd = spec.example.split(" -c ")[0]
    lines = ["\b", "Examples:", f"  {spec.example}", f"  {cmd} -c CONFIG.yaml --set {spec.set_example}",
             f"  {cmd} --print-config > my.yaml   # a starter config"]
    if spec.note:
        lines += ["", spec.note]
    return "\n".join(lines)


def _version(value: bool) -> None:
    if value:
        print(f"mlmctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _run(spec: StageSpec, config, set_, input, output, print_config, force, rebuild, workers=1, task=None,
         resume=False, resume_from=None, debug=False) -> None:
    from mlmctl.stage import RunOptions, parse_task, run_stage

    module = stage_module(spec)
    set_ = list(set_ or [])
    if print_config and config is None:
        # A starter file: defaults plus the few values a stage cannot default (e.g. how long to train).
        set_ = [f"{k}={v}" for k, v in getattr(module, "STARTER", {}).items()] + set_
        print(f"# Starter config for `mlmctl {spec.command}` (mlmctl {__version__}): set the paths, then run\n"
              f"#   mlmctl {spec.command} -c THIS_FILE.yaml")
    opts = RunOptions(workers=workers, task=parse_task(task), force=force, rebuild=rebuild,
                      resume=resume or resume_from is not None, resume_from=resume_from)
    previous = signal.signal(signal.SIGTERM, _terminated) if _in_main_thread() else None
    try:
        code = run_stage(module, config, set_, inputs=input, output=output, opts=opts, print_config=print_config)
    except (KeyboardInterrupt, _Terminated) as e:
        # Training stages stop at a step boundary themselves (errors.Interrupted); this is any
        # other stage, or a stop before training began. Finished work is kept (atomic writes,
        # completed units) and a rerun of the same command continues from it.
        name = "SIGTERM" if isinstance(e, _Terminated) else "SIGINT"
        print(f"mlmctl: {spec.command} stopped by {name}; finished parts are kept, rerun the same command to "
              f"continue", file=sys.stderr)
        raise typer.Exit(143 if isinstance(e, _Terminated) else 130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code:
        raise typer.Exit(code)


class _Terminated(BaseException):
    """SIGTERM outside a training loop: unwind (no traceback), like KeyboardInterrupt for SIGINT."""


def _terminated(signum, frame) -> None:
    raise _Terminated


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _stage_command(spec: StageSpec) -> None:
    """Register `mlmctl <spec.command>` with the options the stage honours (and no others)."""
    options = [("config", ConfigOpt, None), ("set_", _set_opt(spec.set_example), None), ("input", InputOpt, None),
               ("output", OutputOpt, None), ("print_config", PrintOpt, False), ("force", ForceOpt, False),
               ("rebuild", RebuildOpt, False)]
    if spec.fans_out:
        options += [("workers", WorkersOpt, 1), ("task", TaskOpt, None)]
    if spec.trains:
        options.append(("resume", ResumeOpt, False))
    if spec.resume_from:
        options.append(("resume_from", ResumeFromOpt, None))
    options += [(f.key, Annotated[Optional[str], typer.Option(f.option, metavar=f.metavar, help=f.help)], None)
                for f in spec.flags]
    options.append(("debug", DebugOpt, False))

    def command(**kwargs) -> None:
        # A stage's own flags are `--set`s, applied last (they win over -c and --set).
        sets = list(kwargs.pop("set_") or [])
        for f in spec.flags:
            value = kwargs.pop(f.key)
            if value is not None:
                sets.append(f"{f.key}={json.dumps(value) if f.text else value}")
        _run(spec, set_=sets, **kwargs)

    # typer reads the options from the signature: build it from the list above.
    command.__signature__ = pyinspect.Signature(
        [pyinspect.Parameter(name, pyinspect.Parameter.KEYWORD_ONLY, default=default, annotation=tp)
         for name, tp, default in options])
    command.__name__ = spec.module
    app.command(spec.command, help=spec.help, epilog=_epilog(spec))(command)


for _spec in REGISTRY:
    _stage_command(_spec)


@app.command("fill-mask")
def fill_mask(
    model_dir: Annotated[Path, typer.Argument(help="Model directory (pretrain's final/ or a checkpoint).")],
    text: Annotated[str, typer.Argument(help="Text with one or more [MASK] tokens.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Candidates to show per mask.")] = 5,
    debug: DebugOpt = False,
) -> None:
    """Show the most likely tokens for each [MASK] in a text."""
    from mlmctl import fill_mask as impl

    impl.run(model_dir, text, top_k)


@app.command("inspect")
def inspect(
    path: Annotated[Path, typer.Argument(help="A stage directory, run directory or model directory.")],
    debug: DebugOpt = False,
) -> None:
    """Describe what a stage, run or model directory holds."""
    from mlmctl import inspect_dir as impl

    impl.run(path)


@app.command("report", epilog="\b\nExamples:\n  mlmctl report --data data/demo --runs runs/demo   # a whole chain\n"
             "  mlmctl report runs/demo/eval runs/exp2/eval     # these eval directories")
def report(
    dirs: Annotated[Optional[list[Path]], typer.Argument(metavar="[DIR]...", help="Eval directories (or directories holding them) to score.", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option("--data", metavar="DIR", help="The chain's data directory (clean, tokens, vocab, task).")] = None,
    runs: Annotated[Optional[Path], typer.Option("--runs", metavar="DIR", help="The chain's runs directory: its pretrain run and every eval.json under it.")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help="Also write a self-contained HTML page: curves, confusion matrices, comparison chart (needs mlmctl[plot]).")] = None,
    debug: DebugOpt = False,
) -> None:
    """Sum up a chain: corpus, vocabulary, pretraining, and downstream scores against baselines
    (data/demo and runs/demo when nothing is given)."""
    from mlmctl import report as impl

    impl.run(list(dirs or []), data, runs, html=html)


@app.command("plot", epilog="\b\nExamples:\n  mlmctl plot runs/demo/pretrain -o curves.png\n"
             "  mlmctl plot runs/a/pretrain runs/b/pretrain -o compare.svg   # two runs, one legend\n"
             "  mlmctl plot runs/demo/finetune-pretrained runs/demo/finetune-random -o finetune.png")
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="Pretrain or finetune run directories (finished or still running).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Image to write (.png or .svg).")],
    format_: Annotated[Optional[str], typer.Option("--format", metavar="png|svg", help="Image format (default: --output's suffix).")] = None,
    smoothing: Annotated[Optional[float], typer.Option("--smoothing", metavar="W", help="EMA weight for the training loss, in [0, 1); 0: raw only  [default: 0.8].")] = None,
    debug: DebugOpt = False,
) -> None:
    """Plot training curves from metrics.jsonl: loss, validation perplexity, learning rate, tokens/s
    (finetune runs: dev metrics per epoch). Needs mlmctl[plot]."""
    from mlmctl import plot as impl

    impl.run(run_dirs, output, format_, impl.DEFAULT_SMOOTHING if smoothing is None else smoothing)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it directly).

    Typer/click handle usage errors themselves (exit 2, usage printed); mlmctl's own errors and
    the OS errors a user can fix become one line on stderr and exit 1.
    """
    debug = _debug_requested(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, prog_name="mlmctl", standalone_mode=True)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Interrupted as e:
        # Not an error: the run saved its state and stopped as asked (exit 128 + signal).
        print(f"mlmctl: {e}", file=sys.stderr)
        return e.exit_code
    except MlmctlError as e:
        if debug:
            raise
        # Several problems (all the config errors of a file): one `mlmctl: error:` line each.
        # A message that quotes user input (a key, a file name) may hold a line break: escape it,
        # so that one problem stays one line.
        for line in getattr(e, "problems", None) or [str(e)]:
            line = line.replace("\r", "\\r").replace("\n", "\\n")
            print(f"mlmctl: error: {line}", file=sys.stderr)
        return 1
    except (OSError, MemoryError) as e:
        # Disk full, permission denied, out of memory: the user's to fix, so one line, no traceback.
        if debug:
            raise
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"mlmctl: error: {type(e).__name__}: {getattr(e, 'strerror', None) or e}{where}", file=sys.stderr)
        return 1


def _debug_requested(args: list[str]) -> bool:
    """`--debug` (any command) or MLMCTL_DEBUG=1: the one switch for tracebacks. Read from the
    arguments before click parses them, because errors are caught here, outside the command."""
    return "--debug" in args or os.environ.get("MLMCTL_DEBUG", "") not in ("", "0")

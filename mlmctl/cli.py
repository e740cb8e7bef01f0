"""The `mlmctl` command line: one thin command per stage, shared options, `main()`.

Only the standard library, typer and mlmctl's light modules are imported here; each command
imports its stage module (and with it torch or tokenizers) when it runs, so `mlmctl --help`
answers at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlmctl import __version__
from mlmctl.errors import MlmctlError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Pretrain masked-language models (BERT family) from raw text, one stage at a time.",
    epilog="Stages chain through directories: clean -> tokenize -> build-vocab -> pretrain -> "
    "finetune -> eval. Each reads a YAML config (-c) and writes manifest.json last.",
)

_DEBUG = False

ConfigOpt = Annotated[Optional[Path], typer.Option("-c", "--config", metavar="YAML", help="Stage YAML file (defaults if omitted).")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a config key: --set train.lr=3e-4 (repeatable).")
]
InputOpt = Annotated[Optional[list[str]], typer.Option("--input", "-i", metavar="DIR", help="Input directory (sets `input`).")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", metavar="DIR", help="Output directory (sets `output`).")]
PrintOpt = Annotated[bool, typer.Option("--print-config", help="Print the resolved config with comments and exit.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Delete mlmctl's output in --output first, then rebuild it.")]
RebuildOpt = Annotated[
    bool, typer.Option("--rebuild", help="Make-style: rebuild only if config or input changed; the old output stays until the new one is done.")
]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", metavar="N", help="Worker processes for data stages.")]
TaskOpt = Annotated[
    Optional[str], typer.Option("--task", metavar="I/N", help="Do only part I of N (0-based, e.g. 3/8); rerun without it to finish.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]


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


def _run(stage: str, config, set_, input, output, print_config, force, workers, task, debug, rebuild=False,
         **extra) -> None:
    global _DEBUG
    _DEBUG = _DEBUG or debug
    import importlib

    from mlmctl.shards import parse_task
    from mlmctl.stage import RunOptions, run_stage

    module = importlib.import_module(f"mlmctl.stages.{stage}")
    opts = RunOptions(workers=workers, task=parse_task(task), force=force, debug=debug, rebuild=rebuild, **extra)
    try:
        code = run_stage(module, config, set_, inputs=input, output=output, opts=opts, print_config=print_config)
    except KeyboardInterrupt:
        # Whatever was finished is kept (atomic writes); a rerun resumes from it.
        print(f"mlmctl: {stage} interrupted; rerun the same command to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    if code:
        raise typer.Exit(code)


def _stage_command(name: str, module: str, doc: str) -> None:
    def command(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        input: InputOpt = None,
        output: OutputOpt = None,
        print_config: PrintOpt = False,
        force: ForceOpt = False,
        rebuild: RebuildOpt = False,
        workers: WorkersOpt = 1,
        task: TaskOpt = None,
        debug: DebugOpt = False,
    ) -> None:
        _run(module, config, set_, input, output, print_config, force, workers, task, debug, rebuild)

    command.__doc__ = doc
    app.command(name)(command)


_stage_command(
    "clean", "clean",
    "Clean raw text (.txt, .jsonl, .gz, or the built-in corpus) into deduplicated document shards.",
)
_stage_command(
    "tokenize", "tokenize",
    "Split clean documents into sentences and pre-tokens (classic BERT corpus format).",
)
_stage_command(
    "build-vocab", "build_vocab",
    "Train a sub-word vocabulary and index the corpus into memory-mappable token ids.",
)


@app.command("pretrain")
def pretrain(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    input: InputOpt = None,
    output: OutputOpt = None,
    print_config: PrintOpt = False,
    force: ForceOpt = False,
    rebuild: RebuildOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest valid checkpoint.")] = False,
    resume_from: Annotated[
        Optional[str], typer.Option("--resume-from", metavar="DIR", help="Continue from this checkpoint directory.")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Pretrain a BERT encoder with masked-language modelling (runs under torchrun too)."""
    _run("pretrain", config, set_, input, output, print_config, force, 1, None, debug, rebuild,
         resume=resume or resume_from is not None, resume_from=resume_from)


_stage_command(
    "finetune", "finetune",
    "Fine-tune a pretrained (or randomly initialised) encoder for sequence classification.",
)
_stage_command(
    "eval", "eval",
    "Score a model: classifier metrics on a labelled file, or masked-LM perplexity on held-out text.",
)
_stage_command(
    "demo-task", "demo_task",
    "Build the demo classification task (which library a docstring comes from) from a clean directory.",
)


@app.command("fill-mask")
def fill_mask(
    model_dir: Annotated[Path, typer.Argument(help="Model directory (pretrain's final/ or a checkpoint).")],
    text: Annotated[str, typer.Argument(help="Text with one or more [MASK] tokens.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Candidates to show per mask.")] = 5,
    debug: DebugOpt = False,
) -> None:
    """Show the most likely tokens for each [MASK] in a text."""
    global _DEBUG
    _DEBUG = _DEBUG or debug
    from mlmctl import fill_mask as impl

    impl.run(model_dir, text, top_k)


@app.command("inspect")
def inspect(
    path: Annotated[Path, typer.Argument(help="A stage directory, run directory or model directory.")],
    debug: DebugOpt = False,
) -> None:
    """Describe what a stage, run or model directory holds."""
    global _DEBUG
    _DEBUG = _DEBUG or debug
    from mlmctl import inspect_dir as impl

    impl.run(path)


@app.command("report")
def report(
    data: Annotated[Path, typer.Option("--data", metavar="DIR", help="The chain's data directory (clean, tokens, vocab, task).")] = Path("data/demo"),
    runs: Annotated[Path, typer.Option("--runs", metavar="DIR", help="The chain's runs directory (pretrain, finetune-*, eval-*).")] = Path("runs/demo"),
) -> None:
    """Sum up a whole chain: corpus, vocabulary, pretraining, and downstream scores against baselines."""
    from mlmctl import report as impl

    impl.run(data, runs)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it directly).

    Typer/click handle usage errors themselves (exit 2, usage printed); mlmctl's own errors and
    the OS errors a user can fix become one line on stderr and exit 1.
    """
    global _DEBUG
    _DEBUG = os.environ.get("MLMCTL_DEBUG", "") not in ("", "0")
    try:
        app(args=argv, prog_name="mlmctl", standalone_mode=True)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except MlmctlError as e:
        if _DEBUG:
            raise
        print(f"mlmctl: error: {e}", file=sys.stderr)
        return 1
    except (OSError, MemoryError) as e:
        # Disk full, permission denied, out of memory: the user's to fix, so one line, no traceback.
        if _DEBUG:
            raise
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"mlmctl: error: {type(e).__name__}: {getattr(e, 'strerror', None) or e}{where}", file=sys.stderr)
        return 1

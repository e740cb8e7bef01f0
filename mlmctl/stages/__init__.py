"""The stages, one module each (CONFIG, STAGE, INPUT_STAGE, run(ctx); see mlmctl.stage), and their registry.

`REGISTRY` is the one list of stage commands: the CLI builds its commands from it, the docs
generator its sections, the tests their parametrisations. Adding a stage means one module here,
one entry below, one demo YAML and one test file. Importing this package imports no stage module
(so `mlmctl --help` stays instant); `module(spec)` does, when a command runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class StageFlag:
    """A command-line option of one stage that sets one config key (`--seeds 3` = `--set seeds=3`)."""

    option: str
    """The option (`--glue-dir`)."""
    key: str
    """The config key it sets; also the Python name of the option."""
    metavar: str
    help: str
    text: bool = False
    """The value is a string as typed (a path), not parsed as YAML (`--glue-dir 2024` stays "2024")."""


@dataclass(frozen=True)
class StageSpec:
    command: str
    """The subcommand (`mlmctl build-vocab`)."""
    module: str
    """Its module under mlmctl.stages."""
    help: str
    """One line for `mlmctl --help`."""
    example: str
    """A runnable example (the demo chain's config)."""
    set_example: str
    """A real `--set` of that stage (a test runs it through --print-config)."""
    fans_out: bool = False
    """Parallel over shards: gets --workers and --task."""
    trains: bool = False
    """A training loop: stops at a step boundary on Ctrl-C/SIGTERM, resumes on rerun."""
    resume_from: bool = False
    """Offers --resume-from DIR (continue from a checkpoint of any run)."""
    note: str = ""
    """An extra line for the command's help."""
    flags: tuple[StageFlag, ...] = ()
    """Options of this stage alone, each a shorthand for one `--set`; given, they win over --set and -c."""


_STOP = "Ctrl-C or SIGTERM saves a checkpoint and exits 130/143; rerunning the same command continues."

REGISTRY: tuple[StageSpec, ...] = (
    StageSpec("clean", "clean", "Clean raw text (.txt, .jsonl, .gz, or the built-in corpus) into deduplicated "
              "document shards.", "mlmctl clean -c configs/demo/clean.yaml --workers 2", "validation_fraction=0.05",
              fans_out=True, note="Fan out over machines: --task I/N per machine, then once without --task."),
    StageSpec("tokenize", "tokenize", "Split clean documents into sentences and pre-tokens (classic BERT corpus "
              "format).", "mlmctl tokenize -c configs/demo/tokenize.yaml --workers 2", "pretokenizer.lowercase=false",
              fans_out=True),
    StageSpec("build-vocab", "build_vocab", "Train a sub-word vocabulary and index the corpus into memory-mappable "
              "token ids.", "mlmctl build-vocab -c configs/demo/build-vocab.yaml", "vocab_size=16000", fans_out=True),
    StageSpec("pretrain", "pretrain", "Pretrain a BERT encoder with masked-language modelling (runs under torchrun "
              "too).", "mlmctl pretrain -c configs/demo/pretrain.yaml", "train.lr=3e-4", trains=True, resume_from=True,
              note=_STOP),
    StageSpec("finetune", "finetune", "Fine-tune a pretrained (or randomly initialised) encoder for sequence "
              "classification.", "mlmctl finetune -c configs/demo/finetune.yaml", "epochs=5", trains=True, note=_STOP),
    StageSpec("eval", "eval", "Score a model: classifier metrics on a labelled file, or masked-LM perplexity on "
              "held-out text.", "mlmctl eval -c configs/demo/eval.yaml", "batch_size=128"),
    StageSpec("demo-task", "demo_task", "Build the demo classification task (which library a docstring comes from) "
              "from a clean directory.", "mlmctl demo-task -c configs/demo/demo-task.yaml", "num_classes=3"),
    StageSpec("glue", "glue", "Fine-tune one model on every GLUE task present and print the GLUE table (dev "
              "scores, baselines, mean ± std over seeds).",
              "mlmctl glue -c configs/glue/glue.yaml --glue-dir GLUE --input runs/demo/pretrain --output runs/glue",
              "epochs=3", note="Each task is an ordinary finetune run under OUTPUT/TASK/seed-S/; Ctrl-C or SIGTERM "
              "stops it at a step boundary, and rerunning the same command skips finished tasks and continues.",
              flags=(StageFlag("--glue-dir", "glue_dir", "DIR", "Folder in the GLUE release layout (CoLA/, SST-2/, "
                               "MNLI/, ...; sets `glue_dir`).", text=True),
                     StageFlag("--seeds", "seeds", "N", "Fine-tune each task with N seeds; report mean ± std "
                               "(sets `seeds`)."))),
)

BY_COMMAND = {s.command: s for s in REGISTRY}


def module(spec: StageSpec) -> ModuleType:
    """The stage's module (imports torch or tokenizers for the stages that use them)."""
    return importlib.import_module(f"{__name__}.{spec.module}")

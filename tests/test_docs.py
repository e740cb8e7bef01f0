"""The snippets of README.md and docs/*.md, checked against the real code so that they cannot drift.

- every `mlmctl ...` command line (fenced, indented or inline code) parses with the real CLI; a stage
  command is resolved with `--print-config` (its `-c` file when the repository has it, else the
  defaults), so every `--set key=value`, `--input` and `--output` goes through the stage's config
  dataclass, as a user's run would;
- every inline `--set key=value` that is not part of a command loads with a stage that has the key;
- every row of a config-key table (`| key | ... | default | ...`) names a real key of its stage and
  shows the dataclass default; a stage page's `key | type | default | meaning` table is exactly its
  section of the generated docs/config-reference.md;
- every ```python block compiles and its `from mlmctl... import` names exist;
- every `make TARGET` names a Makefile target (and every Makefile target is in docs/recipes.md),
  every `python benchmarks/X.py --flag` a script that has the flag;
- every repository path (`mlmctl/...`, `tests/...`, `configs/...`) exists, every link between docs
  reaches a file and a heading.

Nothing is executed beyond argument parsing and config loading (the recipes that run are in
tests/test_recipes.py). Output examples belong in ```text blocks, which are skipped.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shlex
import typing
from pathlib import Path

import pytest
import typer
import yaml

from mlmctl import cli
from mlmctl.config import load_config, parse_yaml
from mlmctl.stages import BY_COMMAND, REGISTRY
from mlmctl.stages import module as stage_module

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GENERATED = {"config-reference.md"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ----------------------------------------------------------------------------------------------
# Extraction


def _blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, first line number, body) of every fenced block, and of every indented block
    (four spaces after a blank line, outside fences)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\w*)", lines[i])
        if m:
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append((m.group(2), i + 2, "\n".join(lines[i + 1:j])))
            i = j + 1
            continue
        if lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            out.append(("indented", i + 1, "\n".join(line[4:] for line in lines[i:j])))
            i = j
            continue
        i += 1
    return out


def _spans(text: str) -> list[str]:
    """The inline code spans of the prose (fenced and indented blocks left out), CommonMark style:
    a run of N backticks up to the next run of exactly N (``` ``:func:`open` `` ``` is one span)."""
    prose, lines, fenced = [], text.splitlines(), False
    for k, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        indented = line.startswith("    ") and (k == 0 or not lines[k - 1].strip() or lines[k - 1].startswith("    "))
        if not fenced and not indented:
            prose.append(line)
    joined = " ".join(prose)
    return [m.group(2).strip() for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", joined)]


def _command_lines(body: str) -> list[str]:
    """Shell lines of a block with their `\\` continuations joined."""
    return [line.strip() for line in body.replace("\\\n", " ").splitlines() if line.strip()]


def _mlmctl_args(line: str) -> list[str] | None:
    """The arguments after `mlmctl` of a shell line that runs it (directly, or `-m mlmctl`)."""
    line = re.sub(r"^\$\s+", "", line)
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    cut = [k for k, w in enumerate(words) if w in ("|", "&&", ";", "<") or w.startswith(">") or w.startswith("2>")]
    words = words[:cut[0]] if cut else words
    if not words:
        return None
    if words[0] == "mlmctl":
        return words[1:]
    if words[0] in ("torchrun", "python", "python3") and "-m" in words:
        k = words.index("-m")
        if k + 1 < len(words) and words[k + 1] == "mlmctl":
            return words[k + 2:]
    return None


def _commands() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every command; `where` starts with "inline" for a code span in prose,
    which may name a command and an option without the rest (`mlmctl report --html`)."""
    found = []
    for path in DOCS:
        if path.name in GENERATED:
            continue
        text = path.read_text(encoding="utf-8")
        for lang, line_no, body in _blocks(text):
            if lang in ("text", "python", "json", "yaml"):
                continue
            for line in _command_lines(body):
                args = _mlmctl_args(line)
                if args is not None:
                    found.append((f"{_rel(path)}:{line_no}: {line}", args))
        for span in (x for x in _spans(text) if x.startswith("mlmctl ")):
            args = _mlmctl_args(span)
            # Templates (`mlmctl STAGE -c CONFIG.yaml [--set a.b=value ...]`) are not commands.
            if args and not args[0].isupper() and "[--" not in span and "..." not in span:
                found.append((f"inline {_rel(path)}: `{span}`", args))
    return found


COMMANDS = _commands()


# ----------------------------------------------------------------------------------------------
# Commands


def _stage_argv(args: list[str]) -> list[str]:
    """The command with a `-c` file the repository lacks (`pretrain.yaml`, a user's own) left out,
    so that the stage's defaults stand in for it, and `--print-config` added."""
    out, i = [], 0
    while i < len(args):
        if args[i] in ("-c", "--config") and i + 1 < len(args):
            if (ROOT / args[i + 1]).is_file():
                out += ["-c", str(ROOT / args[i + 1])]
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out + ["--print-config"]


def test_the_docs_have_commands():
    # The extractor must keep finding the examples (a format change would silently empty the test).
    assert len(COMMANDS) > 60
    assert {args[0] for _, args in COMMANDS} >= {s.command for s in REGISTRY} | {"inspect", "fill-mask", "report",
                                                                                  "plot"}


@pytest.mark.parametrize("where,args", COMMANDS, ids=[w[:100] for w, _ in COMMANDS])
def test_every_documented_command_parses(where, args, capsys):
    name = args[0]
    group = typer.main.get_command(cli.app)
    assert name in group.commands or name in ("--help", "-h", "--version"), f"{where}: no command `mlmctl {name}`"
    if name in BY_COMMAND:
        code = cli.main(_stage_argv(args))
        err = capsys.readouterr().err
        assert code == 0, f"{where}\n{err}"
    elif name in group.commands:
        command = group.commands[name]
        if where.startswith("inline"):
            # A mention: the command and its options must exist; the rest may be left out.
            options = {o for p in command.params for o in p.opts}
            unknown = [a for a in args[1:] if a.startswith("-") and a.split("=")[0] not in options]
            assert not unknown, f"{where}: `mlmctl {name}` has no option {unknown}"
            return
        try:
            command.make_context(name, list(args[1:]))
        except Exception as e:  # click.UsageError and friends: the message says what is wrong
            pytest.fail(f"{where}: {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------------------------
# Inline `--set key=value`


def _config_keys(cls: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    from mlmctl.config import yaml_key

    keys = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + yaml_key(f)
        keys[key] = f
        if dataclasses.is_dataclass(hints[f.name]):
            keys.update(_config_keys(hints[f.name], key + "."))
    return keys


STAGE_KEYS = {spec.command: _config_keys(stage_module(spec).CONFIG) for spec in REGISTRY}


def _inline_sets() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        if path.name in GENERATED:
            continue
        for span in (x for x in _spans(path.read_text(encoding="utf-8")) if "--set " in x):
            if span.startswith("mlmctl ") or "..." in span or re.search(r"--set (KEY|key|a\.b)\b", span):
                continue  # commands are checked whole above; templates are not examples
            for item in re.findall(r"--set[ =]('[^']*'|\S+)", span):
                found.append((f"{_rel(path)}: `{span}`", item.strip("'")))
    return found


SETS = _inline_sets()


@pytest.mark.parametrize("where,item", SETS, ids=[f"{w[:60]}|{i}" for w, i in SETS])
def test_every_inline_set_loads_with_a_stage_that_has_the_key(where, item):
    key = item.split("=", 1)[0]
    stages = [s for s in REGISTRY if key in STAGE_KEYS[s.command]]
    assert stages, f"{where}: `{key}` is a key of no stage config"
    errors = []
    for spec in stages:
        # On the defaults, or on the stage's shipped config (pretrain's defaults set no length).
        shipped = [ROOT / "configs" / "demo" / f"{spec.command}.yaml", ROOT / "configs" / spec.command /
                   f"{spec.command}.yaml"]
        for base in [None, *(p for p in shipped if p.is_file())]:
            try:
                load_config(stage_module(spec).CONFIG, base, [item])
                return
            except Exception as e:
                errors.append(f"{spec.command} ({base or 'defaults'}): {e}")
    pytest.fail(f"{where}: " + "; ".join(errors))


# ----------------------------------------------------------------------------------------------
# Config-key tables

# The stage whose keys a doc's tables list, by file, then by the heading above the table.
TABLE_STAGE = {"tokenize.md": "tokenize", "build-vocab.md": "build-vocab", "pretrain.md": "pretrain",
               "eval.md": "eval", "glue.md": "glue", "clean.md": "clean"}
HEADING_STAGE = {"demo-task": "demo-task", "finetune": "finetune"}


def _key_tables() -> list[tuple[str, str | None, str, list[str], list[list[str]]]]:
    """(where, stage, group, header, rows) of every table of config keys: its first column is
    `key` and it has a `default` column. `group` is the step a table of a clean doc is about (the
    bold `**`name`**` above it), '' if none."""
    tables = []
    for path in DOCS:
        if path.name in GENERATED:
            continue
        heading, group = "", ""
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if lines[i].startswith("#"):
                heading, group = lines[i].lower(), ""
            m = re.match(r"^\*\*`(\w+)`\*\*", lines[i])
            if m:
                group = m.group(1)
            cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            if lines[i].startswith("|") and cells[0] == "key" and i + 1 < len(lines):
                rows, j = [], i + 2
                while j < len(lines) and lines[j].startswith("|"):
                    rows.append([c.strip() for c in re.split(r"(?<!\\)\|", lines[j].strip().strip("|"))])
                    j += 1
                if "default" in cells:
                    stage = next((s for word, s in HEADING_STAGE.items() if word in heading), None)
                    tables.append((f"{_rel(path)}:{i + 1}", stage or TABLE_STAGE.get(path.name), group, cells, rows))
                i = j
                continue
            i += 1
    return tables


TABLES = _key_tables()


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
        return {}  # a group: its keys have rows of their own
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def test_every_doc_with_a_key_table_is_checked():
    names = {w.split(":")[0] for w, *_ in TABLES}
    assert {"docs/tokenize.md", "docs/build-vocab.md", "docs/eval.md", "docs/finetune.md", "docs/glue.md"} <= names
    unassigned = [w for w, stage, *_ in TABLES if stage is None]
    assert not unassigned, f"tables of keys with no stage (add the doc to TABLE_STAGE): {unassigned}"


def _row_keys(cell: str, group: str, keys: dict) -> list[str]:
    """The keys a table row names: `a.b` / `c` / `d` share a.'s group (clean.md's shorthand),
    and a table under a `**`step`**` line may leave that step's prefix out; `x.*` names a group."""
    out, prefix = [], ""
    for name in re.findall(r"`([\w.*]+)`", cell):
        if name.endswith(".*"):
            continue
        if "." in name:
            prefix = name.rsplit(".", 1)[0] + "."
        elif prefix:
            name = prefix + name
        if name not in keys and group:
            name = f"{group}.{name}"
        out.append(name)
    return out


def _same(shown, value) -> bool | None:
    """Whether a doc's default equals the code's; None when the cell is prose ("see above")."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bool) or isinstance(shown, bool) or value is None or shown is None:
        return shown is value if (isinstance(shown, bool) or shown is None) else None
    if isinstance(value, (int, float)) and isinstance(shown, (int, float)):
        return shown == value
    if type(shown) is type(value):
        return shown == value
    return None


@pytest.mark.parametrize("where,stage,group,header,rows", TABLES, ids=[t[0] for t in TABLES])
def test_config_tables_name_real_keys_and_defaults(where, stage, group, header, rows):
    keys = STAGE_KEYS[stage]
    col = header.index("default")
    problems = []
    for row in rows:
        named = _row_keys(row[0], group, keys)
        problems += [f"`{key}` is not a `{stage}` key" for key in named if key not in keys]
        cell = row[col] if col < len(row) else ""
        # `20 / null` for two keys; digits grouped with spaces (`50 000 000`) are one number.
        cells = [re.sub(r"(?<=\d) (?=\d{3}\b)", "", c.strip().strip("`")) for c in cell.split(" / ")]
        if len(cells) != len(named):
            continue
        for key, text in zip(named, cells):
            if key not in keys or isinstance(_default(keys[key]), dict):
                continue
            try:
                shown = parse_yaml(text)
            except yaml.YAMLError:
                continue  # prose, a glob list: not a literal to compare
            if _same(shown, _default(keys[key])) is False:
                problems.append(f"`{key}`: the doc says default {text}, the code has {_default(keys[key])!r}")
    assert not problems, f"{where} ({stage}): " + "; ".join(problems)


FULL = [t for t in TABLES if t[3][:4] == ["key", "type", "default", "meaning"]]


@pytest.mark.parametrize("where,stage,group,header,rows", FULL, ids=[t[0] for t in FULL])
def test_copied_config_tables_are_the_generated_ones(where, stage, group, header, rows):
    """A stage page's `key | type | default | meaning` table is a copy of its section of
    docs/config-reference.md: every key, each row exactly as `mlmctl.docgen` renders it."""
    from mlmctl.docgen import _rows

    path, line = where.split(":")
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    have = lines[int(line) + 1:int(line) + 1 + len(rows)]
    want = _rows(stage_module(BY_COMMAND[stage]).CONFIG)
    assert have == want, (f"{where}: the `{stage}` key table differs from the generated reference; replace its "
                          f"rows with those of `mlmctl.docgen._rows` (the `mlmctl {stage}` section of "
                          f"docs/config-reference.md)")


# ----------------------------------------------------------------------------------------------
# Python snippets, make targets, benchmark scripts


def _python_blocks() -> list[tuple[str, str]]:
    return [(f"{_rel(p)}:{n}", body) for p in DOCS for lang, n, body in _blocks(p.read_text(encoding="utf-8"))
            if lang == "python"]


@pytest.mark.parametrize("where,body", _python_blocks(), ids=[w for w, _ in _python_blocks()])
def test_python_snippets_compile_and_import_real_names(where, body):
    # API summaries (`f(x) -> y` lines) are signatures, not code: only real code must compile.
    if "->" not in body:
        compile(body, where, "exec")
    for module, names in re.findall(r"^from (mlmctl[\w.]*) import ([\w, ]+)$", body, re.M):
        mod = importlib.import_module(module)
        missing = [n.strip() for n in names.split(",") if not hasattr(mod, n.strip())]
        assert not missing, f"{where}: {module} has no {missing}"


def _shell_lines() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for lang, n, body in _blocks(text):
            if lang not in ("text", "python", "json", "yaml", "make"):
                out += [(f"{_rel(path)}:{n}", line) for line in _command_lines(body)]
        out += [(_rel(path), span) for span in _spans(text) if re.match(r"(make|python) ", span)]
    return out


def test_make_targets_and_benchmark_flags_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    problems = []
    for where, line in _shell_lines():
        try:
            words = shlex.split(re.split(r"\s(?:[|;<]|&&|2?>)", line)[0], comments=True)
        except ValueError:
            continue
        if words[:1] == ["make"] and "-f" not in words:  # `make -f chain.mk`: the recipe's own targets
            for target in (w for w in words[1:] if re.fullmatch(r"\w[\w-]*", w)):
                if target not in targets and not target.endswith(".mk"):
                    problems.append(f"{where}: `make {target}`: no such Makefile target")
        if words[:1] == ["python"] and len(words) > 1 and words[1].startswith("benchmarks/"):
            script = ROOT / words[1]
            if not script.is_file():
                problems.append(f"{where}: {words[1]} does not exist")
                continue
            source = script.read_text(encoding="utf-8")
            problems += [f"{where}: {words[1]} has no {flag}" for flag in re.findall(r"(--[\w-]+)", line)
                         if f'"{flag}"' not in source and f"'{flag}'" not in source]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------
# Paths and links

_PATH = re.compile(r"(?<![\w/.-])((?:mlmctl|tests|benchmarks|configs|scripts|docs)/[\w./-]*\w)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lstrip("#").strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_paths_named_in_the_docs_exist():
    problems = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for name in sorted(set(_PATH.findall(text))):
            if any(c in name for c in "*{<") or name.endswith((".tmp", "-")):
                continue
            candidate = ROOT / name
            if not (candidate.exists() or candidate.with_suffix(".py").exists()
                    or (ROOT / name.replace(".", "/")).with_suffix(".py").exists()):
                problems.append(f"{_rel(path)}: {name}")
    assert not problems, "paths named in the docs that do not exist:\n" + "\n".join(problems)


def test_links_between_docs_resolve():
    problems = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"\w+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            doc = (path.parent / file).resolve() if file else path
            if not doc.exists():
                problems.append(f"{_rel(path)}: ({target}): no such file")
                continue
            if anchor and doc.suffix == ".md":
                slugs = {_slug(line) for line in doc.read_text(encoding="utf-8").splitlines()
                         if line.startswith("#")}
                if anchor not in slugs:
                    problems.append(f"{_rel(path)}: ({target}): {doc.name} has no heading #{anchor}")
    assert not problems, "\n".join(problems)


def test_every_makefile_target_is_in_the_recipes_table():
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    table = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    missing = [t for t in phony if not re.search(rf"^\| `make {re.escape(t)}\b", table, re.M)]
    assert not missing, f"docs/recipes.md's table of make targets lacks {missing}"


def test_every_module_has_a_floor_in_architecture_md():
    floors = re.search(r"```\n(floor 5.*?)```", (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"), re.S)
    names = set(re.findall(r"[\w<>]+\.py", floors.group(1)))
    missing = [p.name for p in sorted((ROOT / "mlmctl").glob("*.py")) if p.name not in names]
    assert not missing, f"docs/architecture.md's floors do not place {missing}: add each where its imports put it"


def test_dotted_keys_in_prose_exist():
    """`train.warmup_steps`, `segment.user_dict: path`: a dotted key of a config group named in
    prose is a key of some stage (file names such as `train.tsv` and weight names are not keys)."""
    every = set().union(*STAGE_KEYS.values())
    groups = {k.split(".")[0] for k in every if "." in k}
    problems = []
    for path in DOCS:
        if path.name in GENERATED:
            continue
        for span in _spans(path.read_text(encoding="utf-8")):
            m = re.fullmatch(r"([a-z_]+)\.([a-z_.]+)(?:\s*[:=].*)?", span)
            if not m or m.group(1) not in groups or "*" in span:
                continue
            if re.search(r"\.(py|json|safetensors|tsv|conll|jsonl|txt|gz|weight|bias)\b", span):
                continue
            key = f"{m.group(1)}.{m.group(2)}"
            if key not in every:
                problems.append(f"{_rel(path)}: `{span}`")
    assert not problems, "dotted keys that no stage has:\n" + "\n".join(problems)


def _groups(text: str, start: int) -> list[str]:
    """The contents of the balanced parenthesis groups that follow each other from `start`."""
    out = []
    while start < len(text) and text[start] == "(":
        depth, k = 0, start
        for k in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[k], 0)
            if depth == 0:
                break
        out.append(text[start + 1:k])
        start = k + 1
    return out


def _param_names(args: str) -> list[str]:
    parts = re.split(r",(?![^()\[\]]*[)\]])", args)
    return [p.split("=")[0].strip() for p in parts if re.match(r"\s*\w+\s*(=|$)", p)]


def test_api_summaries_name_real_parameters():
    """The API blocks of docs/model.md (`Class(init args)(forward args) -> ...`): every class and
    function exists in the module the block documents, with every parameter the line names."""
    import inspect

    checked = 0
    for where, body in _python_blocks():
        if "->" not in body:
            continue
        text = re.sub(r"#[^\n]*", "", body)
        lines = re.sub(r"\n\s+", " ", text).splitlines()
        first = re.match(r"\s*(\w+)", lines[0]).group(1)
        module = next(m for m in (importlib.import_module(f"mlmctl.{n}") for n in ("model", "modernbert"))
                      if hasattr(m, first) and getattr(m, first).__module__ == m.__name__)
        for call in (c.strip() for line in lines for c in re.split(r";| / ", line.split("->")[0])):
            m = re.match(r"(\w+)\(", call)
            if not m:
                continue
            obj = getattr(module, m.group(1), None)
            assert obj is not None, f"{where}: {module.__name__} has no {m.group(1)}"
            targets = [obj, obj.forward] if inspect.isclass(obj) else [obj]
            for target, args in zip(targets, _groups(call, m.end() - 1)):
                params = set(inspect.signature(target).parameters)
                unknown = [n for n in _param_names(args) if n not in params]
                assert not unknown, f"{where}: {m.group(1)}: no parameter {unknown} (has {sorted(params)})"
                checked += 1
    assert checked >= 10

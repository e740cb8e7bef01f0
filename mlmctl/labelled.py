"""Reading labelled classification files (TSV, CSV, JSONL; optionally gzipped); turning them
into model inputs is `mlmctl.text_encoder`'s job.

Used by finetune (train/dev files) and eval (test file). Decisions on bad input:

- TSV is read literally (no quoting, like the GLUE files): a row with a
  different number of fields than the header is an error naming the line,
  because a stray tab inside a text would otherwise shift every column
  silently. CSV follows RFC 4180 quoting (Python's `csv` module).
- The first row of TSV/CSV is a header unless `has_header` is false; then
  fields are named by 0-based column index ("0", "1", ...).
- JSONL: one object per line, blank lines skipped; labels may be strings or
  integers (integers are stored as their decimal string, so `1` and `"1"` are
  the same label).
- With `regression=True` (finetune/eval `task: regression`) a label is one float: a JSON
  number or a string that parses as one (`"3.8"`, `"4"`); anything else, NaN or an infinity is
  an error naming file and line, and `labels` holds floats.
- A row whose text (or text pair) is empty after stripping is dropped and
  counted (`dropped.empty_text`); a row without a label is an error, as is a
  missing column/field, a file with no examples, or undecodable UTF-8.
- A TSV/CSV field longer than `max_field_chars` (default 10,000,000; Python's csv
  module alone stops at 131,072) is an error naming the line and the setting.
- JSON lines go through `mlmctl.safe_json`: a record nested too deep or holding a
  number too large to read is an error naming the line, like malformed JSON.
- A file named `.gz` must hold gzip data (an error names the file otherwise).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from mlmctl import safe_json
from mlmctl.errors import InputError

MAX_FIELD_CHARS = 10_000_000
"""Default longest TSV/CSV field, in characters (the `max_field_chars` config keys)."""
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class LabelledData:
    """Examples of one labelled file, in file order."""

    path: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[str] | list[float]
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, texts: list[str], label) -> None:
        """Append one example (`texts`: the text, and its pair when the file has pairs); one whose
        text is empty after stripping is dropped and counted as `empty_text` instead."""
        if any(not t.strip() for t in texts):
            self.dropped["empty_text"] = self.dropped.get("empty_text", 0) + 1
            return
        self.texts.append(texts[0])
        if self.pairs is not None:
            self.pairs.append(texts[1])
        self.labels.append(label)


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".tsv", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if name.endswith(suffix):
            return fmt
    raise InputError(f"{path}: cannot tell the format from the file name; name it .tsv, .csv or .jsonl or set `format`")


def read_labelled(
    path: str | Path,
    *,
    text_field: str = "text",
    text_pair_field: str | None = None,
    label_field: str = "label",
    fmt: str = "auto",
    has_header: bool = True,
    max_field_chars: int = MAX_FIELD_CHARS,
    regression: bool = False,
) -> LabelledData:
    """Read one labelled file; raises `InputError` with the file and line on bad input.
    `regression`: labels are floats (see the module docstring), else strings."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: labelled file not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    text = read_text_file(path)
    fields = [f for f in (text_field, text_pair_field, label_field) if f is not None]
    if fmt == "jsonl":
        rows = _jsonl_rows(path, text, fields)
    else:
        rows = _delimited_rows(path, text, fields, "\t" if fmt == "tsv" else ",", has_header, max_field_chars)

    out = LabelledData(str(path), [], [] if text_pair_field else None, [])
    for line_no, row in rows:
        label = row[label_field]
        if label is None or (isinstance(label, str) and not label.strip()):
            raise InputError(f"{path}:{line_no}: empty label in `{label_field}`; every example needs a label")
        if regression:
            label = float_label(label, f"{path}:{line_no}", label_field)
        elif isinstance(label, bool) or not isinstance(label, (str, int)):
            raise InputError(
                f"{path}:{line_no}: label {label!r} in `{label_field}` is not a string or an integer"
            )
        else:
            label = str(label).strip()
        texts = [row[text_field]] + ([row[text_pair_field]] if text_pair_field else [])
        for t, name in zip(texts, (text_field, text_pair_field)):
            if not isinstance(t, str):
                raise InputError(f"{path}:{line_no}: `{name}` is {type(t).__name__}, expected a string")
        out.add(texts, label)
    if not out.texts:
        raise InputError(f"{path}: no examples (empty file, or every text empty)")
    return out


def float_label(label, where: str, label_field: str) -> float:
    """A regression label as a float; anything but a finite number is an error naming `where`."""
    value = parse_finite(label)
    if value is None:
        raise InputError(f"{where}: label {label!r} in `{label_field}` is not a number; a regression task "
                         "needs one finite number per example")
    return value


def parse_finite(label) -> float | None:
    """`label` (a JSON number or a string) as a finite float, else None. Stricter than `float()`:
    NaN, infinities, 1e999 and Python-only spellings such as `1_000` are not numbers in a data file."""
    if isinstance(label, bool):
        return None
    if not isinstance(label, (int, float)) and not (isinstance(label, str) and "_" not in label):
        return None
    try:
        value = float(label.strip() if isinstance(label, str) else label)
    except (ValueError, OverflowError):  # OverflowError: an integer past the float range
        return None
    return value if math.isfinite(value) else None


def label_list(labels: list[str], explicit: list[str] | None = None) -> list[str]:
    """The label order (id i = position i): `explicit` if given, else sorted,
    numerically when every label is an integer (so "2" < "10")."""
    if explicit:
        missing = sorted(set(labels) - set(explicit))
        if missing:
            raise InputError(f"labels {missing[:5]} occur in the training file but not in the configured `labels`")
        return list(explicit)
    uniq = set(labels)
    if all(_is_int(x) for x in uniq):
        return sorted(uniq, key=int)
    return sorted(uniq)


def encode_labels(data: LabelledData, label2id: dict[str, int]) -> list[int]:
    """Label ids of `data`; a label the model does not know is an error."""
    unseen = sorted(set(data.labels) - set(label2id))
    if unseen:
        known = ", ".join(list(label2id)[:10])
        raise InputError(
            f"{data.path}: label(s) {', '.join(map(repr, unseen[:5]))} not in the training label set ({known})"
        )
    return [label2id[x] for x in data.labels]


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def read_text_file(path: Path, reader: str = "") -> str:
    """The file's text, strictly UTF-8 (gunzipped when named .gz); errors name file and line."""
    where = f"{reader}: {path}" if reader else str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{where}: cannot read ({e.strerror or e})") from None
    if path.name.lower().endswith(".gz"):
        if raw[:2] != _GZIP_MAGIC:
            raise InputError(f"{where}: named .gz but not gzip data; rename it without .gz or compress it")
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, ValueError, zlib.error) as e:  # zlib.error is neither OSError nor ValueError
            raise InputError(f"{where}: damaged gzip data ({e}); recompress the file") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(f"{where}:{line}: invalid UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None


def read_text_docs(path: str | Path, reader: str) -> list[str]:
    """Plain-text documents (separated by blank lines) of a UTF-8 file, gzipped or not: eval's
    `text_files`. Bad bytes are an error with the line, as for labelled files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{reader}: text file {path} does not exist")
    text = read_text_file(path, reader)
    return [d.strip() for d in re.split(r"\n\s*\n", text) if d.strip()]


def jsonl_objects(path: Path, text: str, expect: str = "a JSON object per line"):
    """(line number, object) for every non-blank line of a JSONL file; a line that is not a JSON
    object is an error naming file, line and what was `expect`ed."""
    # "\n" only: str.splitlines() also breaks at U+2028, U+0085 and friends, which JSON allows raw
    # inside strings (json.dumps(ensure_ascii=False) writes them so); a trailing "\r" is JSON whitespace.
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = safe_json.loads(line)
        except safe_json.JSONError as e:
            raise InputError(f"{path}:{line_no}: {e}") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{line_no}: expected {expect}")
        yield line_no, obj


def _jsonl_rows(path: Path, text: str, fields: list[str]):
    for line_no, obj in jsonl_objects(path, text):
        for f in fields:
            if f not in obj:
                raise InputError(
                    f"{path}:{line_no}: no field `{f}` (fields: {', '.join(obj)}); set the field names in the config"
                )
        yield line_no, obj


def _delimited_rows(path: Path, text: str, fields: list[str], delimiter: str, has_header: bool,
                    max_field_chars: int = MAX_FIELD_CHARS):
    # The csv module's field limit is process-wide: set ours for this file, restore it after.
    previous = csv.field_size_limit(max_field_chars)
    try:
        yield from _delimited(path, text, fields, delimiter, has_header, max_field_chars)
    finally:
        csv.field_size_limit(previous)


def _delimited(path: Path, text: str, fields: list[str], delimiter: str, has_header: bool, max_field_chars: int):
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    kind = "TSV" if delimiter == "\t" else "CSV"
    header: list[str] | None = None
    index: dict[str, int] = {}
    try:
        for row in reader:
            line_no = reader.line_num
            if not row or row == [""]:
                continue
            if header is None:
                if has_header:
                    header = [h.strip() for h in row]
                    index = {h: i for i, h in enumerate(header)}
                else:
                    header = [str(i) for i in range(len(row))]
                    index = {h: i for i, h in enumerate(header)}
                for f in fields:
                    if f not in index:
                        cols = ", ".join(header)
                        raise InputError(
                            f"{path}: no column `{f}` (columns: {cols}); set the column names in the config"
                            + ("" if has_header else " as 0-based indices")
                        )
                if has_header:
                    continue
            if len(row) != len(header):
                hint = " (a tab inside a text? use CSV or JSONL for such texts)" if delimiter == "\t" else ""
                raise InputError(
                    f"{path}:{line_no}: {kind} row has {len(row)} fields but the header has {len(header)}{hint}"
                )
            yield line_no, {f: row[index[f]] for f in fields}
    except csv.Error as e:
        if "field limit" in str(e):
            raise InputError(
                f"{path}:{reader.line_num}: a field is longer than max_field_chars ({max_field_chars:,} characters); "
                "raise `max_field_chars` if the text is real"
            ) from None
        raise InputError(f"{path}:{reader.line_num}: malformed {kind} ({e})") from None

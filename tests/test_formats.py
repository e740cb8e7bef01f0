"""Input formats for clean: .zst, CSV/TSV, Parquet, Arrow IPC - same output as .jsonl; bad input."""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import pytest

from mlmctl import sources, tables
from mlmctl.errors import InputError
from mlmctl.sources import FileUnit, ReadOptions, discover, read_unit

zstandard = pytest.importorskip("zstandard")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _docs(n: int = 400) -> list[str]:
    """Documents that exercise quoting: commas, quotes, tabs, newlines, non-ASCII, an invalid byte."""
    rng = random.Random(7)
    words = "alpha beta gamma, delta \"epsilon\" zeta\teta theta iota kappa Zürich naïve 北京 lambda".split(" ")
    docs = []
    for i in range(n):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))
        if i % 7 == 0:
            body += "\nsecond line of the document, with more words here"
        docs.append(f"Document {i}: {body}.")
    return docs


def _write_all(d: Path, docs: list[str]) -> dict[str, Path]:
    """The same documents (source column "src") in every format."""
    srcs = [f"origin-{i % 3}" for i in range(len(docs))]
    jsonl = "".join(json.dumps({"text": t, "src": s}, ensure_ascii=False) + "\n" for t, s in zip(docs, srcs))
    paths = {"jsonl": d / "a.jsonl", "zst": d / "a.jsonl.zst", "csv": d / "a.csv", "tsv": d / "a.tsv.gz",
             "parquet": d / "a.parquet", "arrow": d / "data-00000-of-00001.arrow", "arrow_file": d / "b.arrow"}
    paths["jsonl"].write_text(jsonl, encoding="utf-8")
    # Two frames: readers must go across frame boundaries.
    half = len(jsonl) // 2
    cctx = zstandard.ZstdCompressor()
    paths["zst"].write_bytes(cctx.compress(jsonl[:half].encode()) + cctx.compress(jsonl[half:].encode()))
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["n", "text", "src"])
        w.writerows([i, t, s] for i, (t, s) in enumerate(zip(docs, srcs)))
    with gzip.open(paths["tsv"], "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["src", "text"])
        w.writerows(zip(srcs, docs))
    table = pa.table({"n": list(range(len(docs))), "text": docs, "src": srcs})
    pq.write_table(table, paths["parquet"], row_group_size=64)
    # As datasets.save_to_disk writes it: the IPC stream format, several record batches.
    with pa.OSFile(str(paths["arrow"]), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as wr:
        for batch in table.to_batches(max_chunksize=50):
            wr.write_batch(batch)
    with pa.OSFile(str(paths["arrow_file"]), "wb") as sink, pa.ipc.new_file(sink, table.schema) as wr:
        wr.write_table(table)
    return paths


def _shards(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/shard-*"))}


def test_every_format_gives_the_jsonl_output_byte_for_byte(run_cli, tmp_path):
    paths = _write_all(tmp_path, _docs())
    outputs = {}
    for name, path in paths.items():
        out = tmp_path / f"out-{name}"
        code, _, err = run_cli("clean", "--input", str(path), "--output", str(out), "--set", "source_field=src",
                               "--set", "validation_fraction=0.1")
        assert code == 0, err
        outputs[name] = _shards(out)
    assert outputs["jsonl"] and len(outputs["jsonl"]) == 2
    for name, shards in outputs.items():
        assert shards == outputs["jsonl"], name


def test_auto_formats_and_directory_walk(tmp_path):
    paths = _write_all(tmp_path, _docs(5))
    fmts = {Path(u.name).name: u.fmt for u in discover([str(tmp_path)], ["*"], "auto", 1, ReadOptions())}
    assert fmts == {"a.jsonl": "jsonl", "a.jsonl.zst": "jsonl", "a.csv": "csv", "a.tsv.gz": "tsv",
                    "a.parquet": "parquet", "data-00000-of-00001.arrow": "arrow", "b.arrow": "arrow"}
    assert len(paths) == len(fmts)


def _read(path, fmt, **opts):
    skips, stats = [], {}
    docs = [(d.text, d.line) for d in read_unit(FileUnit(str(path), fmt), ReadOptions(**opts),
                                                lambda r, f, ln: skips.append((r, ln)), stats)]
    return docs, skips, stats


def test_truncated_zst_keeps_what_came_before_and_counts_the_rest(tmp_path):
    lines = [json.dumps({"text": f"record {i} " + "word " * 30}) + "\n" for i in range(2000)]
    blob = zstandard.ZstdCompressor().compress("".join(lines).encode())
    p = tmp_path / "cut.jsonl.zst"
    p.write_bytes(blob[: len(blob) // 2])
    docs, skips, stats = _read(p, "jsonl")
    assert 0 < len(docs) < 2000
    assert [d[0] for d in docs] == [json.loads(x)["text"] for x in lines[: len(docs)]]
    assert skips == [("corrupt_zstd", len(docs) + 1)]
    assert stats["files_zstd"] == 1
    (tmp_path / "junk.txt.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\xff" * 100)
    assert _read(tmp_path / "junk.txt.zst", "text")[1] == [("corrupt_zstd", 1)]


def test_csv_unterminated_quote_and_short_rows_are_counted(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text('id,text\n1,"first, fine"\n2\n3,"second\nspans lines"\n4,"never closed\n5,lost\n', encoding="utf-8")
    docs, skips, _ = _read(p, "csv")
    assert docs == [("first, fine", 2), ("second\nspans lines", 4)]
    assert skips == [("missing_text_field", 3), ("malformed_csv", 6)]


def test_csv_mixed_encodings_reach_the_decode_step(tmp_path):
    p = tmp_path / "mixed.csv"
    p.write_bytes("text\nZürich in UTF-8\n".encode() + "Zürich in Latin-1\n".encode("latin-1"))
    docs, skips, _ = _read(p, "csv")
    assert docs[0][0] == "Zürich in UTF-8" and docs[1][0] == "Z\udcfcrich in Latin-1" and not skips


def test_missing_or_non_string_column_is_one_line_before_work(tmp_path):
    pq.write_table(pa.table({"body": ["a"], "n": [1]}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"^clean: .*a\.parquet: no column 'text' \(columns: body, n\); set `text_field`$"):
        discover([str(tmp_path / "a.parquet")], ["*"], "auto", 1, ReadOptions())
    with pytest.raises(InputError, match=r"column 'n' holds int64, not text"):
        discover([str(tmp_path / "a.parquet")], ["*"], "auto", 1, ReadOptions(text_field="n"))
    (tmp_path / "b.csv").write_text("body\nx\n")
    with pytest.raises(InputError, match=r"b\.csv: no column 'text'"):
        _read(tmp_path / "b.csv", "csv")
    (tmp_path / "c.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match=r"c\.parquet: not a readable Parquet file"):
        discover([str(tmp_path / "c.parquet")], ["*"], "auto", 1, ReadOptions())


def test_null_rows_and_damaged_parquet_are_counted(tmp_path):
    p = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": ["one", None, "three"]}), p)
    assert _read(p, "parquet")[:2] == ([("one", 1), ("three", 3)], [("missing_text_field", 2)])
    big = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": [f"row {i} " * 20 for i in range(5000)]}), big, row_group_size=1000,
                   compression="none")
    data = bytearray(big.read_bytes())
    data[len(data) // 2: len(data) // 2 + 2000] = b"\xff" * 2000  # a damaged page, footer intact
    big.write_bytes(bytes(data))
    docs, skips, _ = _read(big, "parquet")
    assert 0 < len(docs) < 5000 and skips == [("corrupt_parquet", len(docs) + 1)]


def test_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("pyarrow", "zstandard") else real(name, *a))
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"needs `pyarrow`, in the `formats` extra.*mlmctl\[formats\]"):
        discover([str(tmp_path / "a.parquet")], ["*"], "auto", 1, ReadOptions())
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b"{}\n"))
    with pytest.raises(InputError, match=r"needs `zstandard`, in the `formats` extra"):
        discover([str(tmp_path / "b.jsonl.zst")], ["*"], "auto", 1, ReadOptions())
    assert tables.TABLE_FORMATS and sources.TABLE_SUFFIXES[".parquet"] == "parquet"

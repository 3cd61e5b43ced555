"""What every source shares: raw items, processed samples, rejects, file access through fsspec."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import fsspec

from dataset_builders.schema import SampleRecord

if TYPE_CHECKING:
    from dataset_builders.build import BuildContext


@dataclass(frozen=True)
class RawItem:
    """One input: a file (or a table row naming a file) under a source root. Cheap to list, pickle and hash."""

    source: str  # source name from the config
    path: str  # posix path relative to the source root
    kind: str  # "dicom" | "image" | "label_row" | "orphan_image"
    extra: tuple = ()  # small, hashable per-item data (e.g. a label row as (column, value) pairs)

    def identity(self) -> str:
        return f"{self.source}\x1f{self.path}\x1f{self.kind}\x1f{self.extra!r}"


class Reject(Exception):
    """An input that yields no sample; ``stage`` and the message go to rejects.parquet."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


@dataclass
class ProcessedSample:
    record: SampleRecord
    image: bytes


@dataclass
class SourceFiles:
    """fsspec access below a root (local path or URL)."""

    root: str
    fs: Any = field(init=False)
    base: str = field(init=False)

    def __post_init__(self) -> None:
        self.fs, self.base = fsspec.core.url_to_fs(self.root)
        self.base = self.base.rstrip("/")

    def full(self, rel: str) -> str:
        return posixpath.join(self.base, rel)

    def exists(self, rel: str = "") -> bool:
        return self.fs.exists(self.full(rel) if rel else self.base)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.full(rel), "rb") as handle:
            return handle.read()

    def glob(self, pattern: str) -> list[str]:
        prefix = self.base + "/"
        found = self.fs.glob(posixpath.join(self.base, pattern))
        return sorted(p[len(prefix):] if p.startswith(prefix) else p for p in found if self.fs.isfile(p))

    def walk_files(self, sub: str = "") -> list[str]:
        start = self.full(sub) if sub else self.base
        prefix = self.base + "/"
        out = []
        for dirpath, _dirs, files in self.fs.walk(start):
            for name in files:
                full = posixpath.join(dirpath, name)
                out.append(full[len(prefix):] if full.startswith(prefix) else full)
        return sorted(out)


class Source:
    """A pluggable input: ``iter_items`` lists lazily (sorted, stable), ``process`` turns one item into samples."""

    kind = "base"

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self.files = SourceFiles(cfg.root)

    def check(self) -> None:
        """Raise ``ConfigError`` early when the root is unusable (a message for the user, not a traceback)."""
        from mgll.config import ConfigError

        if not self.files.exists():
            raise ConfigError(f"source {self.name!r}: root {self.cfg.root!r} does not exist")

    def iter_items(self) -> Iterator[RawItem]:
        raise NotImplementedError

    def process(self, item: RawItem, ctx: "BuildContext") -> list[ProcessedSample]:
        raise NotImplementedError

    def label_derived_granularities(self) -> list[str]:
        return []

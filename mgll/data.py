"""WebDataset training pipeline over build-dataset shards, driven by the dataset card (``OUT/dataset.json``).

Per sample: decode the image, augment it, read the texts of the chosen granularities (coarse -> fine), turn the
labels into a multi-hot over the card's vocabulary. Per batch: tokenise each granularity, collate. A batch is a dict
``images`` (B,3,H,W) float, ``tokens`` list of G (B,L) long tensors, ``texts`` list of G lists of str,
``text_mask`` (B,G) bool (False where a sample has no text for that granularity and ``missing_text: mask``),
``labels`` (B,V) float multi-hot (state 1 positive; state -1 per ``uncertain_label``), ``keys`` list of str.

Data position and exact resume (the choice): every epoch's order is a pure function of ``(seed, epoch)`` — the
shard list is shuffled with ``random.Random(seed, epoch)``, the sample shuffle buffer uses its own RNG seeded the
same way, and each sample's augmentation is seeded from ``(seed, epoch, key)`` inside ``torch.random.fork_rng``,
so it does not depend on which process loads it or on what was loaded before. A checkpoint stores
``{epoch, batches}`` and resuming rebuilds that epoch's pipeline and skips ``batches`` batches, mostly *before
decoding* (cheap: tar members are read, not decoded): the DataLoader takes batches from its workers round-robin,
so every worker skips ``batches // workers`` of its own and the ``batches % workers`` left are dropped after
loading. This is exact with ``workers: 0``, and with ``workers: N`` while every worker still has data (near the
end of an epoch with unevenly filled workers the round-robin shifts). ``missing_text: drop`` removes samples
after the skip point is counted, which keeps the order deterministic but makes the skip count approximate.

Splitting: with at least ``world_size * workers`` shards, shards are split by node (rank) and by worker
(``wds.split_by_node`` / ``wds.split_by_worker``); with fewer (small datasets, demo) every process reads all shards
and keeps every k-th sample, so no rank ever starves. ``resampled: true`` draws shards with replacement
(``wds.ResampledShards``, deterministic per seed/rank/worker): an endless stream for multi-node runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import webdataset as wds
from PIL import Image

from mgll.train_config import AugmentSection, DataSection

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")


class DataError(ValueError):
    """A dataset, shard or sample that cannot feed training; the message names the file/key and the problem."""


@dataclass
class DatasetCard:
    root: str
    granularities: list[str]
    label_vocabulary: list[str]
    label_derived_granularities: list[str]
    shards: dict[str, list[str]]  # split -> shard URLs (absolute)
    counts: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def split_size(self, split: str) -> int | None:
        per_split = self.counts.get("per_split") or {}
        return per_split.get(split)


def _join(root: str, rel: str) -> str:
    if "://" in rel or rel.startswith("/"):
        return rel
    return root.rstrip("/") + "/" + rel


def read_card(dataset: str | Path) -> DatasetCard:
    """Read ``dataset.json`` from a build-dataset output (directory or fsspec URL)."""
    import fsspec

    root = str(dataset).rstrip("/")
    card_url = root + "/dataset.json"
    try:
        with fsspec.open(card_url, "r") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise DataError(f"no dataset card at {card_url!r}: is {root!r} a build-dataset output?") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"dataset card {card_url!r} is not valid JSON: {exc}") from None
    missing = [k for k in ("granularities", "label_vocabulary", "shards") if k not in raw]
    if missing:
        raise DataError(f"dataset card {card_url!r} lacks {', '.join(missing)}")
    if root.startswith("file://"):
        root = root[len("file://") :]
    shards = {split: [_join(root, rel) for rel in rels] for split, rels in (raw.get("shards") or {}).items()}
    return DatasetCard(
        root=root,
        granularities=list(raw["granularities"]),
        label_vocabulary=list(raw["label_vocabulary"]),
        label_derived_granularities=list(raw.get("label_derived_granularities") or []),
        shards=shards,
        counts=dict(raw.get("counts") or {}),
        raw=raw,
    )


def check_granularities(card: DatasetCard, chosen: Sequence[str]) -> list[str]:
    unknown = [g for g in chosen if g not in card.granularities]
    if unknown:
        raise DataError(
            f"granularities {unknown} are not in the dataset card of {card.root!r} "
            f"(it has {card.granularities}); fix data.granularities"
        )
    order = [g for g in card.granularities if g in chosen]
    if list(chosen) != order:
        raise DataError(f"data.granularities must be ordered coarse -> fine as in the card: {order}")
    return list(chosen)


def train_transform(size: int, mean: Sequence[float], std: Sequence[float], aug: AugmentSection) -> Callable:
    from torchvision import transforms as T

    steps: list[Any] = []
    if aug.enabled:
        steps.append(T.RandomResizedCrop(size, scale=tuple(aug.scale), interpolation=T.InterpolationMode.BICUBIC))
        if aug.flip:
            steps.append(T.RandomHorizontalFlip())
        if aug.color_jitter > 0:
            j = aug.color_jitter
            steps.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
    else:
        steps += [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
    return _to_tensor(T.Compose(steps), mean, std)


def val_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    from torchvision import transforms as T

    return _to_tensor(
        T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]), mean, std
    )


def _to_tensor(pil_steps: Callable, mean: Sequence[float], std: Sequence[float]) -> Callable:
    from torchvision.transforms import functional as F

    mean_t = torch.tensor(mean).view(3, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1)

    def apply(img: Image.Image) -> torch.Tensor:
        x = F.pil_to_tensor(pil_steps(img)).float().div_(255.0)
        if x.shape[0] == 1:  # grayscale X-rays stay one channel through augmentation (cheaper), RGB at the end
            x = x.expand(3, -1, -1)
        return (x - mean_t) / std_t

    return apply


def decode_image(data: bytes, size: int) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.draft("L" if img.mode in ("L", "I;16", "I") else "RGB", (size, size))  # JPEG: decode at reduced scale
    if img.mode in ("I;16", "I;16B", "I"):
        img = img.point(lambda v: v * (1 / 256)).convert("L")
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    factor = min(img.size) // size
    if factor >= 2:  # integer box-reduce before the crop: same content, far cheaper resampling
        img = img.reduce(factor)
    return img


def _stable_seed(*parts: Any) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _worker_info() -> tuple[int, int, int, int]:
    return wds.utils.pytorch_worker_info()


class SampleDecoder:
    """Raw tar sample (``__key__``, ``png|jpg``, ``json``) -> decoded, augmented, label-encoded dict."""

    def __init__(
        self,
        card: DatasetCard,
        cfg: DataSection,
        image_size: int,
        transform: Callable,
        *,
        seed: int,
        epoch: int,
        augment_seeded: bool,
    ):
        self.granularities = check_granularities(card, cfg.granularities)
        self.vocab_index = {name: i for i, name in enumerate(card.label_vocabulary)}
        self.cfg = cfg
        self.image_size = image_size
        self.transform = transform
        self.seed, self.epoch = seed, epoch
        self.augment_seeded = augment_seeded
        self.uncertain_value = 1.0 if cfg.uncertain_label == "positive" else 0.0

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        key = raw.get("__key__", "?")
        where = f"sample {key!r} in shard {raw.get('__url__', '?')}"
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in raw), None)
        if image_ext is None:
            raise DataError(f"{where} has no image member (.png/.jpg); members: {sorted(k for k in raw if not k.startswith('__'))}")
        if "json" not in raw:
            raise DataError(f"{where} has no .json record member")
        try:
            record = json.loads(raw["json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{where}: .json member is not valid JSON ({exc})") from None
        texts_all = record.get("texts")
        if not isinstance(texts_all, dict):
            raise DataError(f"{where}: record has no 'texts' mapping (is it SampleRecord.shard_json()?)")
        texts, mask = [], []
        for g in self.granularities:
            text = (texts_all.get(g) or "").strip()
            if not text:
                if self.cfg.missing_text == "error":
                    raise DataError(
                        f"{where} has no {g!r} text; set data.missing_text to 'mask' or 'drop' to train anyway"
                    )
                if self.cfg.missing_text == "drop":
                    return None
            texts.append(text)
            mask.append(bool(text))
        labels = torch.zeros(len(self.vocab_index))
        for name, state in (record.get("labels") or {}).items():
            idx = self.vocab_index.get(name)
            if idx is None:
                raise DataError(f"{where}: label {name!r} is not in the card's label_vocabulary")
            if state == 1:
                labels[idx] = 1.0
            elif state == -1:
                labels[idx] = self.uncertain_value
        try:
            img = decode_image(raw[image_ext], self.image_size)
        except Exception as exc:
            raise DataError(f"{where}: image cannot be decoded ({type(exc).__name__}: {exc})") from None
        if self.augment_seeded:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_stable_seed(self.seed, self.epoch, key))
                image = self.transform(img)
        else:
            image = self.transform(img)
        return {"key": key, "image": image, "texts": texts, "text_mask": mask, "labels": labels}


class Collate:
    def __init__(self, tokenizer: Callable, n_granularities: int):
        self.tokenizer = tokenizer
        self.n = n_granularities

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [[s["texts"][g] for s in samples] for g in range(self.n)]
        return {
            "keys": [s["key"] for s in samples],
            "images": torch.stack([s["image"] for s in samples]),
            "texts": texts,
            "tokens": [self.tokenizer(t) for t in texts],
            "text_mask": torch.tensor([s["text_mask"] for s in samples], dtype=torch.bool),
            "labels": torch.stack([s["labels"] for s in samples]),
        }


def _shuffled_shards(urls: list[str], seed: int, epoch: int, shuffle: bool) -> list[str]:
    urls = list(urls)
    if shuffle:
        random.Random(_stable_seed("shards", seed, epoch)).shuffle(urls)
    return urls


class _SplitAndSkip:
    """Sample-level split (when there are too few shards to split by shard) and resume skipping, per process."""

    def __init__(self, shard_level_split: bool, skip_batches: int, batch_size: int, across_ranks: bool = True):
        self.shard_level_split = shard_level_split
        self.skip_batches = skip_batches
        self.batch_size = batch_size
        self.across_ranks = across_ranks

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        rank, world, worker, workers = _worker_info()
        if not self.across_ranks:
            rank, world = 0, 1
        stride, offset = (1, 0) if self.shard_level_split else (world * workers, rank * workers + worker)
        # DataLoader takes batch b from worker b % workers, so after every worker skips k // workers of its own
        # batches the round-robin restarts in step; the k % workers left over are dropped by iterate_batches.
        to_skip = (self.skip_batches // workers) * self.batch_size
        for i, sample in enumerate(src):
            if i % stride != offset:
                continue
            if to_skip:
                to_skip -= 1
                continue
            yield sample


class _SeededShuffle:
    def __init__(self, bufsize: int, initial: int, seed: int, epoch: int):
        self.bufsize, self.initial, self.seed, self.epoch = bufsize, initial, seed, epoch

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        rank, _, worker, _ = _worker_info()
        rng = random.Random(_stable_seed("samples", self.seed, self.epoch, rank, worker))
        return wds.filters._shuffle(src, self.bufsize, self.initial, rng=rng)


def _drop_none(src: Iterator[dict | None]) -> Iterator[dict]:
    return (s for s in src if s is not None)


def _shard_level(n_shards: int, workers: int) -> bool:
    _, world, _, _ = wds.utils.pytorch_worker_info()
    return n_shards >= world * max(1, workers)


def make_pipeline(
    card: DatasetCard,
    cfg: DataSection,
    *,
    split: str,
    tokenizer: Callable,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    skip_batches: int = 0,
    train: bool = True,
    across_ranks: bool = True,
) -> wds.DataPipeline:
    """One epoch's pipeline of collated batches (endless when ``cfg.resampled``); see the module doc for order.

    ``across_ranks=False``: this process reads the whole split even inside a distributed job (validation on rank 0).
    """
    granularities = check_granularities(card, cfg.granularities)
    urls = card.shards.get(split) or []
    if not urls:
        raise DataError(f"the dataset card of {card.root!r} lists no shards for split {split!r} (has {sorted(card.shards)})")
    workers = cfg.workers
    if cfg.resampled:
        shard_level = True
    elif across_ranks:
        shard_level = _shard_level(len(urls), workers)
    else:
        shard_level = len(urls) >= max(1, workers)
    stages: list[Any] = []
    if train and cfg.resampled:
        rank, _, _, _ = wds.utils.pytorch_worker_info()
        stages.append(
            wds.ResampledShards(
                urls,
                seed=_stable_seed("resample", seed, epoch, rank),
                deterministic=True,
                worker_seed=lambda: _stable_seed("resample-worker", seed, epoch, *_worker_info()),
            )
        )
    else:
        stages.append(wds.SimpleShardList(_shuffled_shards(urls, seed, epoch, train and cfg.shard_shuffle)))
        if shard_level:
            stages += ([wds.split_by_node] if across_ranks else []) + [wds.split_by_worker]
    stages.append(wds.tarfile_to_samples())
    if train and cfg.shuffle_buffer > 1:
        stages.append(_SeededShuffle(cfg.shuffle_buffer, cfg.shuffle_initial, seed, epoch))
    stages.append(_SplitAndSkip(shard_level, skip_batches, batch_size, across_ranks))
    transform = (
        train_transform(image_size, mean, std, cfg.augment) if train else val_transform(image_size, mean, std)
    )
    decoder = SampleDecoder(card, cfg, image_size, transform, seed=seed, epoch=epoch, augment_seeded=train)
    stages += [wds.map(decoder), _drop_none]
    stages.append(wds.batched(batch_size, collation_fn=Collate(tokenizer, len(granularities)), partial=not train))
    return wds.DataPipeline(*stages)


def make_loader(pipeline: wds.DataPipeline, workers: int, skip_batches: int = 0) -> Iterator[dict[str, Any]]:
    """Batches from ``pipeline`` loaded in ``workers`` processes (0 = in this process).

    ``skip_batches`` must be the value given to ``make_pipeline``: the workers skipped ``k // workers`` batches
    each before decoding; the remaining ``k % workers`` are dropped here.
    """
    if workers == 0:
        return iter(pipeline)
    loader = torch.utils.data.DataLoader(
        pipeline, batch_size=None, num_workers=workers, persistent_workers=False, prefetch_factor=4
    )
    it = iter(loader)
    for _ in range(skip_batches % workers):
        next(it, None)
    return it

"""The MGLL loss (arXiv 2511.15943, Eqs. 1-7) and its baselines; the decisions are explained in docs/loss.md.

    loss_fn = MGLLLoss(alpha=(0.5, 1.0, 1.0))
    out = loss_fn(image_features, [text_features_g, ...], logit_scale, targets=[Y_g, ...])
    out["loss"].backward()  # out also holds "sclip", "pointwise", "skl"

Features are raw (L2-normalised here), ``logit_scale`` is already exponentiated (as open_clip models return it),
each ``Y_g`` is an N x N non-negative co-occurrence matrix with a positive diagonal (see ``cooccurrence_targets``).
Everything is computed in float32 whatever the autocast dtype of the features.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mgll.distributed import gather_features, gather_no_grad

LOSS_KINDS = ("clip", "sclip", "pointwise", "sclip+pointwise", "mgll")
COOCCURRENCE_MODES = ("fraction", "jaccard", "any", "exact")
TERMS_BY_KIND = {
    "clip": ("sclip",),
    "sclip": ("sclip",),
    "pointwise": ("pointwise",),
    "sclip+pointwise": ("sclip", "pointwise"),
    "mgll": ("sclip", "pointwise", "skl"),
}
# Text id reserved for a missing/empty text: it matches no other sample, only itself.
EMPTY_TEXT_ID = 0

LossKind = Literal["clip", "sclip", "pointwise", "sclip+pointwise", "mgll"]
CooccurrenceMode = Literal["fraction", "jaccard", "any", "exact"]


# --------------------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------------------

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed, trailing full stops/spaces dropped."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _WHITESPACE.sub(" ", text).strip().rstrip(". ").strip()


def text_ids(texts: Sequence[str | None], device: torch.device | str | None = None) -> torch.Tensor:
    """Stable int64 id per normalised text (blake2b), identical across processes, so that text identity can be
    all-gathered as a tensor. Empty or missing texts get ``EMPTY_TEXT_ID``."""
    ids = []
    for text in texts:
        norm = normalize_text(text) if text else ""
        if not norm:
            ids.append(EMPTY_TEXT_ID)
            continue
        value = int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "little", signed=True)
        ids.append(value if value != EMPTY_TEXT_ID else 1)
    return torch.tensor(ids, dtype=torch.int64, device=device)


def labels_to_multihot(labels: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """N x L bool matrix of *positive* labels.

    Accepts an N x L array/tensor (entries > 0 are positive, so label states 0 and -1 do not count), or a sequence
    with one entry per sample that is either an iterable of label names or a ``{label: state}`` mapping (keys with
    state > 0 are positive)."""
    if isinstance(labels, torch.Tensor) or hasattr(labels, "__array__"):
        matrix = torch.as_tensor(labels, device=device)
        if matrix.ndim != 2:
            raise ValueError(f"labels must be an N x L multi-hot matrix, got shape {tuple(matrix.shape)}")
        return matrix > 0
    sets: list[set] = []
    for index, entry in enumerate(labels):
        if entry is None:
            sets.append(set())
        elif isinstance(entry, Mapping):
            sets.append({name for name, state in entry.items() if state is not None and state > 0})
        elif isinstance(entry, (str, bytes)):
            raise ValueError(f"labels[{index}] is a string ({entry!r}); give an iterable of label names per sample")
        else:
            sets.append(set(entry))
    vocabulary = {name: col for col, name in enumerate(sorted({n for s in sets for n in s}, key=str))}
    matrix = torch.zeros((len(sets), max(len(vocabulary), 1)), dtype=torch.bool, device=device)
    for row, names in enumerate(sets):
        for name in names:
            matrix[row, vocabulary[name]] = True
    return matrix


def _text_identity(ids: torch.Tensor) -> torch.Tensor:
    same = ids[:, None] == ids[None, :]
    present = ids != EMPTY_TEXT_ID
    eye = torch.eye(len(ids), dtype=torch.bool, device=ids.device)
    return (same & present[:, None] & present[None, :]) | eye


def _label_cooccurrence(multihot: torch.Tensor, mode: str, fallback: torch.Tensor) -> torch.Tensor:
    matrix = multihot.float()
    shared = matrix @ matrix.T  # |L_i ∩ L_j|
    counts = matrix.sum(dim=1)
    count_i, count_j = counts[:, None], counts[None, :]
    if mode == "fraction":
        values = shared / count_j.clamp_min(1)
    elif mode == "jaccard":
        values = shared / (count_i + count_j - shared).clamp_min(1)
    elif mode == "any":
        values = (shared > 0).float()
    elif mode == "exact":
        values = ((shared == count_i) & (shared == count_j)).float()
    else:
        raise ValueError(f"co-occurrence mode must be one of {COOCCURRENCE_MODES}, got {mode!r}")
    either_empty = (count_i == 0) | (count_j == 0)
    return torch.where(either_empty, fallback.float(), values)


def cooccurrence_targets(
    labels: Any = None,
    texts: Sequence[str | None] | None = None,
    mode: CooccurrenceMode = "fraction",
    *,
    ids: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Co-occurrence target Y (N x N), Eq. (3).

    With ``labels`` (multi-hot N x L, or one label set / ``{label: state}`` mapping per sample):
      fraction  Y[i,j] = |L_i ∩ L_j| / |L_j|   (the share of image j's labels that image i also has)
      jaccard   Y[i,j] = |L_i ∩ L_j| / |L_i ∪ L_j|
      any       Y[i,j] = 1 if the sets share a label
      exact     Y[i,j] = 1 if the sets are equal
    A sample with no positive label is unlabelled, not "healthy": it matches only samples whose normalised text
    is identical (when ``texts``/``ids`` are given) and always itself.
    With only ``texts`` (or precomputed ``ids`` from ``text_ids``): Y[i,j] = 1 when the normalised texts are
    identical; empty texts match only themselves. The diagonal is always 1, so row sums are positive.
    """
    if mode not in COOCCURRENCE_MODES:
        raise ValueError(f"co-occurrence mode must be one of {COOCCURRENCE_MODES}, got {mode!r}")
    if ids is None and texts is not None:
        ids = text_ids(texts, device=device)
    if labels is None and ids is None:
        raise ValueError("cooccurrence_targets needs labels (multi-hot or label sets) or texts")
    if labels is None:
        targets = _text_identity(ids.to(device) if device is not None else ids).float()
    else:
        multihot = labels_to_multihot(labels, device=device)
        n = multihot.shape[0]
        if ids is not None and len(ids) != n:
            raise ValueError(f"labels describe {n} samples but texts/ids describe {len(ids)}")
        fallback = (
            _text_identity(ids.to(multihot.device))
            if ids is not None
            else torch.eye(n, dtype=torch.bool, device=multihot.device)
        )
        targets = _label_cooccurrence(multihot, mode, fallback)
    targets.fill_diagonal_(1.0)
    return targets.to(dtype)


# --------------------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------------------


def _masked_log_softmax(logits: torch.Tensor, column_valid: torch.Tensor | None) -> torch.Tensor:
    """log-softmax over valid columns; -inf elsewhere. Callers guarantee at least one valid column."""
    if column_valid is None:
        return logits.log_softmax(dim=-1)
    return logits.masked_fill(~column_valid, float("-inf")).log_softmax(dim=-1)


def _soft_cross_entropy_sum(log_probs: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Σ over valid entries of -w * log p. ``where`` (not multiplication) keeps -inf at masked columns from
    producing 0 * inf = NaN, in the forward and in the backward pass."""
    if valid is None:
        return -(weights * log_probs).sum()
    return -torch.where(valid, weights * torch.where(valid, log_probs, 0.0), 0.0).sum()


class MGLLLoss(nn.Module):
    """Multi-granular language learning loss: α1 L_sCLIP + α2 L_P + α3 L_sKL (Eq. 7).

    ``kind`` selects baselines/ablations: ``clip`` (open_clip InfoNCE, identity targets, granularity
    ``clip_granularity`` only), ``sclip``, ``pointwise`` (SigLIP-style), ``sclip+pointwise``, ``mgll``.
    Single-term kinds return that term unweighted (they *are* the respective baselines); the combined kinds
    weight their terms by ``alpha``. Terms a kind does not use are reported as 0.
    """

    def __init__(
        self,
        alpha: Sequence[float] = (0.5, 1.0, 1.0),
        *,
        kind: LossKind = "mgll",
        joint_softmax: bool = False,
        stop_grad_mean: bool = False,
        cooccurrence_mode: CooccurrenceMode = "fraction",
        pointwise_init_scale: float = 10.0,
        pointwise_init_bias: float = -10.0,
        learnable_pointwise: bool = True,
        clip_granularity: int = -1,
        rank: int = 0,
        world_size: int = 1,
        local_loss: bool = False,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__()
        alpha = tuple(float(a) for a in alpha)
        if len(alpha) != 3 or any(not math.isfinite(a) or a < 0 for a in alpha):
            raise ValueError(f"alpha must be three finite non-negative weights (sCLIP, point-wise, sKL), got {alpha}")
        if kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {kind!r}")
        if cooccurrence_mode not in COOCCURRENCE_MODES:
            raise ValueError(f"co-occurrence mode must be one of {COOCCURRENCE_MODES}, got {cooccurrence_mode!r}")
        if pointwise_init_scale <= 0:
            raise ValueError(f"pointwise_init_scale must be > 0, got {pointwise_init_scale}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.alpha = alpha
        self.kind = kind
        self.terms = TERMS_BY_KIND[kind]
        self.joint_softmax = joint_softmax
        self.stop_grad_mean = stop_grad_mean
        self.cooccurrence_mode = cooccurrence_mode
        self.clip_granularity = clip_granularity
        self.rank = rank
        self.world_size = world_size
        self.local_loss = local_loss and world_size > 1
        self.gather_with_grad = gather_with_grad
        if "pointwise" in self.terms:
            log_scale = torch.tensor(math.log(pointwise_init_scale))
            bias = torch.tensor(float(pointwise_init_bias))
            if learnable_pointwise:
                self.pointwise_log_scale = nn.Parameter(log_scale)
                self.pointwise_bias = nn.Parameter(bias)
            else:
                self.register_buffer("pointwise_log_scale", log_scale)
                self.register_buffer("pointwise_bias", bias)

    @property
    def term_weights(self) -> dict[str, float]:
        if len(self.terms) == 1:
            return {self.terms[0]: 1.0}
        return {name: a for name, a in zip(("sclip", "pointwise", "skl"), self.alpha) if name in self.terms}

    # ---- input handling ------------------------------------------------------------------------------------

    def _per_granularity(self, value: Any, count: int, name: str) -> list:
        if value is None:
            return [None] * count
        if isinstance(value, torch.Tensor):
            return [value] * count
        value = list(value)
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} entries but there are {count} granularities")
        return value

    def _global_targets(
        self,
        targets: list,
        labels: list,
        ids: list,
        n_local: int,
        n_global: int,
        device: torch.device,
    ) -> list[torch.Tensor]:
        result = []
        for g, (given, label_matrix, id_vector) in enumerate(zip(targets, labels, ids)):
            if given is not None:
                given = torch.as_tensor(given, device=device, dtype=torch.float32)
                if given.shape != (n_global, n_global):
                    hint = (
                        " (with world_size > 1 pass labels=/text_ids= so targets are built over the global batch,"
                        " or a global-batch target)"
                        if self.world_size > 1 and given.shape == (n_local, n_local)
                        else ""
                    )
                    raise ValueError(
                        f"targets[{g}] has shape {tuple(given.shape)}, expected {(n_global, n_global)}{hint}"
                    )
                bad = (given < 0).any() | ~torch.isfinite(given).all() | (given.diagonal() <= 0).any()
                if bool(bad):
                    raise ValueError(
                        f"targets[{g}] must be finite and non-negative with a positive diagonal (every sample matches "
                        "itself); build it with mgll.loss.cooccurrence_targets"
                    )
                result.append(given)
                continue
            if id_vector is not None:
                id_vector = torch.as_tensor(id_vector, device=device)
                if id_vector.shape != (n_local,):
                    raise ValueError(f"text_ids[{g}] has shape {tuple(id_vector.shape)}, expected ({n_local},)")
                id_vector = gather_no_grad(id_vector.to(torch.int64), self.world_size)
            if label_matrix is not None:
                if self.world_size > 1 and not isinstance(label_matrix, torch.Tensor):
                    raise ValueError(
                        f"labels[{g}]: with world_size > 1 give an N x L multi-hot tensor over the dataset's label "
                        "vocabulary (label sets would get a different column order on each rank)"
                    )
                label_matrix = labels_to_multihot(label_matrix, device=device)
                if label_matrix.shape[0] != n_local:
                    raise ValueError(f"labels[{g}] describes {label_matrix.shape[0]} samples, expected {n_local}")
                label_matrix = gather_no_grad(label_matrix, self.world_size)
                result.append(cooccurrence_targets(label_matrix, mode=self.cooccurrence_mode, ids=id_vector))
            elif id_vector is not None:
                result.append(cooccurrence_targets(ids=id_vector))
            else:
                result.append(torch.eye(n_global, device=device))
        return result

    # ---- forward -------------------------------------------------------------------------------------------

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: Sequence[torch.Tensor] | torch.Tensor,
        logit_scale: torch.Tensor | float,
        targets: Sequence[torch.Tensor | None] | None = None,
        *,
        masks: Sequence[torch.Tensor | None] | None = None,
        labels: Any = None,
        text_ids: Sequence[torch.Tensor | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``masks[g]`` (bool, N): False where sample i has no text for granularity g; such a sample drops out
        of granularity g's terms (rows and columns). ``labels``/``text_ids`` (lists with one entry per granularity,
        None where unused; local rows) are the target ingredients gathered across ranks; ``targets`` (global N x N)
        take precedence over them. A single tensor instead of a list is used for every granularity."""
        if isinstance(text_features, torch.Tensor):
            text_features = [text_features] if text_features.ndim == 2 else list(text_features.unbind(0))
        text_features = list(text_features)
        if image_features.ndim != 2:
            raise ValueError(f"image_features must be N x D, got shape {tuple(image_features.shape)}")
        if not text_features:
            raise ValueError("text_features is empty: give one N x D tensor per granularity")
        for g, t in enumerate(text_features):
            if t.shape != image_features.shape:
                raise ValueError(
                    f"text_features[{g}] has shape {tuple(t.shape)}, image_features {tuple(image_features.shape)}"
                )
        n_granularities = len(text_features)
        targets = self._per_granularity(targets, n_granularities, "targets")
        masks = self._per_granularity(masks, n_granularities, "masks")
        labels = self._per_granularity(labels, n_granularities, "labels")
        ids = self._per_granularity(text_ids, n_granularities, "text_ids")
        if self.kind == "clip":
            if not -n_granularities <= self.clip_granularity < n_granularities:
                raise ValueError(
                    f"clip_granularity={self.clip_granularity} but there are {n_granularities} granularities"
                )
            keep = self.clip_granularity
            text_features, masks = [text_features[keep]], [masks[keep]]
            targets, labels, ids = [None], [None], [None]
            n_granularities = 1

        device = image_features.device
        n_local = image_features.shape[0]
        n_global = n_local * self.world_size
        scale = torch.as_tensor(logit_scale, device=device, dtype=torch.float32)

        image = F.normalize(image_features.float(), dim=-1)
        texts = [F.normalize(t.float(), dim=-1) for t in text_features]
        gather = dict(rank=self.rank, world_size=self.world_size, with_grad=self.gather_with_grad,
                      local_loss=self.local_loss)
        all_image = gather_features(image, **gather)
        all_texts = [gather_features(t, **gather) for t in texts]
        row_image, row_texts = (image, texts) if self.local_loss else (all_image, all_texts)
        row_start = self.rank * n_local if self.local_loss else 0
        rows = slice(row_start, row_start + row_image.shape[0])

        # masks[g]: None when every sample of the global batch has granularity g's text (the fast, unmasked path)
        column_masks: list[torch.Tensor | None] = []
        valid_counts: list[int] = []
        for g, mask in enumerate(masks):
            if mask is not None:
                mask = torch.as_tensor(mask, device=device)
                if mask.shape != (n_local,):
                    raise ValueError(f"masks[{g}] has shape {tuple(mask.shape)}, expected ({n_local},)")
                mask = gather_no_grad(mask.bool(), self.world_size)
                count = int(mask.sum())  # host sync: decides which granularities take part
                if count == n_global:
                    mask = None
            else:
                count = n_global
            column_masks.append(mask)
            valid_counts.append(count)
        present = [g for g in range(n_granularities) if valid_counts[g] > 0]
        global_targets = self._global_targets(targets, labels, ids, n_local, n_global, device)
        batch = _Batch(
            rows=rows,
            # Σ over this rank's rows x share / global count: the mean over ranks of local-loss values is the loss
            row_share=self.world_size if self.local_loss else 1,
            masks=column_masks,
            counts=valid_counts,
            present=present,
            targets=global_targets,
            zero=image.sum() * 0.0,
        )

        cosines = [row_image @ all_texts[g].T for g in range(n_granularities)]
        out: dict[str, torch.Tensor] = {}
        need_log_probs = "skl" in self.terms or ("sclip" in self.terms and not self.joint_softmax)
        log_probs = (
            {g: _masked_log_softmax(scale * cosines[g], column_masks[g]) for g in present} if need_log_probs else {}
        )

        if "sclip" in self.terms:
            out["sclip"] = self._soft_clip(batch, scale, cosines, log_probs, row_texts, all_image)
        if "pointwise" in self.terms:
            out["pointwise"] = self._pointwise(batch, cosines)
        if "skl" in self.terms:
            out["skl"] = self._smooth_kl(batch, log_probs)

        total = batch.zero
        for name, weight in self.term_weights.items():
            total = total + weight * out[name]
        result = {"loss": total}
        for name in ("sclip", "pointwise", "skl"):
            result[name] = out[name] if name in out else torch.zeros((), device=device)
        return result

    def _soft_clip(self, batch: "_Batch", scale, cosines, log_probs, row_texts, all_image) -> torch.Tensor:
        if not batch.present:
            return batch.zero
        tiny = torch.finfo(torch.float32).tiny
        image_to_text, text_to_image = [], []
        for g in batch.present:
            mask = batch.masks[g]
            y = batch.targets[g] if mask is None else batch.targets[g] * (mask[:, None] & mask[None, :])
            # W^g = Y^g / rowsum (over the valid sub-batch); text->image targets: (W^g)^T re-normalised per text
            w = y / y.sum(dim=1, keepdim=True).clamp_min(tiny)
            wt = w.T / w.T.sum(dim=1, keepdim=True).clamp_min(tiny)
            pair_valid = batch.pair_valid(g)
            if self.local_loss:
                logits_t = scale * (row_texts[g] @ all_image.T)
            else:
                logits_t = scale * cosines[g].T
            log_p_t = _masked_log_softmax(logits_t, mask)
            text_to_image.append(_soft_cross_entropy_sum(log_p_t, wt[batch.rows], pair_valid) * batch.scale(g))
            if not self.joint_softmax:
                image_to_text.append(
                    _soft_cross_entropy_sum(log_probs[g], w[batch.rows], pair_valid) * batch.scale(g)
                )
        text_to_image = torch.stack(text_to_image).mean()
        if not self.joint_softmax:
            return (torch.stack(image_to_text).mean() + text_to_image) / 2

        # Eq. (1) as written: one softmax over the texts of every granularity; each image's targets are its
        # co-occurrence rows of all granularities it takes part in, normalised together.
        full_masks = [batch.full_mask(g) for g in batch.present]
        logits = torch.cat([scale * cosines[g] for g in batch.present], dim=1)
        column_valid = torch.cat(full_masks)
        row_valid_any = torch.stack(full_masks).any(dim=0)
        raw = torch.cat(
            [batch.targets[g] * (m[:, None] & m[None, :]) for g, m in zip(batch.present, full_masks)], dim=1
        )
        joint_weights = raw / raw.sum(dim=1, keepdim=True).clamp_min(tiny)
        log_p = _masked_log_softmax(logits, column_valid)
        pair_valid = row_valid_any[batch.rows, None] & column_valid[None, :]
        n_rows = int(row_valid_any.sum())
        image_to_text = _soft_cross_entropy_sum(log_p, joint_weights[batch.rows], pair_valid) * batch.row_share / n_rows
        return (image_to_text + text_to_image) / 2

    def _pointwise(self, batch: "_Batch", cosines) -> torch.Tensor:
        if not batch.present:
            return batch.zero
        pointwise_scale = self.pointwise_log_scale.float().exp()
        bias = self.pointwise_bias.float()
        terms = []
        for g in batch.present:
            logits = pointwise_scale * cosines[g] + bias
            sign = torch.where(batch.targets[g][batch.rows] > 0, 1.0, -1.0)
            # BCEWithLogits(x, y) == -logsigmoid((2y - 1) x): the form open_clip's SigLipLoss uses.
            nll = -F.logsigmoid(sign * logits)
            pair_valid = batch.pair_valid(g)
            if pair_valid is not None:
                nll = torch.where(pair_valid, nll, 0.0)
            terms.append(nll.sum() * batch.scale(g))
        return torch.stack(terms).mean()

    def _smooth_kl(self, batch: "_Batch", log_probs) -> torch.Tensor:
        present = batch.present
        if len(present) < 2:
            return batch.zero  # KL(P || mean of {P}) is 0 with a single distribution
        log_p = torch.stack([log_probs[g] for g in present])  # G' x R x C, -inf at masked columns
        if all(batch.masks[g] is None for g in present):
            log_mean = torch.logsumexp(log_p, dim=0) - math.log(len(present))
            if self.stop_grad_mean:
                log_mean = log_mean.detach()
            kl_rows = (log_p.exp() * (log_p - log_mean)).sum(dim=-1)  # G' x R
            return sum(kl_rows[k].sum() * batch.scale(g) for k, g in enumerate(present))

        row_valid = torch.stack([batch.full_mask(g)[batch.rows] for g in present])  # G' x R
        column_valid = torch.stack([batch.full_mask(g) for g in present])  # G' x C
        valid = row_valid[:, :, None] & column_valid[:, None, :]
        # log M_i = logsumexp over the granularities sample i takes part in - log(their number). Entries that are
        # never used are replaced by 0 so that neither the value nor its gradient can become NaN.
        any_valid = valid.any(dim=0, keepdim=True)
        stacked = torch.where(any_valid, torch.where(valid, log_p, float("-inf")), 0.0)
        n_present = row_valid.sum(dim=0).clamp_min(1).to(log_p.dtype)
        log_mean = torch.logsumexp(stacked, dim=0) - n_present.log()[:, None]
        if self.stop_grad_mean:
            log_mean = log_mean.detach()
        log_p_safe = torch.where(valid, log_p, 0.0)
        log_mean_safe = torch.where(valid, log_mean.unsqueeze(0), 0.0)
        kl_terms = torch.where(valid, log_p_safe.exp() * (log_p_safe - log_mean_safe), 0.0)
        return sum(kl_terms[k].sum() * batch.scale(g) for k, g in enumerate(present))


@dataclass
class _Batch:
    """What every term needs about the (global) batch of one forward call."""

    rows: slice  # this rank's rows in global numbering (all rows unless local_loss)
    row_share: int
    masks: list  # per granularity: bool over the global batch, or None when every sample is present
    counts: list[int]  # per granularity: valid samples in the global batch
    present: list[int]  # granularities with at least one valid sample
    targets: list[torch.Tensor]  # global N x N co-occurrence matrices
    zero: torch.Tensor  # 0 connected to the graph, for terms with nothing to add

    def scale(self, g: int) -> float:
        return self.row_share / self.counts[g]

    def full_mask(self, g: int) -> torch.Tensor:
        mask = self.masks[g]
        if mask is None:
            return torch.ones(self.targets[g].shape[0], dtype=torch.bool, device=self.targets[g].device)
        return mask

    def pair_valid(self, g: int) -> torch.Tensor | None:
        mask = self.masks[g]
        return None if mask is None else mask[self.rows, None] & mask[None, :]


def loss_terms_for_logging(out: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``{"loss/total": ..., "loss/sclip": ...}`` as floats, for MLflow."""
    return {("loss/total" if k == "loss" else f"loss/{k}"): float(v.detach()) for k, v in out.items()}


__all__: Iterable[str] = (
    "MGLLLoss",
    "cooccurrence_targets",
    "labels_to_multihot",
    "loss_terms_for_logging",
    "normalize_text",
    "text_ids",
    "LOSS_KINDS",
    "COOCCURRENCE_MODES",
)

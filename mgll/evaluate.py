"""Evaluate an image-text checkpoint: zero-shot and linear-probe classification, full fine-tuning, and
image<->text retrieval per granularity, on the corpus test split and on public benchmarks (``mgll.benchmarks``).

``evaluate(cfg, checkpoint=None, parent_run_id=None)`` is the whole stage without Prefect; it returns a JSON-able
summary, writes tables and plots under ``out_dir`` and, when MLflow is configured, logs them in one run of the
``mgll-evaluate`` experiment.
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mgll import tracking
from mgll.benchmarks import Benchmark, BenchmarkError, SplitData, read_benchmark
from mgll.checkpoint import CheckpointError  # one error type for every checkpoint problem (re-exported)
from mgll.eval_config import DatasetSpec, EvaluateConfig
from mgll.metrics import (
    best_f1_thresholds,
    bootstrap_ci,
    macro_auc,
    multiclass_auc,
    multiclass_metrics,
    multilabel_metrics,
    retrieval_metrics,
    retrieval_ranks,
)


def _create_bundle(name: str, pretrained: str | None, device: str):
    from mgll.model import create_model

    return create_model(name, pretrained=pretrained, device=device)


def registered_model_checkpoint(uri: str) -> str:
    """``models:/<name>/<version>`` (or ``/latest``, or ``@<alias>``) -> ``runs:/<run>/checkpoints/last.pt`` of
    the training run that produced that model version (the registered MLflow model holds only the encoders; the
    run's checkpoint also rebuilds the tokenizer and transforms)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    body = uri[len("models:/"):].strip("/")
    client = MlflowClient()
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = body.rpartition("/")
            if not name:
                raise CheckpointError(f"{uri!r}: expected models:/<name>/<version> or models:/<name>@<alias>")
            if number == "latest":
                versions = client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise CheckpointError(f"registered model {name!r} has no versions")
                version = max(versions, key=lambda v: int(v.version))
            else:
                version = client.get_model_version(name, number)
    except MlflowException as exc:
        raise CheckpointError(f"cannot resolve registered model {uri!r}: {exc.message}") from None
    if not version.run_id:
        raise CheckpointError(f"registered model {uri!r} has no source run, so no mgll checkpoint to load")
    return f"runs:/{version.run_id}/checkpoints/last.pt"


def load_model(cfg: EvaluateConfig, checkpoint: str | None = None):
    """ModelBundle for ``checkpoint`` (a file, a run folder, ``runs:/...`` or ``models:/...``), else ``cfg.model``."""
    checkpoint = checkpoint or cfg.checkpoint
    if checkpoint:
        from mgll.checkpoint import load_for_inference

        from mgll.checkpoint import resolve_checkpoint

        target = registered_model_checkpoint(checkpoint) if str(checkpoint).startswith("models:/") else checkpoint
        local = resolve_checkpoint(target)  # downloads runs:/ URIs once
        bundle = load_for_inference(local, device=cfg.device)
        bundle.training_tags = checkpoint_tags(local)
    elif cfg.model.name:
        bundle = _create_bundle(cfg.model.name, cfg.model.pretrained, cfg.device)
    else:
        raise CheckpointError("nothing to evaluate: give a checkpoint (--checkpoint / 'checkpoint') or 'model.name'")
    check_model_matches(bundle, cfg)
    bundle.model.eval()
    return bundle


def checkpoint_tags(path) -> dict[str, str]:
    """MLflow tags describing how the checkpoint was trained (loss kind, granularities, step), for the compare view."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # already loaded once by load_for_inference; tags are a convenience
        return {}
    train_cfg = state.get("config") or {}
    loss, data = train_cfg.get("loss") or {}, train_cfg.get("data") or {}
    tags = {"mgll.train_step": str(state.get("step", ""))}
    if loss.get("kind"):
        tags["mgll.loss_kind"] = str(loss["kind"])
    if loss.get("alpha"):
        tags["mgll.alpha"] = ",".join(str(a) for a in loss["alpha"])
    if data.get("granularities"):
        tags["mgll.granularities"] = ",".join(data["granularities"])
    return tags


def check_model_matches(bundle, cfg: EvaluateConfig) -> None:
    if cfg.model.name and bundle.name != cfg.model.name:
        raise CheckpointError(
            f"checkpoint holds a {bundle.name!r} model but the evaluate config expects model.name={cfg.model.name!r}"
        )


# ------------------------------------------------------------------------------------------------- features
def open_image(ref) -> Image.Image:
    image = Image.open(io.BytesIO(ref) if isinstance(ref, (bytes, bytearray)) else ref)
    if image.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit grey: scale to 8 bit instead of clipping
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        image = Image.fromarray(((arr - lo) / max(hi - lo, 1.0) * 255).astype(np.uint8))
    return image.convert("RGB")


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, images: list, transform, targets: np.ndarray | None = None):
        self.images, self.transform, self.targets = images, transform, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        try:
            pixels, ok = self.transform(open_image(self.images[i])), True
        except (OSError, ValueError, SyntaxError):
            pixels, ok = None, False
        target = self.targets[i] if self.targets is not None else 0
        return pixels, ok, target


def _collate(batch):
    ok = torch.tensor([b[1] for b in batch])
    shape = next((b[0].shape for b in batch if b[1]), None)
    pixels = torch.stack([b[0] if b[1] else torch.zeros(shape) for b in batch]) if shape is not None else None
    targets = torch.as_tensor(np.asarray([b[2] for b in batch]))
    return pixels, ok, targets


@torch.no_grad()
def encode_images(bundle, images: list, batch_size: int, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised image embeddings and a mask of images that could be decoded (others get zero rows)."""
    loader = torch.utils.data.DataLoader(_ImageDataset(images, bundle.preprocess_val), batch_size=batch_size,
                                         collate_fn=_collate)
    feats, oks = [], []
    dim = None
    for pixels, ok, _ in loader:
        if pixels is None:
            feats.append(None)
        else:
            f = bundle.model.encode_image(pixels.to(device), normalize=True).float().cpu().numpy()
            dim = f.shape[1]
            feats.append(f)
        oks.append(ok.numpy())
    if dim is None:
        raise BenchmarkError("none of the images could be decoded")
    out = [f if f is not None else np.zeros((len(o), dim), np.float32) for f, o in zip(feats, oks)]
    return np.concatenate(out), np.concatenate(oks).astype(bool)


@torch.no_grad()
def encode_texts(bundle, texts: list[str], batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = bundle.tokenizer(texts[i : i + batch_size]).to(device)
        out.append(bundle.model.encode_text(tokens, normalize=True).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# ------------------------------------------------------------------------------------------------- zero-shot
def label_phrases(labels: list[str], ontology: str | None) -> tuple[dict[str, list[str]], str]:
    """Label -> phrases (name + synonyms from the ontology). Returns the phrases and where they came from."""
    phrases = {lab: [lab.replace("_", " ").lower()] for lab in labels}
    if not ontology:
        return phrases, "label names"
    try:
        from dataset_builders.text.ontology import load_ontology

        onto = load_ontology(ontology)
    except Exception as exc:  # a missing / unreadable ontology falls back to label names, and says so
        return phrases, f"label names (ontology {ontology!r} unavailable: {type(exc).__name__}: {exc})"
    known = {name.lower().replace("_", " "): name for name in onto.labels}
    for lab in labels:
        entry = known.get(lab.lower().replace("_", " "))
        if entry is None:
            continue
        # wildcard patterns ("atelecta*") are matcher syntax, not phrases a text encoder has seen
        for phrase in [s for s in onto.synonyms(entry) if "*" not in s][:2]:
            if phrase.lower() not in phrases[lab]:
                phrases[lab].append(phrase.lower())
    return phrases, f"ontology {ontology}"


def prompt_embeddings(bundle, labels, phrases, templates, device="cpu") -> np.ndarray:
    """One embedding per label: the re-normalised mean over (template x phrase) prompts (prompt ensembling)."""
    rows = []
    for lab in labels:
        prompts = [t.format(p) for t in templates for p in phrases[lab]]
        emb = encode_texts(bundle, prompts, device=device).mean(axis=0)
        rows.append(emb / max(np.linalg.norm(emb), 1e-12))
    return np.stack(rows)


def zero_shot_scores(bundle, bench: Benchmark, spec: DatasetSpec, cfg: EvaluateConfig, features: dict) -> dict:
    phrases, source = label_phrases(bench.labels, bench.ontology)
    pos = prompt_embeddings(bundle, bench.labels, phrases, spec.templates, cfg.device)
    scale = float(bundle.model.logit_scale.exp().item()) if hasattr(bundle.model, "logit_scale") else 100.0
    out = {"prompt_source": source}
    neg = None
    if cfg.zero_shot.mode == "contrast" and bench.task == "multilabel":
        neg_phrases = {lab: [cfg.zero_shot.negative_template.format(p) for p in ps] for lab, ps in phrases.items()}
        neg = prompt_embeddings(bundle, bench.labels, neg_phrases, spec.templates, cfg.device)
    for split in ("val", "test"):
        f = features.get(split)
        if f is None or len(f) == 0:
            continue
        sim = f @ pos.T
        if bench.task == "multiclass":
            logits = scale * sim
            out[split] = np.exp(logits - logits.max(1, keepdims=True))
            out[split] /= out[split].sum(1, keepdims=True)
        elif neg is not None:
            pair = scale * np.stack([sim, f @ neg.T], axis=-1)
            out[split] = np.exp(pair[..., 0] - np.logaddexp(pair[..., 0], pair[..., 1]))
        else:
            out[split] = sim
    return out


# ---------------------------------------------------------------------------------------------- linear probe
def linear_probe_scores(features: dict, targets: dict, task: str, c_grid: list[float], max_iter: int, seed: int,
                        n_outputs: int, label_names: list[str] | None = None):
    """Logistic regression on frozen features (one per label, or one multinomial for multi-class); C picked by val
    macro AUC (one-vs-rest for multi-class)."""
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = features["train"], targets["train"]
    label_names = label_names or [str(j) for j in range(n_outputs)]
    if len(x_train) == 0:
        raise BenchmarkError("the linear probe needs a non-empty train split")

    def fit(c):
        if task == "multiclass":
            if len(set(y_train.tolist())) < 2:
                raise BenchmarkError("the linear probe needs at least two classes in the train split")
            return LogisticRegression(C=c, max_iter=max_iter, random_state=seed).fit(x_train, y_train)
        models = []
        for j in range(y_train.shape[1]):
            mask = ~np.isnan(y_train[:, j])
            yj = y_train[mask, j].astype(int)
            if yj.size == 0 or yj.min() == yj.max():  # one class in train: predict its prevalence (reported)
                models.append(float(yj.mean()) if yj.size else 0.0)
            else:
                models.append(LogisticRegression(C=c, max_iter=max_iter, random_state=seed).fit(x_train[mask], yj))
        return models

    def predict(model, x):
        if task == "multiclass":
            probs = np.zeros((len(x), n_outputs))
            probs[:, model.classes_] = model.predict_proba(x)
            return probs
        return np.stack([m.predict_proba(x)[:, 1] if not isinstance(m, float) else np.full(len(x), m) for m in model],
                        axis=1)

    x_val, y_val = features.get("val"), targets.get("val")
    chosen, selection, val_scores = c_grid[len(c_grid) // 2], "middle of c_grid (val split empty)", {}
    if x_val is not None and len(x_val):
        for c in c_grid:
            model = fit(c)
            s = predict(model, x_val)
            val_scores[c] = multiclass_auc(y_val, s) if task == "multiclass" else macro_auc(y_val, s)
        usable = {c: v for c, v in val_scores.items() if not math.isnan(v)}
        if usable:
            chosen = max(usable, key=lambda c: (usable[c], -abs(math.log10(c))))
            selection = "best val macro AUC"
        else:
            selection = "middle of c_grid (val AUC undefined for every C)"
    model = fit(chosen)
    out = {"C": chosen, "C_selection": selection, "val_auc_by_C": {str(k): v for k, v in val_scores.items()}}
    if task != "multiclass":
        out["constant_labels"] = [label_names[j] for j, m in enumerate(model) if isinstance(m, float)]
    for split in ("val", "test"):
        if features.get(split) is not None and len(features[split]):
            out[split] = predict(model, features[split])
    return out


# ------------------------------------------------------------------------------------------------- fine-tune
def fine_tune_scores(bundle, bench: Benchmark, splits: dict[str, SplitData], cfg: EvaluateConfig) -> dict:
    """The paper's full fine-tune: pooled visual feature -> Linear, all weights trained, AdamW with linear warmup
    then cosine decay; BCE (NaN targets masked) for multi-label, CE for multi-class; the epoch with the best val
    macro AUC is kept."""
    ft = cfg.fine_tune
    torch.manual_seed(cfg.seed)
    visual = copy.deepcopy(bundle.model.visual).to(cfg.device).eval()
    n_out = len(bench.labels)
    with torch.no_grad():
        probe = bundle.preprocess_val(open_image(splits["train"].images[0])).unsqueeze(0).to(cfg.device)
        dim = visual(probe).shape[-1]
    head = torch.nn.Linear(dim, n_out).to(cfg.device)
    visual.train()
    params = list(visual.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=ft.lr, weight_decay=ft.weight_decay)
    train_ds = _ImageDataset(splits["train"].images, bundle.preprocess_train or bundle.preprocess_val,
                             splits["train"].targets)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=ft.batch_size, shuffle=True, collate_fn=_collate,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    total = ft.max_steps or ft.epochs * len(loader)
    warmup = max(1, int(ft.warmup_fraction * total))
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup),
         torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))],
        milestones=[warmup],
    )

    @torch.no_grad()
    def predict(split: SplitData) -> np.ndarray:
        visual.eval()
        dl = torch.utils.data.DataLoader(_ImageDataset(split.images, bundle.preprocess_val), batch_size=cfg.batch_size,
                                         collate_fn=_collate)
        outs = []
        for pixels, _ok, _ in dl:
            logits = head(visual(pixels.to(cfg.device)))
            outs.append((torch.softmax(logits, 1) if bench.task == "multiclass" else torch.sigmoid(logits)).cpu())
        visual.train()
        return torch.cat(outs).numpy()

    step, best, best_state, history = 0, -math.inf, None, []
    has_val = len(splits.get("val", [])) > 0
    for epoch in range(ft.epochs):
        for pixels, ok, target in loader:
            if step >= total or pixels is None:
                break
            pixels, target = pixels[ok].to(cfg.device), target[ok].to(cfg.device)
            logits = head(visual(pixels))
            if bench.task == "multiclass":
                loss = torch.nn.functional.cross_entropy(logits, target.long())
            else:
                mask = ~torch.isnan(target)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[mask], target[mask].float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            history.append(float(loss.item()))
        if has_val:
            s = predict(splits["val"])
            yv = splits["val"].targets
            score = multiclass_auc(yv, s) if bench.task == "multiclass" else macro_auc(yv, s)
            score = -math.inf if math.isnan(score) else score
        else:
            score = epoch  # no val split: keep the last epoch
        if score >= best or best_state is None:
            best = score
            best_state = (copy.deepcopy(visual.state_dict()), copy.deepcopy(head.state_dict()), epoch)
        if step >= total:
            break
    visual.load_state_dict(best_state[0])
    head.load_state_dict(best_state[1])
    out = {"steps": step, "best_epoch": best_state[2], "final_loss": history[-1] if history else math.nan,
           "first_loss": history[0] if history else math.nan}
    for split in ("val", "test"):
        if len(splits.get(split, [])):
            out[split] = predict(splits[split])
    return out


# ------------------------------------------------------------------------------------------------- retrieval
def retrieval_eval(bundle, split: SplitData, image_features: np.ndarray, granularities: list[str],
                   cfg: EvaluateConfig) -> dict:
    """Per granularity: image->text and text->image R@k and median rank. Identical texts are one candidate: an
    image's hit is its own text; a text's hits are all images carrying it."""
    out: dict[str, Any] = {}
    for g in granularities:
        texts = split.texts.get(g) or []
        idx = [i for i, t in enumerate(texts) if t and t.strip()]
        if cfg.retrieval.max_samples:
            idx = idx[: cfg.retrieval.max_samples]
        if len(idx) < 2:
            out[g] = {"undefined": f"fewer than 2 test samples have a {g} text"}
            continue
        unique = sorted({texts[i] for i in idx})
        position = {t: k for k, t in enumerate(unique)}
        text_features = encode_texts(bundle, unique, device=cfg.device)
        img = image_features[idx]
        sim = img @ text_features.T
        own = [position[texts[i]] for i in idx]
        i2t = retrieval_metrics(sim, [{k} for k in own], cfg.retrieval.ks)
        i2t_ranks = retrieval_ranks(sim, [{k} for k in own])
        images_of = [set() for _ in unique]
        for row, k in enumerate(own):
            images_of[k].add(row)
        t2i = retrieval_metrics(sim.T, images_of, cfg.retrieval.ks)
        out[g] = {"i2t": i2t, "t2i": t2i, "unique_texts": len(unique), "_sim": sim, "_own": own, "_idx": idx, "_ranks": i2t_ranks,
                  "_texts": unique}
    return out


# --------------------------------------------------------------------------------------------------- driver
def _headline_ci(task: str, y: np.ndarray, s: np.ndarray, cfg: EvaluateConfig) -> tuple[float, float]:
    stat = multiclass_auc if task == "multiclass" else macro_auc
    low, high, _ = bootstrap_ci(stat, y, s, cfg.metrics.bootstrap, cfg.metrics.confidence, cfg.seed)
    return low, high


def _score_task(bench: Benchmark, task_name: str, scores: dict, targets: dict, cfg: EvaluateConfig, out_dir: Path):
    """Metrics (+ CI, per-label table, curves) of one task's val/test scores."""
    from mgll import eval_plots

    y_test, s_test = targets["test"], scores["test"]
    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if bench.task == "multiclass":
        summary, info = multiclass_metrics(y_test, s_test, bench.labels)
        extra.update(info)
        metrics.update(summary)
        if cfg.plots:
            eval_plots.confusion_matrix_plot(np.asarray(info["confusion"]), bench.labels,
                                             out_dir / f"confusion_{task_name}.png", f"{bench.name} {task_name}")
        per_label = [{"label": lab, "auc_ovr": info["auc_per_class"].get(lab, math.nan),
                      "undefined_reason": (info.get("undefined") or {}).get(lab, "")} for lab in bench.labels]
    else:
        thresholds = None
        if "val" in scores and len(targets.get("val", [])):
            thresholds = best_f1_thresholds(targets["val"], scores["val"])
        summary, results = multilabel_metrics(y_test, s_test, bench.labels, thresholds)
        metrics.update(summary)
        per_label = [asdict(r) for r in results]
        undefined = {r.label: r.reason for r in results if not r.defined}
        if undefined:
            extra["undefined"] = undefined
        if cfg.plots:
            eval_plots.roc_pr_curves(y_test, s_test, bench.labels, out_dir, f"{task_name}", f"{bench.name} {task_name}")
    low, high = _headline_ci(bench.task, y_test, s_test, cfg)
    metrics["auc_macro_ci_low"], metrics["auc_macro_ci_high"] = low, high
    eval_plots.write_table(per_label, out_dir / f"per_label_{task_name}")
    return metrics, extra


def evaluate_dataset(bundle, spec: DatasetSpec, cfg: EvaluateConfig, out_dir: Path) -> dict:
    from mgll import eval_plots

    t0 = time.perf_counter()
    bench = read_benchmark(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"summary": bench.summary(), "metrics": {}, "details": {}}
    needs_train = cfg.linear_probe.enabled or cfg.fine_tune.enabled
    splits: dict[str, SplitData] = {}
    features: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        if split == "train" and not needs_train:
            continue
        data = bench.split(split)
        if len(data) == 0:
            continue
        f, ok = encode_images(bundle, data.images, cfg.batch_size, cfg.device)
        if not ok.all():
            bench.report.skipped["image unreadable"] += int((~ok).sum())
            keep = np.flatnonzero(ok)
            data = SplitData([data.images[i] for i in keep], data.targets[keep],
                             {g: [t[i] for i in keep] for g, t in data.texts.items()})
            f = f[keep]
        splits[split], features[split] = data, f
    if len(splits.get("test", [])) == 0:
        raise BenchmarkError(f"dataset {bench.name}: no test image could be decoded")
    targets = {k: v.targets for k, v in splits.items()}
    result["summary"]["read"] = bench.report.as_dict()

    tasks: dict[str, dict] = {}
    if cfg.zero_shot.enabled:
        tasks["zero_shot"] = zero_shot_scores(bundle, bench, spec, cfg, features)
    if cfg.linear_probe.enabled:
        if len(splits.get("train", [])) == 0:
            result["details"]["linear_probe"] = {"skipped": "train split is empty"}
        else:
            tasks["linear_probe"] = linear_probe_scores(features, targets, bench.task, cfg.linear_probe.c_grid,
                                                        cfg.linear_probe.max_iter, cfg.seed, len(bench.labels),
                                                        bench.labels)
    if cfg.fine_tune.enabled:
        if len(splits.get("train", [])) == 0:
            result["details"]["fine_tune"] = {"skipped": "train split is empty"}
        else:
            tasks["fine_tune"] = fine_tune_scores(bundle, bench, splits, cfg)
    for name, scores in tasks.items():
        metrics, extra = _score_task(bench, name, scores, targets, cfg, out_dir)
        result["metrics"].update({f"{name}/{k}": v for k, v in metrics.items()})
        info = {k: v for k, v in scores.items() if k not in ("val", "test")}
        result["details"][name] = {**info, **extra}

    if cfg.retrieval.enabled and bench.granularities:
        grans = cfg.retrieval.granularities or bench.granularities
        unknown = [g for g in grans if g not in bench.granularities]
        if unknown:
            raise BenchmarkError(f"retrieval granularities {unknown} are not in the corpus card {bench.granularities}")
        retrieval = retrieval_eval(bundle, splits["test"], features["test"], grans, cfg)
        i2t_at5, t2i_at5 = [], []
        k5 = 5 if 5 in cfg.retrieval.ks else cfg.retrieval.ks[0]
        n_test = len(splits["test"])
        hits = np.full((n_test, len(grans)), np.nan)  # image x granularity: 1 when its own text is in the top k
        for g, r in retrieval.items():
            if "undefined" in r:
                result["details"].setdefault("retrieval", {})[g] = r["undefined"]
                continue
            for direction in ("i2t", "t2i"):
                for k, v in r[direction].items():
                    result["metrics"][f"retrieval/{g}/{direction}_{k}"] = v
            hits[r["_idx"], grans.index(g)] = (r["_ranks"] <= k5).astype(float)
            i2t_at5.append(r["i2t"][f"r{k5}"])
            t2i_at5.append(r["t2i"][f"r{k5}"])
            result["metrics"][f"retrieval/{g}/unique_texts"] = float(r["unique_texts"])
            if cfg.plots and cfg.retrieval.examples:
                images = [splits["test"].images[i] for i in r["_idx"]]
                eval_plots.retrieval_grid(images, r["_sim"], r["_texts"], r["_own"], cfg.retrieval.examples,
                                          cfg.retrieval.top_k_shown, out_dir / f"retrieval_examples_{g}.png", g)
        if i2t_at5:
            result["metrics"][f"retrieval/i2t_r{k5}_mean"] = float(np.mean(i2t_at5))
            result["metrics"][f"retrieval/t2i_r{k5}_mean"] = float(np.mean(t2i_at5))
            covered = ~np.all(np.isnan(hits), axis=0)

            def mean_recall(h, _unused):
                with np.errstate(all="ignore"):
                    per_g = np.nanmean(h[:, covered], axis=0)
                return math.nan if np.isnan(per_g).any() else float(per_g.mean())

            low, high, _ = bootstrap_ci(mean_recall, hits, hits, cfg.metrics.bootstrap, cfg.metrics.confidence,
                                        cfg.seed)
            result["metrics"][f"retrieval/i2t_r{k5}_mean_ci_low"] = low
            result["metrics"][f"retrieval/i2t_r{k5}_mean_ci_high"] = high
    if cfg.plots:
        eval_plots.embedding_projection(features["test"], targets["test"], bench.labels, bench.task,
                                        out_dir / "embeddings_pca.png", bench.name)
    result["seconds"] = time.perf_counter() - t0
    (out_dir / "summary.json").write_text(json.dumps(_jsonable(result), indent=2, sort_keys=True))
    return result


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return None
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _default_out_dir(cfg: EvaluateConfig, run_name: str) -> Path:
    from mgll.settings import state_dir

    return Path(cfg.out_dir) if cfg.out_dir else state_dir() / "eval" / run_name


def evaluate(cfg: EvaluateConfig, checkpoint: str | None = None, parent_run_id: str | None = None,
             bundle=None) -> dict:
    """Run every configured task on every dataset; returns {"metrics", "datasets", "run_id", "out_dir"}.

    ``bundle`` evaluates an in-memory ModelBundle instead of loading one (used by the ablation and tests).
    Metric names are ``<dataset>/<task>/<metric>`` (e.g. ``corpus/linear_probe/auc_macro``).
    """
    from mgll.config import flatten_for_logging

    torch.manual_seed(cfg.seed)
    checkpoint = checkpoint or cfg.checkpoint
    if bundle is None:
        bundle = load_model(cfg, checkpoint)
    else:
        check_model_matches(bundle, cfg)
        bundle.model.eval()
    run_name = cfg.run_name or f"eval-{bundle.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = _default_out_dir(cfg, run_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    tags = {"mgll.model": bundle.name, "mgll.checkpoint": str(checkpoint or "none"),
            **getattr(bundle, "training_tags", {}),
            "mgll.datasets": ",".join(d.display_name for d in cfg.datasets), **cfg.tags}
    all_metrics: dict[str, float] = {}
    datasets: dict[str, Any] = {}
    with tracking.tracking_run("evaluate", run_name, flatten_for_logging(cfg), tags, parent_run_id) as run:
        for spec in cfg.datasets:
            res = evaluate_dataset(bundle, spec, cfg, out_dir / spec.display_name)
            datasets[spec.display_name] = _jsonable(res)
            prefixed = {f"{spec.display_name}/{k}": v for k, v in res["metrics"].items()}
            all_metrics.update(prefixed)
            tracking.log_metrics({k: v for k, v in prefixed.items() if not math.isnan(v)})
            tracking.log_json(datasets[spec.display_name]["summary"], "read_report.json", spec.display_name)
        from mgll import eval_plots

        eval_plots.write_table([{"metric": k, "value": v} for k, v in sorted(all_metrics.items())],
                               out_dir / "metrics")
        tracking.log_artifact(out_dir)
        run_id = run.info.run_id if run is not None else None
    return {"metrics": _jsonable(all_metrics), "datasets": datasets, "run_id": run_id, "out_dir": str(out_dir),
            "model": bundle.name, "checkpoint": checkpoint}

"""Numerical tests of mgll.loss against open_clip 3.3's losses and float64 reference formulas."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from mgll.loss import (
    MGLLLoss,
    cooccurrence_targets,
    labels_to_multihot,
    loss_terms_for_logging,
    text_ids,
)

N, D = 12, 16


def _features(n=N, d=D, granularities=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(n, d, generator=generator)
    texts = [torch.randn(n, d, generator=generator) for _ in range(granularities)]
    return image, texts


def _example_labels():
    # hand-made label sets: repeated sets, overlaps, and two unlabelled samples
    return [{"a"}, {"a", "b"}, set(), {"b"}, {"a"}, {"c"}, {"a", "c"}, set(), {"b", "c"}, {"a", "b", "c"}, {"c"}, {"b"}]


def _reference_terms(image, texts, scale, targets, pointwise_scale=10.0, pointwise_bias=-10.0):
    """Eqs. (1)-(6) written out directly in float64, one granularity at a time."""
    v = F.normalize(image.double(), dim=-1)
    sclip, pointwise, log_probs = [], [], []
    for t, y in zip(texts, targets):
        t = F.normalize(t.double(), dim=-1)
        y = y.double()
        z = scale * v @ t.T
        w = y / y.sum(1, keepdim=True)
        wt = w.T / w.T.sum(1, keepdim=True)
        i2t = -(w * z.log_softmax(1)).sum(1).mean()
        t2i = -(wt * z.T.log_softmax(1)).sum(1).mean()
        sclip.append((i2t + t2i) / 2)
        x = pointwise_scale * (v @ t.T) + pointwise_bias
        pointwise.append(F.binary_cross_entropy_with_logits(x, (y > 0).double(), reduction="sum") / len(v))
        log_probs.append(z.log_softmax(1))
    probs = torch.stack(log_probs).exp()
    mean = probs.mean(0)
    skl = sum(F.kl_div(mean.log(), p, reduction="batchmean") for p in probs)
    return torch.stack(sclip).mean(), torch.stack(pointwise).mean(), skl


# ---------------------------------------------------------------------------------------------------- parity


def test_single_granularity_identity_targets_equal_open_clip_cliploss():
    image, (text,) = _features(granularities=1)
    image.requires_grad_(True)
    text.requires_grad_(True)
    scale = torch.tensor(1 / 0.07)
    ours = MGLLLoss(alpha=(1.0, 0.0, 0.0))(image, [text], scale, targets=[torch.eye(N)])
    ours["loss"].backward()
    ours_grads = image.grad.clone(), text.grad.clone()

    image.grad = text.grad = None
    reference = open_clip.loss.ClipLoss()(F.normalize(image, dim=-1), F.normalize(text, dim=-1), scale)
    reference.backward()
    assert torch.allclose(ours["loss"], reference, atol=1e-6, rtol=0)
    assert torch.allclose(ours["sclip"], reference, atol=1e-6, rtol=0)
    assert torch.allclose(ours_grads[0], image.grad, atol=1e-6)
    assert torch.allclose(ours_grads[1], text.grad, atol=1e-6)


def test_clip_kind_uses_one_granularity_with_identity_targets():
    image, texts = _features()
    scale = torch.tensor(20.0)
    targets = [cooccurrence_targets(_example_labels())] * 3
    out = MGLLLoss(kind="clip", clip_granularity=1)(image, texts, scale, targets=targets)
    reference = open_clip.loss.ClipLoss()(F.normalize(image, dim=-1), F.normalize(texts[1], dim=-1), scale)
    assert torch.allclose(out["loss"], reference, atol=1e-6, rtol=0)
    assert out["pointwise"] == 0 and out["skl"] == 0


@pytest.mark.parametrize("kind", ["pointwise", "mgll"])
def test_pointwise_term_with_identity_targets_equals_open_clip_siglip(kind):
    image, texts = _features()
    loss_fn = MGLLLoss(kind=kind, pointwise_init_scale=7.0, pointwise_init_bias=-3.0)
    out = loss_fn(image, texts, torch.tensor(10.0), targets=[torch.eye(N)] * 3)
    siglip = open_clip.loss.SigLipLoss()
    expected = torch.stack([
        siglip(F.normalize(image, dim=-1), F.normalize(t, dim=-1), torch.tensor(7.0), torch.tensor(-3.0))
        for t in texts
    ]).mean()
    assert torch.allclose(out["pointwise"], expected, atol=1e-5, rtol=1e-6)


def test_pointwise_parameters_are_siglip_initialised_and_learn():
    loss_fn = MGLLLoss()
    assert math.isclose(loss_fn.pointwise_log_scale.item(), math.log(10.0), rel_tol=1e-6)
    assert loss_fn.pointwise_bias.item() == -10.0
    image, texts = _features()
    loss_fn(image, texts, 14.0)["loss"].backward()
    assert loss_fn.pointwise_log_scale.grad is not None and loss_fn.pointwise_bias.grad.abs() > 0
    assert not any(True for _ in MGLLLoss(kind="sclip").parameters())


def test_terms_match_float64_reference_with_soft_targets():
    image, texts = _features()
    labels = _example_labels()
    targets = [
        cooccurrence_targets(texts=["chest x-ray"] * 6 + ["fundus photograph"] * 6),
        cooccurrence_targets(labels, mode="fraction"),
        cooccurrence_targets(labels, mode="jaccard"),
    ]
    out = MGLLLoss(alpha=(0.5, 1.0, 1.0))(image, texts, 30.0, targets=targets)
    sclip, pointwise, skl = _reference_terms(image, texts, 30.0, targets)
    assert torch.allclose(out["sclip"].double(), sclip, atol=1e-5)
    assert torch.allclose(out["pointwise"].double(), pointwise, atol=1e-4)
    assert torch.allclose(out["skl"].double(), skl, atol=1e-5)
    assert torch.allclose(out["loss"].double(), 0.5 * sclip + pointwise + skl, atol=1e-4)


def test_joint_softmax_matches_eq1_reference_and_reduces_to_default_for_one_granularity():
    image, texts = _features()
    targets = [cooccurrence_targets(_example_labels())] * 3
    single = [MGLLLoss(kind="sclip", joint_softmax=j)(image, texts[:1], 12.0, targets=targets[:1]) for j in (0, 1)]
    assert torch.allclose(single[0]["loss"], single[1]["loss"], atol=1e-6)

    out = MGLLLoss(kind="sclip", joint_softmax=True)(image, texts, 12.0, targets=targets)
    v = F.normalize(image.double(), dim=-1)
    ts = [F.normalize(t.double(), dim=-1) for t in texts]
    z = torch.cat([12.0 * v @ t.T for t in ts], dim=1)
    y = torch.cat([t.double() for t in targets], dim=1)
    i2t = -((y / y.sum(1, keepdim=True)) * z.log_softmax(1)).sum(1).mean()
    t2i = []
    for t, target in zip(ts, targets):
        w = target.double() / target.double().sum(1, keepdim=True)
        wt = w.T / w.T.sum(1, keepdim=True)
        t2i.append(-(wt * (12.0 * t @ v.T).log_softmax(1)).sum(1).mean())
    expected = (i2t + torch.stack(t2i).mean()) / 2
    assert torch.allclose(out["loss"].double(), expected, atol=1e-5)
    assert not torch.allclose(out["loss"], MGLLLoss(kind="sclip")(image, texts, 12.0, targets=targets)["loss"])


# ---------------------------------------------------------------------------------------------------- smooth KL


def test_smooth_kl_is_zero_for_identical_granularities_and_positive_otherwise():
    image, texts = _features()
    same = [texts[0]] * 3
    assert MGLLLoss()(image, same, 50.0)["skl"].abs() < 1e-6
    assert MGLLLoss()(image, texts, 50.0)["skl"] > 1e-3


def test_stop_grad_mean_changes_gradients_not_value():
    image, texts = _features()
    texts = [t.clone().requires_grad_(True) for t in texts]
    values, grads = [], []
    for stop in (False, True):
        out = MGLLLoss(kind="mgll", alpha=(0, 0, 1), stop_grad_mean=stop)(image, texts, 20.0)
        texts_grad = torch.autograd.grad(out["loss"], texts)
        values.append(out["skl"].detach())
        grads.append(torch.cat(texts_grad))
    assert torch.allclose(values[0], values[1])
    assert not torch.allclose(grads[0], grads[1])


# ---------------------------------------------------------------------------------------------------- robustness


def _assert_finite_with_grads(loss_fn, image, texts, scale, **kwargs):
    image = image.clone().requires_grad_(True)
    texts = [t.clone().requires_grad_(True) for t in texts]
    out = loss_fn(image, texts, scale, **kwargs)
    for name, value in out.items():
        assert torch.isfinite(value).all(), f"{name} = {value}"
    out["loss"].backward()
    for tensor in [image, *texts, *loss_fn.parameters()]:
        assert tensor.grad is None or torch.isfinite(tensor.grad).all()
    return out


@pytest.mark.parametrize("joint_softmax", [False, True])
def test_extreme_logits_are_finite(joint_softmax):
    # cosines of exactly +1 / -1 with scale 1e4: logits of ±1e4 (the official code's log(logits) gives NaN here)
    image = torch.zeros(6, 4)
    image[:, 0] = 1.0
    texts = [image.clone(), -image.clone(), torch.eye(6, 4)]
    targets = [cooccurrence_targets(_example_labels()[:6])] * 3
    masks = [None, torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool), None]
    loss_fn = MGLLLoss(joint_softmax=joint_softmax)
    out = _assert_finite_with_grads(loss_fn, image, texts, 1e4, targets=targets, masks=masks)
    assert out["skl"] > 0


def test_all_identical_texts_and_batch_of_one_are_finite():
    image, texts = _features()
    identical = cooccurrence_targets(texts=["No finding."] * N)
    assert torch.equal(identical, torch.ones(N, N))
    _assert_finite_with_grads(MGLLLoss(), image, [texts[0][:1].expand(N, D).contiguous()] * 3, 14.0,
                              targets=[identical] * 3)
    one = _assert_finite_with_grads(MGLLLoss(), image[:1], [t[:1] for t in texts], 14.0)
    assert one["sclip"].abs() < 1e-6  # a single pair is its own only candidate


def test_fully_masked_granularity_contributes_nothing():
    image, texts = _features()
    targets = [cooccurrence_targets(_example_labels())] * 3
    off = torch.zeros(N, dtype=torch.bool)
    masked = _assert_finite_with_grads(MGLLLoss(), image, texts, 14.0, targets=targets, masks=[None, off, None])
    without = MGLLLoss()(image, [texts[0], texts[2]], 14.0, targets=[targets[0], targets[2]])
    for name in ("loss", "sclip", "pointwise", "skl"):
        assert torch.allclose(masked[name], without[name], atol=1e-6), name

    nothing = _assert_finite_with_grads(MGLLLoss(), image, texts, 14.0, masks=[off] * 3)
    assert nothing["loss"] == 0


def test_masked_samples_drop_out_like_a_smaller_batch():
    image, texts = _features(granularities=1)
    targets = cooccurrence_targets(_example_labels())
    keep = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    for kind in ("sclip", "pointwise"):
        masked = MGLLLoss(kind=kind)(image, texts, 14.0, targets=[targets], masks=[keep])
        subset = MGLLLoss(kind=kind)(image[keep], [texts[0][keep]], 14.0, targets=[targets[keep][:, keep]])
        assert torch.allclose(masked["loss"], subset["loss"], atol=1e-5), kind


def test_bfloat16_features_are_computed_in_float32():
    image, texts = _features()
    out = MGLLLoss()(image.bfloat16(), [t.bfloat16() for t in texts], torch.tensor(14.0))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


# ---------------------------------------------------------------------------------------------------- targets


def test_cooccurrence_targets_hand_checked_values():
    labels = [{"a"}, {"a", "b"}, set(), {"b", "c"}]
    fraction = cooccurrence_targets(labels, mode="fraction")
    expected = torch.tensor([
        [1.0, 0.5, 0.0, 0.0],   # sample 0 has half of sample 1's labels, none of sample 3's
        [1.0, 1.0, 0.0, 0.5],
        [0.0, 0.0, 1.0, 0.0],   # unlabelled: matches only itself
        [0.0, 0.5, 0.0, 1.0],
    ])
    assert torch.equal(fraction, expected)
    jaccard = cooccurrence_targets(labels, mode="jaccard")
    assert jaccard[1, 3].item() == pytest.approx(1 / 3) and jaccard[0, 1].item() == pytest.approx(0.5)
    assert torch.equal(cooccurrence_targets(labels, mode="any"), (expected > 0).float())
    assert torch.equal(cooccurrence_targets(labels, mode="exact"), torch.eye(4))
    assert torch.equal(cooccurrence_targets([{"a"}, {"a"}, set()], mode="exact"),
                       torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]]))


def test_cooccurrence_from_multihot_states_and_text_fallback():
    states = torch.tensor([[1, -1, 0], [1, 1, 0], [0, -1, 0], [0, 0, 0]])  # -1 uncertain, 0 negative: not positive
    as_sets = cooccurrence_targets([{"x"}, {"x", "y"}, set(), set()])
    assert torch.equal(cooccurrence_targets(states), as_sets)
    assert torch.equal(cooccurrence_targets([{"x": 1, "y": -1}, {"x": 1, "y": 1}, {"y": 0}, {}]), as_sets)
    # the two unlabelled samples match each other only when their normalised texts are identical
    with_texts = cooccurrence_targets(states, texts=["a", "b", "No  finding.", "no finding"])
    assert with_texts[2, 3] == 1 and with_texts[3, 2] == 1 and with_texts[0, 2] == 0
    assert cooccurrence_targets(states, texts=["a", "b", "c", "d"])[2, 3] == 0


def test_text_identity_targets_normalise_and_ignore_empty_texts():
    targets = cooccurrence_targets(texts=["Pleural effusion.", "pleural   EFFUSION", "", "", "Cardiomegaly"])
    assert targets[0, 1] == 1 and targets[1, 0] == 1
    assert targets[2, 3] == 0 and targets[2, 2] == 1
    assert targets[0, 4] == 0
    assert torch.all(targets.diagonal() > 0)
    ids = text_ids(["Pleural effusion.", "pleural effusion"])
    assert ids[0] == ids[1] and ids.dtype == torch.int64


def test_label_and_text_ingredients_give_the_same_loss_as_prebuilt_targets():
    image, texts = _features()
    labels = _example_labels()
    modality = ["chest x-ray"] * 6 + ["fundus"] * 6
    loss_fn = MGLLLoss()
    prebuilt = loss_fn(image, texts, 14.0, targets=[
        cooccurrence_targets(texts=modality), cooccurrence_targets(labels), torch.eye(N)])
    from_ingredients = loss_fn(image, texts, 14.0, labels=[None, labels_to_multihot(labels), None],
                               text_ids=[text_ids(modality), None, None])
    for name in ("loss", "sclip", "pointwise", "skl"):
        assert torch.allclose(prebuilt[name], from_ingredients[name]), name


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": [torch.eye(N + 1)] * 3}, "targets\\[0\\] has shape"),
        ({"targets": [-torch.eye(N)] * 3}, "non-negative with a positive diagonal"),
        ({"targets": [torch.ones(N, N).fill_diagonal_(0)] * 3}, "positive diagonal"),
        ({"targets": [torch.eye(N)] * 2}, "2 entries but there are 3 granularities"),
        ({"masks": [torch.ones(N - 1, dtype=torch.bool)] * 3}, "masks\\[0\\] has shape"),
    ],
)
def test_bad_inputs_raise_specific_errors(kwargs, message):
    image, texts = _features()
    with pytest.raises(ValueError, match=message):
        MGLLLoss()(image, texts, 14.0, **kwargs)


def test_bad_configuration_raises_specific_errors():
    with pytest.raises(ValueError, match="alpha must be three"):
        MGLLLoss(alpha=(1.0, -1.0, 0.0))
    with pytest.raises(ValueError, match="loss kind must be one of"):
        MGLLLoss(kind="infonce")
    with pytest.raises(ValueError, match="co-occurrence mode"):
        cooccurrence_targets([{"a"}], mode="dice")
    with pytest.raises(ValueError, match="alpha must be three"):
        MGLLLoss(alpha=(1.0, 2.0))
    image, texts = _features()
    with pytest.raises(ValueError, match="clip_granularity=3 but there are 3 granularities"):
        MGLLLoss(kind="clip", clip_granularity=3)(image, texts, 14.0)
    with pytest.raises(ValueError, match="text_features\\[1\\] has shape"):
        MGLLLoss()(image, [texts[0], texts[1][:, :4]], 14.0)


def test_combined_kind_weights_terms_by_alpha_and_logging_names():
    loss_fn = MGLLLoss(kind="sclip+pointwise", alpha=[1.0, 0.5, 0.0])
    assert loss_fn.kind == "sclip+pointwise" and loss_fn.term_weights == {"sclip": 1.0, "pointwise": 0.5}
    image, texts = _features()
    out = loss_fn(image, texts, 14.0)
    assert torch.allclose(out["loss"], out["sclip"] + 0.5 * out["pointwise"])
    logged = loss_terms_for_logging(out)
    assert set(logged) == {"loss/total", "loss/sclip", "loss/pointwise", "loss/skl"} and logged["loss/skl"] == 0.0


def test_masked_smooth_kl_matches_per_sample_reference():
    """M_i averages only the granularities sample i has; P^g_i spreads only over texts present in granularity g."""
    image, texts = _features()
    masks = [
        torch.ones(N, dtype=torch.bool),
        torch.tensor([1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool),
        torch.tensor([0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1], dtype=torch.bool),
    ]
    out = MGLLLoss(kind="mgll", alpha=(0, 0, 1))(image, texts, 25.0, masks=masks)
    v = F.normalize(image.double(), dim=-1)
    distributions = []  # per granularity: row i -> {column j: probability}
    for t, mask in zip(texts, masks):
        z = 25.0 * v @ F.normalize(t.double(), dim=-1).T
        columns = mask.nonzero().flatten().tolist()
        distributions.append({i: dict(zip(columns, z[i, columns].softmax(0).tolist())) for i in columns})
    expected = 0.0
    for g, mask in enumerate(masks):
        rows = mask.nonzero().flatten().tolist()
        total = 0.0
        for i in rows:
            present = [d[i] for d in distributions if i in d]
            for j, p in distributions[g][i].items():
                mean = sum(d.get(j, 0.0) for d in present) / len(present)
                total += p * math.log(p / mean)
        expected += total / len(rows)
    assert out["skl"].item() == pytest.approx(expected, abs=1e-5)


def test_loss_benchmark_runs_at_toy_size():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "bench_loss.py"
    spec = importlib.util.spec_from_file_location("bench_loss", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.bench_loss_alone(n=8, dim=8, granularities=3, repeats=2, warmup=1)
    assert results["open_clip_cliploss_ms"] > 0 and results["ratio_mgll_over_cliploss"] > 0

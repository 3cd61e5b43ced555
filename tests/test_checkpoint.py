"""Checkpoints: atomic, weights_only=True loadable, rebuild the model for inference."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mgll.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_for_inference,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mgll.model import create_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    bundle = create_model("mgll-micro", image_size=48)
    optimizer = torch.optim.AdamW(bundle.model.parameters(), lr=1e-3)
    images = torch.randn(4, 3, 48, 48)
    tokens = bundle.tokenizer(["a", "b", "c", "d"])
    out = bundle.model(images, tokens)
    (out["image_features"] @ out["text_features"].T).diagonal().sum().neg().backward()
    optimizer.step()
    path = tmp_path_factory.mktemp("ckpt") / "run" / "last.pt"
    save_checkpoint(
        path, model=bundle.model, model_name=bundle.name, model_config=bundle.model_config, step=7,
        optimizer=optimizer, config={"train": {"lr": 1e-3}}, data_position={"epoch": 1, "batches": 3},
        model_kwargs={"image_size": 48, "context_length": bundle.context_length}, extra={"best_value": 1.5},
    )
    return bundle, optimizer, path, images, tokens


def test_checkpoint_loads_with_weights_only(trained):
    bundle, optimizer, path, *_ = trained
    raw = torch.load(path, weights_only=True)  # the promise: no pickled objects inside
    assert raw["step"] == 7 and raw["data_position"] == {"epoch": 1, "batches": 3}
    state = load_checkpoint(path)
    assert state["model_name"] == "mgll-micro" and state["extra"]["best_value"] == 1.5
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(state["model"][key], value)
    restored = torch.optim.AdamW(bundle.model.parameters(), lr=1e-3)
    restored.load_state_dict(state["optimizer"])
    assert restored.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_load_for_inference_rebuilds_the_same_model(trained):
    bundle, _, path, images, tokens = trained
    for target in (path, path.parent):
        rebuilt = load_for_inference(target)
        assert rebuilt.name == "mgll-micro" and rebuilt.image_size == 48 and not rebuilt.model.training
        with torch.no_grad():
            a = bundle.model.eval()(images, tokens)
            b = rebuilt.model(images, tokens)
        assert torch.allclose(a["image_features"], b["image_features"], atol=1e-6)
        assert torch.allclose(a["text_features"], b["text_features"], atol=1e-6)


def test_checkpoint_as_pretrained_weights(trained):
    bundle, _, path, images, tokens = trained
    again = create_model("mgll-micro", pretrained=str(path), image_size=48)
    with torch.no_grad():
        assert torch.allclose(again.model.eval()(images, tokens)["image_features"],
                              bundle.model.eval()(images, tokens)["image_features"], atol=1e-6)


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_bad_checkpoints_give_specific_errors(tmp_path, trained):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torn = tmp_path / "torn.pt"
    torn.write_bytes(trained[2].read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cannot be loaded with weights_only=True"):
        load_checkpoint(torn)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an mgll checkpoint"):
        load_checkpoint(foreign)
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(CheckpointError, match="no last.pt or best.pt"):
        resolve_checkpoint(tmp_path / "empty-run")

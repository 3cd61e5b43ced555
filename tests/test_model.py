"""open_clip models through mgll.model: the repo's tiny configs, offline tokenizers, clear errors."""

from __future__ import annotations

import pytest
import torch

from mgll.model import ModelError, available_models, count_parameters, create_model, model_config


@pytest.mark.parametrize(
    "name, max_params", [("mgll-micro", 5_000_000), ("mgll-tiny", 12_000_000), ("mgll-tiny-rn", 15_000_000)]
)
def test_tiny_configs_build_offline_and_encode(name, max_params):
    bundle = create_model(name)
    assert bundle.name == name
    assert 1_000_000 < count_parameters(bundle.model) < max_params
    tokens = bundle.tokenizer(["frontal chest radiograph", "cardiomegaly and effusion"])
    assert tokens.shape == (2, bundle.context_length) and tokens.dtype == torch.long
    assert (tokens[:, 0] == tokens[0, 0]).all() and (tokens[0] != tokens[1]).any()  # BOS, then real BPE ids
    images = torch.randn(2, 3, bundle.image_size, bundle.image_size)
    out = bundle.model(images, tokens)
    assert set(out) >= {"image_features", "text_features", "logit_scale"}
    embed = bundle.model_config["embed_dim"]
    assert out["image_features"].shape == (2, embed) and out["text_features"].shape == (2, embed)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-4)
    assert bundle.preprocess_val is not None and bundle.preprocess_train is not None


def test_overrides_change_image_size_and_context():
    bundle = create_model("mgll-micro", image_size=96, context_length=16)
    assert bundle.image_size == 96 and bundle.context_length == 16
    assert bundle.tokenizer(["x"]).shape == (1, 16)
    out = bundle.model(torch.randn(1, 3, 96, 96), bundle.tokenizer(["x"]))
    assert out["image_features"].shape[0] == 1


def test_paper_architectures_are_registered():
    names = available_models()
    for name in ("ViT-B-16", "ViT-L-14", "RN50", "mgll-tiny", "mgll-micro"):
        assert name in names
    assert model_config("ViT-B-16")["vision_cfg"]["patch_size"] == 16


def test_grad_checkpointing_flag_reaches_the_towers():
    bundle = create_model("mgll-micro", grad_checkpointing=True)
    assert bundle.model.visual.transformer.grad_checkpointing is True


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown model 'ViT-Q-99'"):
        create_model("ViT-Q-99")


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        create_model("mgll-micro", pretrained=str(tmp_path / "nope.pt"))


def test_unknown_pretrained_tag_is_a_clear_error():
    with pytest.raises(ModelError, match="cannot load pretrained='no-such-tag'"):
        create_model("mgll-micro", pretrained="no-such-tag")

"""The WebDataset training pipeline over build-dataset shards (tiny shards written by tests/fixtures/train.py)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch

from mgll.data import DataError, make_loader, make_pipeline, read_card
from mgll.model import create_model
from mgll.train_config import DataSection
from tests.fixtures.train import VOCAB, write_tiny_dataset


@pytest.fixture(scope="module")
def bundle():
    return create_model("mgll-micro")


def batches(dataset, bundle, batch_size=8, epoch=0, skip=0, train=True, split="train", **data):
    cfg = DataSection(dataset=str(dataset), workers=data.pop("workers", 0), shuffle_buffer=data.pop("shuffle_buffer", 32), **data)
    card = read_card(dataset)
    pipeline = make_pipeline(
        card, cfg, split=split, tokenizer=bundle.tokenizer, image_size=bundle.image_size, mean=bundle.image_mean,
        std=bundle.image_std, batch_size=batch_size, seed=3, epoch=epoch, skip_batches=skip, train=train,
    )
    return list(make_loader(pipeline, cfg.workers, skip))


def shard_records(dataset):
    records = {}
    for path in sorted((dataset / "shards").rglob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    records[member.name[:-5]] = json.load(tar.extractfile(member))
    return records


def test_batches_follow_the_card(tiny_dataset, bundle):
    got = batches(tiny_dataset, bundle, granularities=["diagnosis", "explanation"])
    assert len(got) == 6  # 48 samples, full batches of 8
    batch = got[0]
    assert batch["images"].shape == (8, 3, 64, 64) and batch["images"].dtype == torch.float32
    assert len(batch["tokens"]) == 2 and batch["tokens"][0].shape == (8, bundle.context_length)
    assert batch["text_mask"].shape == (8, 2) and batch["text_mask"].all()
    assert batch["labels"].shape == (8, len(VOCAB))
    records = shard_records(tiny_dataset)
    for i, key in enumerate(batch["keys"]):
        record = records[key]
        assert batch["texts"][0][i] == record["texts"]["diagnosis"]
        assert batch["texts"][1][i] == record["texts"]["explanation"]
        expected = [1.0 if record["labels"].get(name) == 1 else 0.0 for name in VOCAB]
        assert batch["labels"][i].tolist() == expected  # uncertain (-1) counts as negative by default
    keys = [k for b in got for k in b["keys"]]
    assert sorted(keys) == sorted(k for k in records if k.startswith("train"))  # each sample once per epoch


def test_uncertain_labels_can_count_as_positive(tiny_dataset, bundle):
    records = shard_records(tiny_dataset)
    got = batches(tiny_dataset, bundle, uncertain_label="positive")
    seen_uncertain = 0
    for batch in got:
        for i, key in enumerate(batch["keys"]):
            if records[key]["labels"].get("Pneumothorax") == -1:
                seen_uncertain += 1
                assert batch["labels"][i, VOCAB.index("Pneumothorax")] == 1.0
    assert seen_uncertain > 0


def test_order_is_seeded_per_epoch_and_augmentation_per_sample(tiny_dataset, bundle):
    a0, again, a1 = batches(tiny_dataset, bundle), batches(tiny_dataset, bundle), batches(tiny_dataset, bundle, epoch=1)
    assert [b["keys"] for b in a0] == [b["keys"] for b in again]
    assert all(torch.equal(x["images"], y["images"]) for x, y in zip(a0, again))
    assert [b["keys"] for b in a0] != [b["keys"] for b in a1]
    val = batches(tiny_dataset, bundle, train=False, split="val")
    assert sum(len(b["keys"]) for b in val) == 16


@pytest.mark.parametrize("workers, skip", [(0, 3), (2, 3)])
def test_skipping_consumed_batches_reproduces_the_rest(tiny_dataset, bundle, workers, skip):
    full = batches(tiny_dataset, bundle, workers=workers)
    rest = batches(tiny_dataset, bundle, workers=workers, skip=skip)
    assert [b["keys"] for b in rest] == [b["keys"] for b in full[skip:]]
    assert all(torch.equal(x["images"], y["images"]) for x, y in zip(rest, full[skip:]))


def test_missing_granularity_text_error_mask_or_drop(tmp_path, bundle):
    dataset = write_tiny_dataset(tmp_path / "ds", n_train=16, n_val=0, drop_text={"train00005": "explanation"})
    with pytest.raises(DataError, match=r"sample 'train00005' .* has no 'explanation' text; set data.missing_text"):
        batches(dataset, bundle)
    masked = batches(dataset, bundle, missing_text="mask")
    row = [(b, i) for b in masked for i, k in enumerate(b["keys"]) if k == "train00005"]
    batch, i = row[0]
    assert batch["text_mask"][i].tolist() == [True, True, False] and batch["texts"][2][i] == ""
    assert batch["text_mask"].sum() == 3 * len(batch["keys"]) - 1
    dropped = batches(dataset, bundle, missing_text="drop", batch_size=5)
    keys = [k for b in dropped for k in b["keys"]]
    assert "train00005" not in keys and len(keys) == 15


def test_granularity_not_in_card_is_a_clear_error(tiny_dataset, bundle):
    with pytest.raises(DataError, match=r"granularities \['impression'\] are not in the dataset card"):
        batches(tiny_dataset, bundle, granularities=["impression"])
    with pytest.raises(DataError, match="ordered coarse -> fine"):
        batches(tiny_dataset, bundle, granularities=["explanation", "modality"])


def test_missing_card_split_and_members(tmp_path, bundle):
    with pytest.raises(DataError, match="no dataset card"):
        read_card(tmp_path)
    dataset = write_tiny_dataset(tmp_path / "ds", n_train=8, n_val=0)
    with pytest.raises(DataError, match="no shards for split 'test'"):
        batches(dataset, bundle, split="test")
    shard = next((dataset / "shards" / "train").glob("*.tar"))
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member.name != "train00002.png":
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    with pytest.raises(DataError, match=r"sample 'train00002' in shard .* has no image member"):
        batches(dataset, bundle, shuffle_buffer=0)

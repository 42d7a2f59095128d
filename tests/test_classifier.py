"""The dataset classifier: learning, the checksum-keyed cache, and test/sample_class_acc."""

from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor

from genlab.callbacks.evaluator import configured_evaluator
from genlab.capabilities import CanSample
from genlab.data.base import Batch, DataInfo, Split, Splits, TensorDataModule
from genlab.data.builtin import Toy2dDataModule
from genlab.errors import UserError
from genlab.metrics import classifier as C
from genlab.models.base import GenerativeModel


class LeftRight(TensorDataModule):
    """8x8 grey images: class 0 is bright in the left half, class 1 in the right; data from the seed."""

    @property
    def info(self) -> DataInfo:
        return DataInfo("leftright", (1, 8, 8), num_classes=2)

    def load(self) -> Splits:
        g = torch.Generator().manual_seed(self.options.seed)
        halves = torch.zeros(2, 1, 8, 8)
        halves[0, ..., :4], halves[1, ..., 4:] = 1.0, 1.0

        def make(n: int) -> Split:
            y = torch.randint(0, 2, (n,), generator=g)
            brightness = 0.4 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
            x = 0.3 * torch.rand(n, 1, 8, 8, generator=g) + halves[y] * brightness
            return Split((x * 255).round().to(torch.uint8), y)

        return Splits(train=make(400), test=make(200))


def _dm(seed: int = 0) -> LeftRight:
    dm = LeftRight(seed=seed, eval_batch_size=128)
    dm.setup()
    return dm


def _state(net: C.DatasetClassifier) -> list[Tensor]:
    return list(net.state_dict().values())


def test_learns_left_right_and_features(tmp_path) -> None:
    dm = _dm()
    net = C.dataset_classifier(dm, tmp_path, epochs=4, min_steps=0)
    test = dm.splits["test"]
    assert C.accuracy(net, test.x, test.y) >= 0.99
    binary = torch.bernoulli(dm.scale(test.x), generator=torch.Generator().manual_seed(1))
    assert C.accuracy(net, binary, test.y) >= 0.95  # trained with random binarisation
    x = dm.scale(test.x[:10])
    feats = net.features(x)
    assert feats.shape == (10, 128) and (feats >= 0).all()  # ReLU activations
    assert torch.equal(net.features(x), feats)  # deterministic: no dropout, no batch norm
    assert torch.allclose(net(x), net.head(feats)) and net(x).shape == (10, 2)


@pytest.mark.slow
def test_cache_reused_and_invalidated(tmp_path, monkeypatch) -> None:
    calls = []
    train = C.train_classifier

    def counting(*args, **kwargs) -> C.DatasetClassifier:
        calls.append(1)
        return train(*args, **kwargs)

    monkeypatch.setattr(C, "train_classifier", counting)
    dm = _dm()
    first = C.dataset_classifier(dm, tmp_path, epochs=1, min_steps=0)
    (path,) = (tmp_path / "classifiers").iterdir()
    assert len(calls) == 1 and path.name.startswith("leftright-") and path.suffix == ".pt"
    mtime = path.stat().st_mtime_ns

    again = C.dataset_classifier(dm, tmp_path, epochs=1, min_steps=0)  # same data and config: loaded
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime
    assert all(torch.equal(a, b) for a, b in zip(_state(first), _state(again)))

    C.dataset_classifier(_dm(seed=1), tmp_path, epochs=1, min_steps=0)  # other data: another checksum, retrained
    C.dataset_classifier(dm, tmp_path, epochs=2, min_steps=0)  # other config: retrained
    assert len(calls) == 3 and len(list((tmp_path / "classifiers").iterdir())) == 3

    fresh = C.dataset_classifier(dm, tmp_path / "elsewhere", epochs=1, min_steps=0)  # training is deterministic
    assert len(calls) == 4 and all(torch.equal(a, b) for a, b in zip(_state(first), _state(fresh)))

    path.write_bytes(b"half a file")  # a damaged cache: trained again and replaced, never an error
    repaired = C.dataset_classifier(dm, tmp_path, epochs=1, min_steps=0)
    assert len(calls) == 5 and all(torch.equal(a, b) for a, b in zip(_state(first), _state(repaired)))
    assert torch.load(path, weights_only=True)["payload"]["checksum"]
    assert not [p for p in (tmp_path / "classifiers").iterdir() if p.suffix == ".tmp"]  # no temporary files left


def test_a_swapped_cache_file_is_trained_again_not_used(tmp_path, monkeypatch) -> None:
    """A file under the right name and key but with other weights (written without genlab's digest, or
    with a digest its weights no longer have) is not loaded: the classifier is trained again."""
    calls = []
    train = C.train_classifier
    monkeypatch.setattr(C, "train_classifier", lambda *a, **k: calls.append(1) or train(*a, **k))
    dm = _dm()
    first = C.dataset_classifier(dm, tmp_path, epochs=1, min_steps=0)
    (path,) = (tmp_path / "classifiers").iterdir()
    record = torch.load(path, weights_only=True)
    zeroed = {k: torch.zeros_like(v) for k, v in record["payload"]["state_dict"].items()}
    swaps = [
        {"checksum": record["payload"]["checksum"], "state_dict": zeroed},  # the old layout: no digest
        {"genlab_digest": record["genlab_digest"],  # the digest of the real weights beside other weights
         "payload": {"checksum": record["payload"]["checksum"], "state_dict": zeroed}},
    ]
    for i, swap in enumerate(swaps, start=2):
        torch.save(swap, path)
        got = C.dataset_classifier(dm, tmp_path, epochs=1, min_steps=0)
        assert len(calls) == i
        assert all(torch.equal(a, b) for a, b in zip(_state(first), _state(got)))  # not the zeroed weights
    assert C.dataset_classifier(dm, tmp_path, epochs=1, min_steps=0) and len(calls) == 3  # repaired: loaded


def test_cache_files_are_replaced_whole_while_others_read_them(tmp_path) -> None:
    """Two writers replace one cache file over and over while a reader loads it: the reader only ever
    sees a whole file (the old or the new one), as two runs building the same classifier would."""
    import threading

    from genlab.files import write_atomically

    path = tmp_path / "classifiers" / "shared.pt"
    states = [{"checksum": str(i), "w": torch.full((512, 512), float(i))} for i in range(2)]  # 1 MB each
    write_atomically(path, lambda f: torch.save(states[0], f))
    errors: list[BaseException] = []
    done = threading.Event()

    def write(state: dict) -> None:
        for _ in range(15):
            write_atomically(path, lambda f: torch.save(state, f))

    def read() -> None:
        while not done.is_set():
            try:
                got = torch.load(path, weights_only=True)
                assert torch.equal(got["w"], states[int(got["checksum"])]["w"])
            except BaseException as e:  # a torn read fails to unpickle or gives a mixed tensor
                errors.append(e)

    writers = [threading.Thread(target=write, args=(st,)) for st in states]
    reader = threading.Thread(target=read)
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    reader.join()
    assert not errors, errors[:1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["shared.pt"]


def test_points_have_no_classifier(tmp_path) -> None:
    dm = Toy2dDataModule(kind="ring8", n_samples=100)
    dm.setup()
    with pytest.raises(UserError, match="needs labelled images"):
        C.dataset_classifier(dm, tmp_path)


class Replay(GenerativeModel):
    """A conditional 'sampler' that returns test images of class (y + shift) mod 2."""

    capabilities = frozenset({CanSample})

    conditional = True

    def __init__(self, info: DataInfo, pool: Split, shift: int) -> None:
        super().__init__(data_info=info)
        self.pool, self.shift = pool, shift

    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        assert y is not None and len(y) == n
        out = []
        for c in ((y.cpu() + self.shift) % 2).tolist():
            idx = torch.nonzero(self.pool.y == c).squeeze(1)
            out.append(self.pool.x[idx[torch.randint(len(idx), ())]])
        return TensorDataModule.scale(torch.stack(out))

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        return {"loss": torch.zeros(())}


@pytest.mark.parametrize("shift", [0, 1])
def test_evaluator_sample_class_acc(tmp_path, monkeypatch, shift: int) -> None:
    dm = _dm()
    # four passes (28 updates) learn this task; the default 500-update floor is for real datasets
    monkeypatch.setattr(C, "dataset_classifier", partial(C.dataset_classifier, min_steps=0))
    evaluator = configured_evaluator(tmp_path, ["classifier_epochs=4", "metrics.probes.max_train=100",
                                                "metrics.sample_classes.per_class=30"])
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=[evaluator], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.test(Replay(dm.info, dm.splits["test"], shift), datamodule=dm)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["test/classifier_acc"] >= 0.99
    if shift == 0:  # samples of the requested class
        assert m["test/sample_class_acc"] >= 0.95
    else:  # every sample of the other class
        assert m["test/sample_class_acc"] <= 0.05

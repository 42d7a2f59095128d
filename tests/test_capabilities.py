"""Capabilities are declared on the model class and checked against its methods when the class is made; the
pictures a model lists of itself (``GenerativeModel.pictures``) are all written by the image logger."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from genlab.callbacks.images import GRID_COLUMNS, ImageLogger
from genlab.capabilities import (
    CanDecode,
    CanEmbed,
    CanEncode,
    CanSample,
    HasCodeKL,
    PictureRequest,
    PictureSpec,
    capable,
)
from genlab.data.base import Batch, DataInfo, Split, Splits, TensorDataModule
from genlab.figures import Grid
from genlab.models.base import GenerativeModel

SHAPE = (1, 4, 4)


class Base(GenerativeModel):
    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        return {"loss": torch.zeros(())}


def test_a_declared_capability_without_its_method_fails_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match=r"declares CanSample but has no method 'sample'"):
        class Missing(Base):
            capabilities = frozenset({CanSample})


def test_a_misspelt_method_is_named_with_the_method_it_should_be() -> None:
    with pytest.raises(TypeError, match=r"no method 'sample' \(is 'smaple' a misspelling\?\)"):
        class Misspelt(Base):
            capabilities = frozenset({CanSample})

            def smaple(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
                return torch.zeros(n, *SHAPE)


def test_a_capability_method_without_its_declaration_fails_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match=r"has the method 'kl_per_dim' of HasCodeKL but does not declare it"):
        class Undeclared(Base):
            capabilities = frozenset({CanEncode})

            def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
                return x.flatten(1)

            def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
                return x.flatten(1)


def test_parameters_are_checked_against_the_protocol() -> None:
    with pytest.raises(TypeError, match=r"Renamed.decode does not fit CanDecode.decode: its parameters are \(z, y\)"):
        class Renamed(Base):
            capabilities = frozenset({CanDecode})

            def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
                return z
    with pytest.raises(TypeError, match=r"its parameters \['temperature'\] have no default"):
        class Required(Base):
            capabilities = frozenset({CanDecode})

            def decode(self, h: Tensor, y: Tensor | None = None, *, temperature: float) -> Tensor:
                return h
    with pytest.raises(TypeError, match=r"not one of genlab.capabilities.CAPABILITIES"):
        class Unknown(Base):
            capabilities = frozenset({Tensor})


def test_a_subclass_extends_its_parents_declaration_and_callers_read_it() -> None:
    class Encoder(Base):
        capabilities = frozenset({CanEncode})

        def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
            return x.flatten(1)

    class WithKL(Encoder):
        capabilities = Encoder.capabilities | {HasCodeKL}

        def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # extra parameters with defaults fit
            return x.flatten(1)

    info = DataInfo("stand-in", SHAPE)
    parent, child = Encoder(data_info=info), WithKL(data_info=info)
    assert capable(parent, CanEncode) and not capable(parent, HasCodeKL)
    assert capable(child, CanEncode) and capable(child, HasCodeKL) and not capable(child, CanEmbed)
    assert not capable(object(), CanEncode)  # no declaration: no capability


# ---- the model's own pictures -----------------------------------------------------------------------
class Tiny(TensorDataModule):
    @property
    def info(self) -> DataInfo:
        return DataInfo("tiny", SHAPE)

    def load(self) -> Splits:
        g = torch.Generator().manual_seed(0)
        return Splits(train=Split(torch.rand(20, *SHAPE, generator=g)), test=Split(torch.rand(20, *SHAPE, generator=g)))


class Draws(Base):
    """Lists a grid of test images, a figure and a TensorBoard-only sequence at the test's end, nothing else."""

    def pictures(self, request: PictureRequest) -> list[PictureSpec]:
        if request.moment != "test":
            return []
        grid = lambda: [Grid(request.pick("test", request.columns), request.columns, (), "test images")]  # noqa: E731
        frames = [PictureSpec("test/frames", None, lambda: figure(), step=k) for k in range(3)]
        return [PictureSpec("test/grid", "grid.png", grid), PictureSpec("own/figure", "own_figure.png", figure),
                *frames]


def figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_every_picture_a_model_lists_is_written_to_tensorboard_and_the_run_folder(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dm = Tiny(eval_batch_size=8)
    trainer = pl.Trainer(accelerator="cpu", logger=TensorBoardLogger(str(tmp_path), name="tb"),
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[ImageLogger(str(tmp_path))])
    model = Draws(data_info=dm.info)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.test(model, datamodule=dm)
    assert not [str(w.message) for w in caught if "ImageLogger" in str(w.message)]  # every picture drawn
    assert {p.name for p in (tmp_path / "images").iterdir()} == {"grid.png", "own_figure.png"}
    (run,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(run), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"test/grid", "own/figure", "test/frames"}
    assert [e.step for e in acc.Images("test/frames")] == [0, 1, 2]  # each spec at its own step
    request = PictureRequest("test", dm.info, GRID_COLUMNS, 10, 0, lambda split, n: torch.zeros(n, *SHAPE))
    assert {s.tag for s in model.pictures(request)} == set(acc.Tags()["images"])

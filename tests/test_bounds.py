"""Arguments' ranges declared once, in the annotation (``Bounds``): checked when the object is made in Python
(the class and the argument named), by the config's checks and by the builder of a node (the node's full key,
found from where the node sits, never a path the object writes itself)."""

from __future__ import annotations

from typing import Annotated

import pytest
import torch
from omegaconf import OmegaConf

from genlab.config.fields import Bounds, argument_rules, checked
from genlab.config.instantiation import build
from genlab.config.targets import target_errors
from genlab.errors import ArgumentError, UserError


class Thing:
    """A stand-in for a metric: two bounded arguments, an optional one and a choice."""

    @checked
    def __init__(self, k: Annotated[int, Bounds(ge=1)] = 5, share: Annotated[float, Bounds(gt=0, le=1)] = 0.5,
                 n: Annotated[int | None, Bounds(ge=2)] = None,
                 kind: Annotated[str, Bounds(choices=("a", "b"))] = "a", label: str = "x") -> None:
        self.k, self.share, self.n, self.kind = k, share, n, kind


def test_rules_come_from_the_annotations() -> None:
    rules = argument_rules(Thing)
    assert rules["k"] == (int, False, {"ge": 1})
    assert rules["share"] == (float, False, {"gt": 0, "le": 1})
    assert rules["n"] == (int, True, {"ge": 2})
    assert rules["kind"] == (str, False, {"choices": ("a", "b")})
    assert rules["label"] == (str, False, {})


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, "Thing: k=0 is out of range: it must be >= 1."),
    ({"k": 1.5}, "Thing: k=1.5 is not an integer."),
    ({"k": True}, "Thing: k=True is not an integer."),
    ({"share": 0}, "Thing: share=0 is out of range: it must be > 0."),
    ({"share": float("nan")}, "Thing: share=nan is not a finite number."),
    ({"n": 1}, "Thing: n=1 is out of range: it must be >= 2."),
    ({"kind": "c"}, "Thing: kind='c' is not one of a, b."),
    ({"label": 3}, "Thing: label=3 is not a string."),
])
def test_made_in_python_the_message_names_the_class_and_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ArgumentError) as info:
        Thing(**kwargs)
    assert str(info.value) == message


def test_good_arguments_pass_positionally_and_by_keyword() -> None:
    t = Thing(2, 1.0, n=None, kind="b")
    assert (t.k, t.share, t.n, t.kind) == (2, 1.0, None, "b")


def test_a_config_node_is_named_by_its_full_key() -> None:
    target = f"{__name__}.Thing"
    cfg = OmegaConf.create({"callbacks": {"evaluator": {"metrics": {"mine": {"_target_": target, "k": 0,
                                                                            "share": 2.0}}}}})
    # the config's checks: every problem at once, under the node's own keys
    assert target_errors(cfg) == ["callbacks.evaluator.metrics.mine.k=0 is out of range: it must be >= 1",
                                  "callbacks.evaluator.metrics.mine.share=2.0 is out of range: it must be <= 1"]
    # the builder: the first problem, under the key Hydra reports for the node that failed
    with pytest.raises(UserError, match=r"^callbacks.evaluator.metrics.mine.k=0 is out of range: it must be >= 1\.$"):
        build(cfg.callbacks.evaluator.metrics.mine)
    nested = OmegaConf.create({"outer": {"_target_": "builtins.dict", "inner": {"_target_": target, "kind": "z"}}})
    with pytest.raises(UserError, match=r"^outer.inner.kind='z' is not one of a, b\.$"):
        build(nested.outer)


def test_lightnings_refusal_is_named_by_the_keys_it_refuses() -> None:
    from genlab.config.checks import lightning_refusals

    settings = {"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 0, "max_epochs": 3,
                "limit_val_batches": 2.5}
    found = lightning_refusals(settings, RuntimeError("the whole refusal"))
    assert [m.split(":", 1)[0] for m in found] == ["trainer.devices=0", "trainer.limit_val_batches=2.5"]
    assert all("Lightning refuses it" in m for m in found)
    # an accelerator Lightning cannot use: the other settings are not judged on another one
    found = lightning_refusals({**settings, "accelerator": "nope"}, RuntimeError("the whole refusal"))
    assert len(found) == 1 and found[0].startswith("trainer.accelerator='nope': Lightning refuses it: ")
    # refused only together: the whole refusal
    assert lightning_refusals({"_target_": "pytorch_lightning.Trainer", "max_epochs": 3},
                              RuntimeError("together")) == ["trainer: Lightning refuses these settings "
                                                            "(RuntimeError: together)"]


def test_lightnings_refusal_of_batch_counts_inside_fit_names_the_key() -> None:
    """The batch counts are checked by Lightning itself inside fit, where the loaders' lengths are known; a
    real Trainer and loader give the refusal, genlab only names the key."""
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from genlab.config.checks import fit_refusal

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch: list[torch.Tensor], i: int) -> torch.Tensor:
            return (self.w - batch[0]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 1)), batch_size=2)  # 4 batches
    for settings, key in (({"limit_train_batches": 0.1}, "trainer.limit_train_batches=0.1"),
                          ({"val_check_interval": 9}, "trainer.val_check_interval=9")):
        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, **settings)
        with pytest.raises((ValueError, MisconfigurationException)) as caught:
            trainer.fit(Tiny(), train_dataloaders=loader, val_dataloaders=loader)
        refused = fit_refusal(trainer, caught.value)
        assert refused is not None and str(refused).startswith(f"{key}: Lightning refuses it for this data: ")
    assert fit_refusal(trainer, ValueError("a model's own error")) is None
    assert fit_refusal(trainer, RuntimeError("`val_check_interval` named elsewhere")) is None

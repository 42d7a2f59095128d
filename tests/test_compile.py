"""model.compile=true: the networks train through torch.compile, and the run is the same run — the
same parameter names in its checkpoints, the same figures up to float rounding."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import FAST, TINY

from genlab.train import train


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_compiled_networks_train_to_the_eager_run(make_cfg, model: str) -> None:
    import torch._dynamo.utils

    results, keys = [], []
    for compile in (False, True):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        cfg = make_cfg(f"model={model}", "data=digits", *TINY["digits"], *FAST, f"model.compile={compile}",
                       "trainer.max_epochs=2", "trainer.limit_train_batches=3")
        results.append(train(cfg))
        frames = sum(torch._dynamo.utils.counters["frames"].values())
        assert (frames > 0) == compile  # dynamo ran only when asked
        state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
        keys.append(sorted(state["state_dict"]))
    assert keys[0] == keys[1] and not any("_orig_mod" in k for k in keys[1])
    eager, compiled = results
    assert math.isfinite(compiled["test/loss"])
    assert compiled["test/loss"] == pytest.approx(eager["test/loss"], rel=0.02)

"""Greedy layer-wise pretraining of a deep autoencoder, then end-to-end fine-tuning
(Hinton & Salakhutdinov 2006, with shallow autoencoders in place of RBMs)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from genlab.data.base import Batch
from genlab.models.autoencoder import Autoencoder, recon_nll


class StackedAutoencoder(Autoencoder):
    """Encoder blocks e_1..e_L and decoder blocks d_1..d_L, where d_{L+1-i} inverts e_i.

    Phase i (``pretrain_epochs`` epochs each, i = 1..L) trains the shallow autoencoder
    a_{i-1} -> e_i -> d_{L+1-i} -> â_{i-1} on the frozen codes a_{i-1} = e_{i-1}(...e_1(x));
    afterwards the whole network is fine-tuned. Validation always scores the whole network,
    so the best checkpoint is comparable across phases.
    """

    def __init__(self, *, pretrain_epochs: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pretrain_epochs = pretrain_epochs
        self.enc_blocks = [m for m in self.encoder if not isinstance(m, nn.Flatten)]
        self.dec_blocks = [m for m in self.decoder if not isinstance(m, nn.Unflatten)]
        if len(self.enc_blocks) != len(self.dec_blocks):
            raise ValueError("stacked_ae needs a decoder that mirrors the encoder block for block")

    @property
    def n_layers(self) -> int:
        return len(self.enc_blocks)

    def phase_at(self, epoch: int) -> int:
        """The layer pretrained in this epoch (1..L), or 0 once fine-tuning."""
        if self.pretrain_epochs == 0:
            return 0
        i = epoch // self.pretrain_epochs + 1
        return i if i <= self.n_layers else 0

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        i = self.phase_at(self.current_epoch) if stage == "train" else 0
        if i == 0:
            return super().loss_terms(batch, stage)
        return self.layer_terms(batch["x"], i)

    def layer_terms(self, x: Tensor, i: int) -> dict[str, Tensor]:
        """The loss of the shallow autoencoder around encoder block i (1-based)."""
        a = self.encoder[0](x)  # flatten: (B, D)
        for blk in self.enc_blocks[: i - 1]:
            a = blk(a)
        a = a.detach()  # layers below i are frozen in this phase
        h = self.enc_blocks[i - 1](a)
        if i == self.n_layers:  # the innermost block's output is the code
            h = self.code_activation(h)
        raw = self.dec_blocks[self.n_layers - i](h)
        if i == 1:  # the outermost pair reconstructs the data itself
            loss = recon_nll(raw.view_as(x), x, self.likelihood).mean()
        else:
            loss = recon_nll(raw, a, "gaussian").mean()
        return {f"layer{i}_recon": loss, "loss": loss}

"""Greedy layer-wise pretraining of a deep autoencoder, then end-to-end fine-tuning
(Hinton & Salakhutdinov 2006): each layer pretrained as a shallow autoencoder (``pretrain=ae``)
or, as in the paper, as a restricted Boltzmann machine (``pretrain=rbm``), or not at all (``none``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from genlab.capabilities import Budget, LikelihoodBound
from genlab.data.base import Batch, DataInfo, TensorDataModule
from genlab.errors import UserError
from genlab.models.autoencoder import Autoencoder, recon_nll
from genlab.models.rbm import RBM, bernoulli


class LinearHiddenRBM(RBM):
    """Binary visible units, linear hidden units with unit-variance Gaussian noise (the code layer of
    Hinton & Salakhutdinov): E(v, h) = −aᵀv + ½‖h − b‖² − vᵀWh, so p(h | v) = N(b + vW, I),
    p(v | h) = σ(a + Wh) and F(v) = −aᵀv − ½‖b + vW‖² + ½‖b‖² (less the constant H/2·log 2π).
    For pretraining only: the partition-function estimates of RBM assume binary hidden units."""

    def hidden_free(self, s: Tensor) -> Tensor:
        """½‖s‖² − ½‖b‖² for the inputs s = b + vW (B, H): (B,)."""
        return 0.5 * (s.pow(2).sum(1) - self.hidden_bias.pow(2).sum())

    def hidden_mean(self, s: Tensor) -> Tensor:
        """The mean of p(h | v) = N(s, I): s itself (B, H)."""
        return s

    def gibbs(self, v: Tensor, steps: int, draw: Callable[[Tensor], Tensor] = bernoulli) -> tuple[Tensor, Tensor]:
        mean = v
        for _ in range(steps):
            h = self.p_h(v)
            h = h + torch.randn_like(h)
            mean = self.visible_mean(h)
            v = self.sample_visible(mean, draw)
        return v, mean

    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        raise UserError("LinearHiddenRBM has no log Z estimate: it is a pretraining layer of model=stacked_ae")


class StackedAutoencoder(Autoencoder):
    """Encoder blocks e_1..e_L and decoder blocks d_1..d_L, where d_{L+1-i} inverts e_i.

    ``pretrain=ae``: phase i (``pretrain_epochs`` epochs each, i = 1..L) trains the shallow autoencoder
    a_{i-1} -> e_i -> d_{L+1-i} -> â_{i-1} on the frozen codes a_{i-1} = e_{i-1}(...e_1(x));
    afterwards the whole network is fine-tuned. Validation always scores the whole network,
    so the best checkpoint is comparable across phases.

    ``pretrain=rbm``: before the first training epoch, RBM i (i = 1..L) is trained for ``rbm_epochs``
    epochs by CD-``rbm_cd_k`` (SGD with momentum ``rbm_momentum``, weight decay ``rbm_weight_decay``)
    on a_{i-1}, the hidden probabilities of RBM i−1 (a_0 = x): binary RBMs (the first with Gaussian
    visible units for a gaussian likelihood), the last one with linear Gaussian hidden units (learning
    rate ``rbm_code_lr``) unless the code is a sigmoid. The network is then unrolled: e_i gets W_iᵀ and
    the hidden biases, d_{L+1-i} gets W_i and the visible biases; all trainer epochs fine-tune. This
    needs sigmoid hidden layers (net.activation=sigmoid) without batch norm. A resumed run does not
    pretrain again (``rbm_pretrained``, kept in checkpoints).
    """

    def __init__(
        self, *, pretrain: str = "ae", pretrain_epochs: int = 5, rbm_epochs: int = 10, rbm_lr: float = 0.1,
        rbm_code_lr: float = 1e-3, rbm_cd_k: int = 1, rbm_momentum: float = 0.9, rbm_weight_decay: float = 2e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pretrain, self.pretrain_epochs = pretrain, pretrain_epochs
        self.rbm_epochs, self.rbm_lr, self.rbm_code_lr, self.rbm_cd_k = rbm_epochs, rbm_lr, rbm_code_lr, rbm_cd_k
        self.rbm_momentum, self.rbm_weight_decay = rbm_momentum, rbm_weight_decay
        self.enc_blocks = [m for m in self.encoder if not isinstance(m, nn.Flatten)]
        self.dec_blocks = [m for m in self.decoder if not isinstance(m, nn.Unflatten)]
        if len(self.enc_blocks) != len(self.dec_blocks):
            raise ValueError("stacked_ae needs a decoder that mirrors the encoder block for block")
        #: the RBMs of the last pretraining (not submodules: the unrolled network holds their weights),
        #: and each one's reconstruction error before training and after each epoch
        self.rbms: list[RBM] = []
        self.rbm_history: list[list[float]] = []
        if pretrain == "rbm":
            self.check_rbm_net()
            self.register_buffer("rbm_pretrained", torch.tensor(False))

    def steps_leave_parameters_unused(self) -> bool:
        return self.pretrain == "ae" and self.pretrain_epochs > 0  # a phase trains one pair of blocks

    @property
    def n_layers(self) -> int:
        return len(self.enc_blocks)

    def phase_at(self, epoch: int) -> int:
        """The layer pretrained (as an autoencoder) in this epoch (1..L), or 0 once fine-tuning."""
        if self.pretrain != "ae" or self.pretrain_epochs == 0:
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

    # ---- RBM pretraining ------------------------------------------------------------------
    def check_rbm_net(self) -> None:
        """RBM pretraining unrolls into Linear blocks: sigmoid hidden layers, a linear (or sigmoid) code."""
        for i, (enc, dec) in enumerate(zip(self.enc_blocks, reversed(self.dec_blocks)), 1):
            if not (isinstance(enc, nn.Sequential) and isinstance(enc[0], nn.Linear)):
                raise UserError("model.pretrain=rbm needs an MLP network (model.net=mlp)")
            if any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in enc.modules()):
                raise UserError("model.pretrain=rbm unrolls RBMs into plain layers: set model.net.batch_norm=false")
            parts = [m for m in enc if not isinstance(m, nn.Dropout)]
            if i < self.n_layers and not isinstance(parts[-1], nn.Sigmoid):
                raise UserError("model.pretrain=rbm needs binary (sigmoid) hidden units: set "
                                "model.net.activation=sigmoid")
            if not hasattr(dec[0], "bias"):
                raise UserError("model.pretrain=rbm needs decoder layers with biases")
        if not isinstance(self.code_activation, (nn.Identity, nn.Sigmoid)):
            raise UserError("model.pretrain=rbm needs model.code_activation=none (a linear-Gaussian code RBM) "
                            "or sigmoid (a binary one)")

    def make_rbm(self, i: int) -> RBM:
        """RBM i (1-based) for encoder block i: W (in, out)."""
        lin = self.enc_blocks[i - 1][0]
        code = i == self.n_layers
        linear = code and not isinstance(self.code_activation, nn.Sigmoid)
        # the RBM sees flat vectors; it asks for images, so its data is shaped (1, 1, D)
        bounded = self.data_info.bounded if i == 1 else True
        info = DataInfo(f"{self.data_info.name}_layer{i - 1}", (1, 1, lin.in_features), bounded=bounded)
        visible = "bernoulli" if i > 1 or self.likelihood == "bernoulli" else "gaussian"
        cls = LinearHiddenRBM if linear else RBM
        return cls(data_info=info, n_hidden=lin.out_features, visible=visible, cd_k=self.rbm_cd_k,
                   weight_decay=self.rbm_weight_decay, init_std=0.1 if linear else 0.01,
                   train_recon=True).to(self.device)  # pretrain_rbms logs each epoch's reconstruction error

    @torch.no_grad()
    def unroll(self, rbms: list[RBM]) -> None:
        """Encoder block i <- (W_iᵀ, hidden biases); decoder block L+1−i <- (W_i, visible biases)."""
        for i, rbm in enumerate(rbms):
            enc, dec = self.enc_blocks[i][0], self.dec_blocks[self.n_layers - 1 - i][0]
            enc.weight.copy_(rbm.W.t())
            enc.bias.copy_(rbm.hidden_bias)
            if isinstance(dec, nn.Linear):  # a TiedLinear takes its weight from the encoder's
                dec.weight.copy_(rbm.W)
            dec.bias.copy_(rbm.visible_bias)

    def pretrain_rbms(self, x: Tensor, batch_size: int) -> list[RBM]:
        """Train the RBM stack on the images ``x`` (N, *shape) and unroll it into the network; returns the RBMs.
        The reconstruction errors (squared error of one mean-field Gibbs step, per sample) go to
        ``rbm_history``: before training, then the mean over each epoch."""
        a = x.reshape(x.shape[0], -1).to(self.device)
        rbms: list[RBM] = []
        self.rbm_history = []
        for i in range(1, self.n_layers + 1):
            rbm = self.make_rbm(i)
            lr = self.rbm_code_lr if isinstance(rbm, LinearHiddenRBM) else self.rbm_lr
            opt = torch.optim.SGD(rbm.parameters(), lr=lr, momentum=self.rbm_momentum)
            with torch.no_grad():
                history = [float(sum((rbm.visible_mean(rbm.p_h(c)) - c).pow(2).sum()
                                     for c in a.split(1024))) / a.shape[0]]
            for epoch in range(self.rbm_epochs):
                total = 0.0
                for idx in torch.randperm(a.shape[0], device=a.device).split(batch_size):
                    terms = rbm.cd_gradients({"x": a[idx]})  # .grad written in closed form
                    opt.step()
                    total += float(terms["recon"]) * len(idx)
                history.append(total / a.shape[0])
                for lg in self.loggers if self.attached else []:
                    lg.log_metrics({f"pretrain/rbm{i}_recon": history[-1]}, step=(i - 1) * self.rbm_epochs + epoch)
            if not all(math.isfinite(h) for h in history):
                raise UserError(f"RBM {i} of model.pretrain=rbm diverged (reconstruction errors {history}): "
                                "lower model.rbm_lr / model.rbm_code_lr")
            self.rbm_history.append(history)
            rbms.append(rbm)
            with torch.no_grad():
                a = torch.cat([rbm.p_h(c) for c in a.split(1024)])  # the next RBM's data
        self.rbms = rbms
        self.unroll(rbms)
        return rbms

    def on_train_start(self) -> None:
        # before the base's hook, which gives the processes of a data-parallel run their own random streams:
        # every process pretrains alike, and rank 0's RBMs are then shared so the replicas start equal
        if self.pretrain == "rbm" and not bool(self.rbm_pretrained) and self.rbm_epochs > 0:
            dm = self.trainer.datamodule
            if not isinstance(dm, TensorDataModule):
                raise UserError("model.pretrain=rbm needs one of genlab's datasets (a TensorDataModule)")
            self.pretrain_rbms(dm.tensors("train").x, dm.options.batch_size)
            if self.trainer.world_size > 1:
                for tensor in self.state_dict().values():
                    torch.distributed.broadcast(tensor, src=0)
            self.rbm_pretrained.fill_(True)
        super().on_train_start()

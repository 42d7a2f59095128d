"""The variational autoencoder family: p(h) = N(0, I), q(h|x) = N(μ(x), diag σ²(x)) and a
Bernoulli or Gaussian p(x|h); trained on the (β-weighted) ELBO, scored by the ELBO and by
the importance-weighted bound (IWAE) on −log p(x), all in nats per sample."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.capabilities import (
    Budget,
    CanBoundLikelihood,
    CanDecode,
    CanEncode,
    CanReconstruct,
    CanSample,
    HasCodeKL,
    LikelihoodBound,
)
from genlab.data.base import Batch
from genlab.errors import UserError
from genlab.models.autoencoder import CodeModel, NetFactory

LOG_2PI = math.log(2 * math.pi)
MAX_KL_DIMS_LOGGED = 64  # val/kl_dim/NN scalars are logged for codes up to this size


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, diag e^logvar) ‖ N(0, I)) per dimension, closed form: (B, L) -> (B, L) nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class VAE(CodeModel):
    """Variational autoencoder (Kingma & Welling 2014) with β, KL warm-up and free bits.

    The encoder gives 2·latent_dim numbers per input: μ and log σ² of q(h|x). p(x|h) is
    ``bernoulli`` (the decoder gives logits) or ``gaussian`` with a fixed σ or, with
    ``learn_sigma``, one learned scalar log σ shared by all dimensions: a σ per dimension
    would shrink to 0 on constant pixels (image borders) and the likelihood would diverge.
    """

    capabilities = frozenset({CanEncode, CanDecode, CanReconstruct, CanSample, CanBoundLikelihood, HasCodeKL})

    def __init__(
        self, *, net: NetFactory, latent_dim: int = 20, gaussian_sigma: float = 1.0, learn_sigma: bool = False,
        beta: float = 1.0, kl_warmup_epochs: int = 0, free_bits: float = 0.0, **kwargs: Any,
    ) -> None:
        """``kwargs``: data_info, likelihood, optimizer, scheduler (see CodeModel)."""
        super().__init__(net=net, latent_dim=latent_dim, **kwargs)
        if learn_sigma and self.likelihood != "gaussian":
            raise UserError("model.learn_sigma=true needs model.likelihood=gaussian")
        self.beta, self.kl_warmup_epochs, self.free_bits = beta, kl_warmup_epochs, free_bits
        self.learn_sigma = learn_sigma
        self.batches_per_epoch: int | None = None  # known once training starts (KL warm-up)
        self.num_classes = self.data_info.num_classes or 0
        cond = {"cond_dim": self.num_classes} if self.conditional else {}
        self.encoder, self.decoder = net(
            in_shape=self.data_info.shape, enc_out=2 * latent_dim, latent_dim=latent_dim, **cond
        )
        log_sigma = torch.tensor(math.log(gaussian_sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    # ---- the condition (none here; the conditional VAE overrides both) ----------------
    def condition_of(self, x: Tensor, y: Tensor | None) -> Tensor | None:
        """What the encoder and decoder are given besides x for the inputs x (B, *shape)."""
        return None

    def condition_for(self, n: int, y: Tensor | None) -> Tensor | None:
        """What the decoder is given besides h when there is no x (sampling, decoding)."""
        return None

    def q_params(self, x: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        out = self.encoder(x) if c is None else self.encoder(x, c)  # (B, 2L)
        mu, logvar = out.chunk(2, dim=1)
        return mu, logvar

    def decoder_raw(self, h: Tensor, c: Tensor | None) -> Tensor:
        return self.decoder(h) if c is None else self.decoder(h, c)  # raw: logits or means (B, *shape)

    # ---- densities -------------------------------------------------------------------
    def log_likelihood(self, raw: Tensor, x: Tensor) -> Tensor:
        """log p(x|h) (B,) in nats, normalising constants included, from the decoder's raw output."""
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(raw, x, reduction="none").flatten(1).sum(1)
        z = (x - raw) * torch.exp(-self.log_sigma)
        return (-0.5 * z.pow(2) - self.log_sigma - 0.5 * LOG_2PI).flatten(1).sum(1)

    def posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q(h|x) as (μ, log σ²), each (B, latent_dim)."""
        return self.q_params(x, self.condition_of(x, y))

    def elbo_terms(self, x: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """−log p(x|h) (B,) at one reparameterised h ~ q(h|x), and the KL per dimension (B, L)."""
        mu, logvar = self.q_params(x, c)
        h = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # gradients reach μ and σ
        return -self.log_likelihood(self.decoder_raw(h, c), x), gaussian_kl(mu, logvar)

    # ---- capabilities ----------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The posterior mean μ(x) (B, latent_dim)."""
        return self.posterior(x, y)[0]

    def decode(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x|h) (B, *shape) in data space."""
        return self.data_mean(self.decoder_raw(h, self.condition_for(h.shape[0], y)))

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x|h = μ(x)) (B, *shape)."""
        c = self.condition_of(x, y)
        return self.data_mean(self.decoder_raw(self.q_params(x, c)[0], c))

    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """The means of p(x|h) for n codes h ~ N(0, I): (n, *shape); one step, whatever the budget."""
        h = torch.randn(n, self.latent_dim, device=self.device)
        return self.data_mean(self.decoder_raw(h, self.condition_for(n, y)))

    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        """−ELBO and the IWAE bound with k = budget.samples, both in nats per sample."""
        return [
            LikelihoodBound("neg_elbo", "nats", self.neg_elbo,
                            "−ELBO: KL analytic, reconstruction term at one posterior draw"),
            LikelihoodBound("iwae_nll", "nats", lambda x, y: self.iwae_nll(x, budget.samples, budget.chunk, y),
                            f"importance-weighted bound on −log p(x), k = {budget.samples}"),
        ]

    def neg_elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B,) −ELBO in nats: analytic KL plus the reconstruction term at one posterior sample."""
        recon, kl = self.elbo_terms(x, self.condition_of(x, y))
        return recon + kl.sum(1)

    def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, latent_dim) KL(q(h_d|x) ‖ N(0, 1)) in nats."""
        return gaussian_kl(*self.posterior(x, y))

    def iwae_nll(self, x: Tensor, k: int = 100, chunk: int = 50, y: Tensor | None = None) -> Tensor:
        """(B,) −log (1/k Σ_i p(x, h_i)/q(h_i|x)), h_i ~ q(h|x) (Burda et al. 2016), in nats.

        The k samples are decoded ``chunk`` at a time (memory: chunk·B decoder outputs) and
        combined by a running logsumexp; each sample index draws its own (B, L) noise, so the
        result does not depend on the chunk size for the same random stream.
        """
        if k < 1 or chunk < 1:
            raise ValueError(f"iwae_nll needs k >= 1 and chunk >= 1, got k={k}, chunk={chunk}")
        c = self.condition_of(x, y)
        mu, logvar = self.q_params(x, c)  # (B, L)
        b, rest = x.shape[0], x.shape[1:]
        total = torch.full((b,), -math.inf, device=x.device)  # logsumexp of the log weights so far
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            eps = torch.stack([torch.randn_like(mu) for _ in range(m)])  # (m, B, L)
            h = mu + torch.exp(0.5 * logvar) * eps
            log_q = -0.5 * (LOG_2PI + logvar + eps.pow(2)).sum(-1)  # (m, B) log q(h|x)
            log_prior = -0.5 * (LOG_2PI + h.pow(2)).sum(-1)  # (m, B) log N(h; 0, I)
            xs = x.expand(m, *x.shape).reshape(m * b, *rest)  # row i·B + j is image j
            cs = None if c is None else c.repeat(m, 1)
            log_px = self.log_likelihood(self.decoder_raw(h.reshape(m * b, -1), cs), xs).view(m, b)
            total = torch.logaddexp(total, torch.logsumexp(log_px + log_prior - log_q, dim=0))
        return math.log(k) - total

    # ---- training --------------------------------------------------------------------
    def val_loss_record(self) -> dict[str, Any]:
        # val/loss is recon + β·KL: the negative ELBO only at β = 1, and a different quantity for each β
        what = "the negative ELBO" if self.beta == 1.0 else f"reconstruction + {self.beta:g} x KL"
        if self.free_bits > 0:
            what += f", free bits {self.free_bits:g}"
        return {**super().val_loss_record(), "means": what}

    def kl_weight(self, epoch: float | None = None) -> float:
        """β at a (fractional) training epoch: 0 → β linearly over kl_warmup_epochs, then β.

        epoch None: where training is now, counted per batch (the model's own count of training
        batches over the batches per epoch); before training has started, the full β.
        """
        if self.kl_warmup_epochs <= 0:
            return self.beta
        if epoch is None:
            if self.batches_per_epoch is None:
                return self.beta
            epoch = self.trained_batches / self.batches_per_epoch
        return self.beta * min(1.0, epoch / self.kl_warmup_epochs)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.batches_per_epoch = max(1, int(self.trainer.num_training_batches))

    def kl_penalty(self, kl_dims: Tensor) -> Tensor:
        """The KL term of the loss from per-dimension KLs (B, L): Σ_d max(mean_batch KL_d, λ).

        With free bits λ > 0 (Kingma et al. 2016) a dimension whose batch-mean KL is below λ
        gets no gradient pushing it further towards the prior; λ = 0 is the plain mean KL.
        """
        per_dim = kl_dims.mean(0)  # (L,)
        return per_dim.clamp(min=self.free_bits).sum() if self.free_bits > 0 else per_dim.sum()

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        """recon + β·KL. Training uses the warmed-up β; val/test use the target β, so val/loss
        (which picks the best checkpoint) means the same thing in every epoch."""
        x = batch["x"]
        recon, kl_dims = self.elbo_terms(x, self.condition_of(x, batch.get("y")))
        train = stage == "train"
        beta = self.kl_weight() if train else self.beta
        terms = {"recon": recon.mean(), "kl": kl_dims.sum(1).mean()}
        kl_term = self.kl_penalty(kl_dims) if self.free_bits > 0 else terms["kl"]  # same value, fewer ops
        terms["loss"] = terms["recon"] + (kl_term if beta == 1.0 else beta * kl_term)
        if train and self.kl_warmup_epochs > 0:
            terms["beta"] = torch.tensor(beta, device=x.device)
        if train and self.learn_sigma:
            terms["sigma"] = self.log_sigma.exp()
        if stage == "val" and self.latent_dim <= MAX_KL_DIMS_LOGGED:  # which dimensions are in use
            terms.update({f"kl_dim/{d:02d}": v for d, v in enumerate(kl_dims.mean(0))})
        return terms


class CVAE(VAE):
    """Conditional VAE: q(h|x, y) and p(x|h, y) with y one-hot; sampling picks the class.

    Without y, inputs x get the class under which the model finds them most likely
    (``infer_labels``), and decoding or sampling gets uniformly random classes.
    """

    conditional = True

    def onehot(self, y: Tensor) -> Tensor:
        return F.one_hot(y.long(), self.num_classes).float()  # (B, num_classes)

    def condition_of(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.onehot(self.infer_labels(x) if y is None else y.to(x.device))

    def condition_for(self, n: int, y: Tensor | None) -> Tensor:
        if y is None:
            y = torch.randint(self.num_classes, (n,), device=self.device)
        if len(y) != n:
            raise ValueError(f"{n} codes but {len(y)} labels")
        return self.onehot(y.to(self.device))

    @torch.no_grad()
    def infer_labels(self, x: Tensor) -> Tensor:
        """(B,) argmax_y of the ELBO of x given y at h = μ(x, y) (deterministic: no sampling):
        log p(x|μ, y) − KL(q(h|x, y) ‖ p(h)), each class tried in one batch of K·B."""
        k, b = self.num_classes, x.shape[0]
        ys = torch.arange(k, device=x.device).repeat_interleave(b)  # (K·B,), class-major
        xs = x.repeat(k, *[1] * (x.dim() - 1))  # (K·B, *shape)
        c = self.onehot(ys)
        mu, logvar = self.q_params(xs, c)
        score = self.log_likelihood(self.decoder_raw(mu, c), xs) - gaussian_kl(mu, logvar).sum(1)
        return score.view(k, b).argmax(0)

"""The restricted Boltzmann machine: energy E(v, h) = −aᵀv − bᵀh − vᵀWh over binary hidden units h and
Bernoulli visible units v (or Gaussian ones of unit variance: E = ½‖v − a‖² − bᵀh − vᵀWh) for
real-valued data. Trained by contrastive divergence (CD-k) or persistent CD (PCD); scored by the
test log-likelihood with log Z from annealed importance sampling (Salakhutdinov & Murray 2008),
or exactly by enumerating the hidden states when there are few of them.

Free energies, with s_j(v) = b_j + vᵀW_j the input of hidden unit j:
  bernoulli  F(v) = −aᵀv − Σ_j softplus(s_j(v))
  gaussian   F(v) = ½‖v − a‖² − Σ_j softplus(s_j(v))
so p(v) = e^{−F(v)} / Z. The update is the CD gradient, not backprop through the chain: the
surrogate F(v_data).mean() − F(v_model).mean() with the model's samples held fixed has the
gradient <∂E/∂θ>_data − <∂E/∂θ>_model (hidden units summed out). Training writes that gradient in
closed form (``RBM.cd_gradients``: two products for W, means for the biases) without building the
surrogate's graph, its one training path; validation and testing report the surrogate's terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.capabilities import (
    Budget,
    CanBoundLikelihood,
    CanEncode,
    CanReconstruct,
    CanSample,
    LikelihoodBound,
    Needs,
    PictureRequest,
    PictureSpec,
)
from genlab.data.base import Batch, DataInfo
from genlab.draws import bernoulli16
from genlab.errors import UserError
from genlab.figures import Grid
from genlab.models.base import GenerativeModel, OptimizerFactory

LOG_2PI = math.log(2 * math.pi)
MAX_EXACT_HIDDEN = 20  # log Z by enumeration over 2^H hidden states up to this many hidden units
CHAIN_SWEEPS = (0, 1, 2, 5, 10, 30, 100, 300, 1000, 3000, 10000)  # the chain pictures' sweeps, below sample_steps


def bernoulli(p: Tensor) -> Tensor:
    """Binary samples with probabilities p; a NaN p gives 0 (torch.bernoulli would raise), so a diverged
    model reaches the loss's finiteness check, which names the term and the step. The comparison is
    written in place into the uniform draws (1.0 / 0.0 in p's dtype): the same draws and samples as
    ``(U < p).to(p.dtype)`` without a bool tensor and its cast."""
    return torch.rand_like(p).lt_(p)


class RBM(GenerativeModel):
    """Bernoulli–Bernoulli (or Gaussian–Bernoulli) RBM; W (D, H), visible biases a (D,), hidden biases b (H,).

    ``cd_k`` Gibbs steps per update, from the data (CD-k) or from persistent chains kept across batches
    (``persistent``: PCD, ``n_chains`` chains started from the first training batch). ``weight_decay`` adds
    ½λ‖W‖² to the loss; ``sparsity_target`` ρ adds ``sparsity_cost`` times the cross-entropy between ρ
    and each hidden unit's probability on the data (its gradient on the unit's input is q − ρ); momentum
    is the optimiser's. log Z by AIS with ``ais_runs`` runs (None: the evaluator's budget.samples) over
    ``ais_betas`` temperatures; ``sample_steps`` Gibbs steps per sample by default. Training writes the CD
    gradient in closed form (``cd_gradients``, ``writes_gradients``), never back-propagating the surrogate.
    Hidden units are binary here; a subclass changes them through ``hidden_free`` and ``hidden_mean``
    (stacked.LinearHiddenRBM: linear ones), and the closed form follows. ``train_recon``:
    the training terms include the reconstruction error (train/recon), one more (B, H) x (H, D) product per
    update (a sixth of a 784-500 update; off by default); validation and test report it regardless.
    ``chain_state``: what PCD keeps between updates, the chains' visible states (resampled through h under the
    updated weights) or their hidden states, sampled from the previous update's p(h | v_model) as Tieleman
    (2008) and scikit-learn do (one product fewer). ``updates_per_batch``: the loader's batch is cut into that
    many minibatches, one SGD update each, in order.
    """

    capabilities = frozenset({CanEncode, CanReconstruct, CanSample, CanBoundLikelihood})

    needs: ClassVar[Needs] = Needs(image=True)  # bounded images (C, H, W), flattened here
    ranks_checkpoints: ClassVar[bool] = False  # the CD surrogate does not rank checkpoints: the latest is tested
    writes_gradients: ClassVar[bool] = True  # training's gradient: cd_gradients

    def __init__(
        self, *, data_info: DataInfo, n_hidden: int = 64, visible: str = "bernoulli", cd_k: int = 1,
        persistent: bool = False, n_chains: int = 100, weight_decay: float = 0.0, sparsity_target: float | None = None,
        sparsity_cost: float = 0.0, ais_runs: int | None = 100, ais_betas: int = 1000, sample_steps: int = 1000,
        init_std: float = 0.01, train_recon: bool = False,
        chain_state: str = "visible", updates_per_batch: int = 1, optimizer: OptimizerFactory | None = None,
        scheduler: Callable[..., Any] | None = None, compile: bool = False,
    ) -> None:
        super().__init__(data_info=data_info, optimizer=optimizer, scheduler=scheduler, compile=compile,
                         updates_per_batch=updates_per_batch)
        if visible == "bernoulli" and not data_info.bounded:
            raise UserError(f"model.visible=bernoulli needs data in [0, 1]; '{data_info.name}' holds unbounded values.")
        self.n_hidden, self.visible, self.cd_k, self.persistent = n_hidden, visible, cd_k, persistent
        self.weight_decay, self.sparsity_target, self.sparsity_cost = weight_decay, sparsity_target, sparsity_cost
        self.ais_runs, self.ais_betas, self.sample_steps = ais_runs, ais_betas, sample_steps
        self.latent_dim = n_hidden  # the code: p(h = 1 | v)
        d = data_info.dim
        self.W = nn.Parameter(init_std * torch.randn(d, n_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(d))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))
        # PCD's persistent visible states, started from the first training batch (chains_started) and kept in
        # checkpoints, so a resumed run takes them up
        self.register_buffer("chains", torch.zeros(n_chains if persistent else 0, d))
        self.chain_state = chain_state
        hidden_chains = persistent and chain_state == "hidden"
        self.register_buffer("hidden_chains", torch.zeros(n_chains if hidden_chains else 0, n_hidden))
        self.register_buffer("chains_started", torch.tensor(False))
        self.last_log_z: tuple[float, float] | None = None  # the latest AIS estimate of log Z and its standard error
        self.train_recon = train_recon

    # ---- the energy model -------------------------------------------------------------
    def flat(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)

    def hidden_input(self, v: Tensor, beta: float = 1.0) -> Tensor:
        """β(b + vW): (B, D) -> (B, H)."""
        s = torch.addmm(self.hidden_bias, v, self.W)
        return s if beta == 1.0 else beta * s

    def visible_term(self, v: Tensor, bias: Tensor | None = None) -> Tensor:
        """The visible units' own part of −E: aᵀv (bernoulli) or −½‖v − a‖² (gaussian), (B, D) -> (B,)."""
        a = self.visible_bias if bias is None else bias
        return v @ a if self.visible == "bernoulli" else -0.5 * (v - a).pow(2).sum(1)

    def hidden_free(self, s: Tensor) -> Tensor:
        """The hidden units' part of −F given their inputs s = b + vW (B, H): Σ_j softplus(s_j), (B,)."""
        return F.softplus(s).sum(1)

    def hidden_mean(self, s: Tensor) -> Tensor:
        """E[h | v] from the hidden inputs s (B, H): σ(s), the derivative of ``hidden_free`` (the CD gradient's q)."""
        return torch.sigmoid(s)

    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = −log Σ_h e^{−E(v, h)}: (B, D) -> (B,) nats."""
        return -self.visible_term(v) - self.hidden_free(self.hidden_input(v))

    def p_h(self, v: Tensor, beta: float = 1.0) -> Tensor:
        """E[h | v] (B, H), for binary units p(h = 1 | v) (at inverse temperature β)."""
        return self.hidden_mean(self.hidden_input(v, beta))

    def visible_mean(self, h: Tensor, beta: float = 1.0, base: Tensor | None = None) -> Tensor:
        """The mean of p(v | h) (B, D); with β < 1, of AIS's intermediate p_β with base visible biases ``base``."""
        field = torch.addmm(self.visible_bias, h, self.W.t())
        if beta != 1.0:
            field = beta * field + (1 - beta) * (self.visible_bias if base is None else base)
        return torch.sigmoid(field) if self.visible == "bernoulli" else field

    def sample_visible(self, mean: Tensor, draw: Callable[[Tensor], Tensor] = bernoulli) -> Tensor:
        return draw(mean) if self.visible == "bernoulli" else mean + torch.randn_like(mean)

    def gibbs(self, v: Tensor, steps: int, draw: Callable[[Tensor], Tensor] = bernoulli) -> tuple[Tensor, Tensor]:
        """``steps`` Gibbs sweeps v → h → v from v (B, D): the last visible sample and its mean; ``draw``
        samples the binary units (``bernoulli16`` in training)."""
        mean = v
        for _ in range(steps):
            h = draw(self.p_h(v))
            mean = self.visible_mean(h)
            v = self.sample_visible(mean, draw)
        return v, mean

    # ---- capabilities ------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """p(h = 1 | v = x) (B, n_hidden)."""
        return self.p_h(self.flat(x))

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """One mean-field Gibbs step: the mean of p(v | h = p(h = 1 | x)), (B, *shape)."""
        return self.to_data(self.visible_mean(self.encode(x)))

    def to_data(self, v: Tensor) -> Tensor:
        out = v.view(-1, *self.data_info.shape)
        return out.clamp(0, 1) if self.visible == "gaussian" and self.data_info.bounded else out

    def random_visible(self, n: int) -> Tensor:
        """Random chain starts: fair coins (bernoulli), N(a, I) (gaussian)."""
        d = self.data_info.dim
        if self.visible == "bernoulli":
            return bernoulli(torch.full((n, d), 0.5, device=self.device))
        return self.visible_bias.detach() + torch.randn(n, d, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, steps: int | None = None) -> Tensor:
        """The visible means after ``steps`` Gibbs sweeps (default ``sample_steps``) from random starts: (n, *shape).
        Chains from data starts: ``chain_frames``."""
        steps = self.sample_steps if steps is None else steps
        v = self.random_visible(n)
        if steps < 1:
            return self.to_data(v)
        return self.to_data(self.gibbs(v, steps)[1])

    @torch.no_grad()
    def chain_frames(self, x: Tensor, sweeps: Sequence[int]) -> Tensor:
        """Gibbs chains started from the data x (B, *shape): the visible means after each number of
        ``sweeps`` (increasing; 0 is x itself), (len(sweeps), B, *shape)."""
        v, mean, done, frames = self.flat(x), self.flat(x), 0, []
        for target in sweeps:
            if target > done:
                v, mean = self.gibbs(v, target - done)
                done = target
            frames.append(self.to_data(mean))
        return torch.stack(frames)

    def filters(self, n: int) -> Tensor:
        """The first n hidden units' weights (rows of Wᵀ) as images (≤ n, *shape), each min-max scaled."""
        w = self.W.detach().t()[:n]  # (n, D)
        lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
        return ((w - lo) / (hi - lo).clamp_min(1e-12)).view(-1, *self.data_info.shape)

    def pictures(self, request: PictureRequest) -> list[PictureSpec]:
        """At the test's end, on images: Gibbs chains from ``request.columns`` test images (columns), a row per
        number of sweeps up to ``sample_steps`` (``gibbs_chains.png``); as many chains from the sampler's own
        random starts (rows), a column per number of sweeps (``gibbs_from_noise.png``: how ``sample`` turns
        noise into an image); and the first columns² hidden units' weights as images (``filters.png``)."""
        if request.moment != "test" or not request.info.is_image:
            return []

        cols = request.columns
        budget = self.sample_steps
        sweeps = [k for k in CHAIN_SWEEPS if k < budget] + [budget]

        def chains() -> list[Grid]:
            frames = self.chain_frames(request.pick("test", cols).to(self.device), sweeps)  # (rows, cols, *shape)
            title = "Gibbs chains from test images (columns): visible means after each number of sweeps (rows)"
            return [Grid(frames.flatten(0, 1).float().cpu(), cols, [f"{k} sweeps" for k in sweeps], title)]

        def from_noise() -> list[Grid]:
            starts = self.random_visible(cols).view(cols, *self.data_info.shape)  # sample's own starts
            frames = self.chain_frames(starts, sweeps)  # (sweeps, chains, *shape)
            title = ("Gibbs chains from noise (rows, the sampler's random starts): visible means after each "
                     "number of sweeps (columns)")
            return [Grid(frames.transpose(0, 1).flatten(0, 1).float().cpu(), len(sweeps),
                         [f"chain {i + 1}" for i in range(cols)], title, [str(k) for k in sweeps],
                         xlabel="Gibbs sweeps from the random start")]

        def filters() -> list[Grid]:
            title = "learned filters: each hidden unit's weights, scaled to [0, 1] one by one"
            return [Grid(self.filters(cols * cols).detach().float().cpu(), cols, (), title)]

        return [PictureSpec("test/gibbs_chains", "gibbs_chains.png", chains, bounded=True),
                PictureSpec("test/gibbs_from_noise", "gibbs_from_noise.png", from_noise, bounded=True),
                PictureSpec("test/filters", "filters.png", filters, bounded=True)]

    def likelihood_bounds(self, budget: Budget) -> list[LikelihoodBound]:
        """−log p(x) = F(x) + log Z in nats per image: log Z by AIS (computed once here, for the whole
        evaluation), and exactly by enumeration when n_hidden <= 20."""
        runs = self.ais_runs or budget.samples
        log_z, se = self.ais_log_z(runs, self.ais_betas)
        self.last_log_z = (log_z, se)
        bounds = [LikelihoodBound("ais_nll", "nats", lambda x, y: self.free_energy(self.flat(x)) + log_z,
                                  f"F(x) + log Z, log Z = {log_z:.3f} ± {se:.3f} by AIS "
                                  f"({runs} runs, {self.ais_betas} temperatures)",
                                  extras={"ais_log_z": (log_z, "nats"), "ais_log_z_se": (se, "nats")})]
        if self.n_hidden <= MAX_EXACT_HIDDEN:
            exact = self.exact_log_z()
            bounds.append(LikelihoodBound("exact_nll", "nats", lambda x, y: self.free_energy(self.flat(x)) + exact,
                                          f"F(x) + log Z, log Z = {exact:.3f} by enumerating 2^{self.n_hidden} "
                                          "hidden states", extras={"exact_log_z": (exact, "nats")}))
        return bounds

    # ---- the partition function ----------------------------------------------------------
    @torch.no_grad()
    def exact_log_z(self, chunk: int = 1 << 14) -> float:
        """log Z = log Σ_h e^{−F(h)}, summing v out in closed form for each of the 2^H hidden states:
        bernoulli −F(h) = bᵀh + Σ_i softplus(a_i + (Wh)_i); gaussian −F(h) = bᵀh + ½‖a + Wh‖² − ½‖a‖² + D/2·log 2π."""
        h_units = self.n_hidden
        if h_units > MAX_EXACT_HIDDEN:
            raise UserError(f"the exact log Z enumerates 2^n_hidden states: n_hidden={h_units} > {MAX_EXACT_HIDDEN}")
        W, a, b = self.W.double(), self.visible_bias.double(), self.hidden_bias.double()
        bits = 2 ** torch.arange(h_units, device=W.device)
        total = torch.tensor(-math.inf, dtype=torch.float64, device=W.device)
        for start in range(0, 2**h_units, chunk):
            idx = torch.arange(start, min(start + chunk, 2**h_units), device=W.device)
            h = ((idx[:, None] & bits) > 0).double()  # (n, H)
            field = a + h @ W.t()  # (n, D)
            if self.visible == "bernoulli":
                neg_f = h @ b + F.softplus(field).sum(1)
            else:
                neg_f = h @ b + 0.5 * field.pow(2).sum(1) - 0.5 * a.pow(2).sum() + 0.5 * a.numel() * LOG_2PI
            total = torch.logaddexp(total, torch.logsumexp(neg_f, 0))
        return float(total)

    def ais_log_p_star(self, v: Tensor, beta: float, base: Tensor) -> Tensor:
        """log p*_β(v) of AIS's intermediate model: the RBM at inverse temperature β mixed with the
        base model (no weights, visible biases ``base``, no hidden units): (B,)."""
        return ((1 - beta) * self.visible_term(v, base) + beta * self.visible_term(v)
                + F.softplus(self.hidden_input(v, beta)).sum(1))

    @torch.no_grad()
    def ais_log_z(self, runs: int = 100, betas: int = 1000, base: Tensor | None = None) -> tuple[float, float]:
        """log Z by annealed importance sampling (Salakhutdinov & Murray 2008) and its standard error.

        From the base model p_0 (visible units independent with biases ``base``, default the RBM's own;
        log Z_0 = Σ softplus(base) + H log 2, or D/2 log 2π + H log 2 for gaussian units) to the RBM
        p_1 over ``betas`` inverse temperatures spaced evenly in [0, 1], each with one Gibbs transition of
        the intermediate model, ``runs`` independent runs. The standard error of log Ẑ is the delta method's
        std(w) / (√runs · mean(w)) of the importance weights w.
        """
        if runs < 1 or betas < 2:
            raise ValueError(f"AIS needs runs >= 1 and betas >= 2, got runs={runs}, betas={betas}")
        base = (self.visible_bias if base is None else base).detach()
        d, h_units = self.data_info.dim, self.n_hidden
        if self.visible == "bernoulli":
            log_z0 = float(F.softplus(base).sum()) + h_units * math.log(2)
            v = bernoulli(torch.sigmoid(base).expand(runs, d))
        else:
            log_z0 = 0.5 * d * LOG_2PI + h_units * math.log(2)
            v = base + torch.randn(runs, d, device=base.device)
        schedule = torch.linspace(0, 1, betas).tolist()
        log_w = torch.zeros(runs, dtype=torch.float64, device=base.device)
        for prev, beta in zip(schedule[:-1], schedule[1:]):
            log_w += (self.ais_log_p_star(v, beta, base) - self.ais_log_p_star(v, prev, base)).double()
            if beta < 1.0:  # one Gibbs transition that leaves p_β invariant
                h = bernoulli(self.p_h(v, beta))
                v = self.sample_visible(self.visible_mean(h, beta, base))
        log_mean_w = torch.logsumexp(log_w, 0) - math.log(runs)
        w = torch.exp(log_w - log_w.max())  # scaled weights: the ratio std/mean is scale-free
        se = float(w.std() / (math.sqrt(runs) * w.mean())) if runs > 1 else math.inf
        return log_z0 + float(log_mean_w), se

    # ---- training ---------------------------------------------------------------------------
    def negative_samples(self, v_data: Tensor, stage: str) -> tuple[Tensor, Tensor | None]:
        """The model's samples v_model (N, D) for the negative phase: ``cd_k`` Gibbs sweeps from the data
        (CD-k) or, in training with ``persistent``, from the persistent chains (which keep the result), and
        with hidden chain states their hidden inputs b + v_model W (N, H) (else None): the new hidden
        states are sampled from them here, so both training paths draw the same numbers in the same order.
        Binary units are drawn by ``bernoulli16``: this is training's hot path."""
        with torch.no_grad():
            if self.persistent and stage == "train":
                if not bool(self.chains_started):  # the chains start from the first batch's images (repeated)
                    idx = torch.arange(self.chains.shape[0], device=v_data.device) % v_data.shape[0]
                    start = v_data.detach()[idx]
                    self.chains.copy_(bernoulli16(start) if self.visible == "bernoulli" else start)
                    if self.hidden_chains.numel():
                        self.hidden_chains.copy_(bernoulli16(self.p_h(self.chains)))
                    self.chains_started.fill_(True)
                if self.hidden_chains.numel():  # h -> v -> h, k times: the visible sample and its hidden input
                    h, s_model = self.hidden_chains, None
                    for _ in range(self.cd_k):
                        v_model = self.sample_visible(self.visible_mean(h), bernoulli16)
                        s_model = self.hidden_input(v_model)
                        h = bernoulli16(torch.sigmoid(s_model))
                    self.hidden_chains.copy_(h)
                    self.chains.copy_(v_model)
                    return v_model, s_model
                v_model, _ = self.gibbs(self.chains, self.cd_k, bernoulli16)
                self.chains.copy_(v_model)
            else:
                start = bernoulli16(v_data) if self.visible == "bernoulli" else v_data
                v_model, _ = self.gibbs(start, self.cd_k, bernoulli16)
        return v_model.detach(), None

    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        """The CD surrogate F(v_data).mean() − F(v_model).mean() (its gradient is the CD update) plus
        the weight decay and sparsity penalties; the data's free energy and the reconstruction error
        (squared error of one mean-field Gibbs step, per image) are logged beside it."""
        v = self.flat(batch["x"])
        v_model, _ = self.negative_samples(v, stage)
        s = self.hidden_input(v)  # (B, H), shared by the free energy, the reconstruction and the sparsity term
        f_data = (-self.visible_term(v) - self.hidden_free(s)).mean()
        q = self.hidden_mean(s).detach()
        terms = {"free_energy": f_data.detach(), "cd": f_data - self.free_energy(v_model).mean()}
        if self.train_recon or stage != "train":
            with torch.no_grad():
                terms["recon"] = self.recon_error(q, v)
        if self.weight_decay > 0:
            terms["weight_decay"] = 0.5 * self.weight_decay * self.W.pow(2).sum()
        if self.sparsity_target is not None and self.sparsity_cost > 0:
            rho = self.sparsity_target
            # cross-entropy of ρ against q = σ(s) per unit, less its minimum H(ρ); d/ds = q − ρ
            ce = F.binary_cross_entropy_with_logits(s, torch.full_like(s, rho), reduction="none")
            entropy = -(rho * math.log(rho) + (1 - rho) * math.log(1 - rho)) if 0 < rho < 1 else 0.0
            terms["sparsity"] = self.sparsity_cost * (ce.sum(1).mean() - self.n_hidden * entropy)
        terms["loss"] = terms["cd"] + sum((terms[k] for k in ("weight_decay", "sparsity") if k in terms),
                                          torch.zeros((), device=v.device))
        return terms

    @torch.no_grad()
    def cd_gradients(self, batch: Batch) -> dict[str, Tensor]:
        """``loss_terms(batch, "train")`` with the gradient of its "loss" written into each parameter's
        ``.grad`` in closed form, without an autograd graph: the same negative samples (the same random
        draws, in the same order) and the same terms, detached. With g = dLoss/ds (B, H) on the data's
        hidden inputs s = b + vW, −q/B from the CD term (q = ``hidden_mean(s)``, σ(s) for binary units)
        plus sparsity_cost·(q − ρ)/B,
          dW = vᵀg + v_mᵀq_m / N + λW     (D, H), v_m (N, D) the model's samples, q_m = σ(b + v_mW)
          db = Σ_rows g + mean(q_m)      (H,)
          da = mean(v_m) − mean(v)       (D,)  (for gaussian units too: the a of −(v − a) cancels)
        Replaces ``.grad`` (no accumulation): the caller steps the optimiser on it."""
        v = self.flat(batch["x"])  # (B, D)
        v_model, s_model = self.negative_samples(v, "train")  # (N, D), held fixed as in the surrogate
        n_data, n_model = v.shape[0], v_model.shape[0]
        s = self.hidden_input(v)  # (B, H)
        if s_model is None:  # (N, H); hidden chain states computed it already
            s_model = self.hidden_input(v_model)
        q, q_model = self.hidden_mean(s), self.hidden_mean(s_model)
        a = self.visible_bias
        # column sums rather than means (a mean costs two passes): da, and the mean of aᵀv
        v_sum, v_model_sum = v.sum(0).to(a.dtype), v_model.sum(0).to(a.dtype)  # (D,)
        if self.visible == "bernoulli":  # the mean of aᵀv is aᵀ(the mean of v): a dot product, not (B, D) products
            vis, vis_model = torch.dot(v_sum, a), torch.dot(v_model_sum, a)  # B and N times the means
        else:
            vis, vis_model = self.visible_term(v).sum(), self.visible_term(v_model).sum()
        # the mean free energies −(Σ visible term + Σ softplus(s)) / B, and the model's over N
        f_data = (vis + self.hidden_free(s).sum()).mul_(-1.0 / n_data)
        f_model = (vis_model + self.hidden_free(s_model).sum()).mul_(-1.0 / n_model)
        terms = {"free_energy": f_data, "cd": f_data - f_model}
        if self.train_recon:
            terms["recon"] = self.recon_error(q, v)
        if self.weight_decay > 0:
            terms["weight_decay"] = 0.5 * self.weight_decay * self.W.pow(2).sum()
        sparse = self.sparsity_target is not None and self.sparsity_cost > 0
        if sparse:
            rho, cost = self.sparsity_target, self.sparsity_cost
            ce = F.binary_cross_entropy_with_logits(s, torch.full_like(s, rho), reduction="none")
            entropy = -(rho * math.log(rho) + (1 - rho) * math.log(1 - rho)) if 0 < rho < 1 else 0.0
            terms["sparsity"] = cost * (ce.sum(1).mean() - self.n_hidden * entropy)
            g = (q * (-1.0 / n_data)).add_(q - rho, alpha=cost / n_data)  # (B, H): dLoss/ds on the data
            grad_w = torch.addmm(torch.mm(v_model.t(), q_model), v.t(), g, beta=1.0 / n_model)  # (D, H)
            grad_b = q_model.sum(0).mul_(1.0 / n_model).add_(g.sum(0))
        else:  # g = −q/B: the scale goes into the products' own alpha and beta
            grad_w = torch.addmm(torch.mm(v_model.t(), q_model), v.t(), q, beta=1.0 / n_model, alpha=-1.0 / n_data)
            grad_b = q_model.sum(0).mul_(1.0 / n_model).sub_(q.sum(0), alpha=1.0 / n_data)
        penalties = [terms[k] for k in ("weight_decay", "sparsity") if k in terms]
        terms["loss"] = terms["cd"] + sum(penalties) if penalties else terms["cd"]
        if self.weight_decay > 0:
            grad_w.add_(self.W, alpha=self.weight_decay)
        grad_a = v_model_sum.mul_(1.0 / n_model).sub_(v_sum, alpha=1.0 / n_data)
        for param, grad in ((self.W, grad_w), (self.visible_bias, grad_a), (self.hidden_bias, grad_b)):
            param.grad = grad.to(param.dtype)  # under bf16 autocast the products are bf16; .grad is the parameter's
        return terms

    def recon_error(self, q: Tensor, v: Tensor) -> Tensor:
        """Squared error of one mean-field Gibbs step, per image: ‖E[v | h = q] − v‖² averaged over the batch,
        q = p(h | v) (B, H), v (B, D). One dot product of the flat difference instead of a square, row sums
        and a mean; the difference is float32 under bf16 autocast (a bf16 mean minus float32 data)."""
        diff = (self.visible_mean(q) - v).flatten()
        return torch.dot(diff, diff) / v.shape[0]

    def gradient_terms(self, batch: Batch) -> dict[str, Tensor]:
        return self.cd_gradients(batch)

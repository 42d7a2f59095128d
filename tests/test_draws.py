"""genlab.draws.bernoulli16: Bernoulli draws at 16 bits, four to a 64-bit random word."""

from __future__ import annotations

import torch

from genlab.draws import bernoulli16


def test_the_16_bit_draws_have_the_asked_probabilities() -> None:
    torch.manual_seed(0)
    p = torch.tensor([0.0, 1e-6, 0.001, 0.1, 0.3, 0.5, 0.77, 0.999, 1.0, float("nan")])
    n = 200_000
    out = bernoulli16(p.repeat(n, 1))  # (n, 10): 2M draws, the 16-bit path
    assert out.dtype == torch.float32 and set(out.unique().tolist()) <= {0.0, 1.0}
    freq = out.double().mean(0)
    expected = p.double().nan_to_num(0.0)  # a NaN probability draws 0
    sd = (expected * (1 - expected) / n).sqrt()
    # within 5 standard deviations, plus the 2^-16 of the rule's resolution
    assert ((freq - expected).abs() <= 5 * sd + 2**-16).all(), (freq, expected)
    assert freq[0] == 0 and freq[8] == 1 and freq[9] == 0  # exactly never, always, and never for NaN


def test_draws_are_independent_across_the_lanes_of_a_word() -> None:
    torch.manual_seed(1)
    out = bernoulli16(torch.full((100_000, 4), 0.5))  # each row: the four lanes of one word
    corr = torch.corrcoef(out.T.double())
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.02  # 6 standard deviations of a correlation over 100k pairs


def test_small_tensors_and_half_precisions_draw_u_less_than_p() -> None:
    for p in (torch.rand(7, 9), torch.rand(100, 784).bfloat16()):
        torch.manual_seed(3)
        out = bernoulli16(p)
        torch.manual_seed(3)
        assert out.dtype == p.dtype and torch.equal(out, (torch.rand_like(p) < p).to(p.dtype))

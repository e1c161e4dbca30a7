"""Evaluation cost: importance draws taken in passes sized to a memory budget, sequences grouped
by length, and a progress bar on request."""
import math

import pyro
import pytest
import torch

from ppgen.evaluate import draw_bytes, draw_plan, heldout_log_weights, iwae_log_likelihood
from ppgen.evaluate.sequences import iwae_per_sequence, length_groups
from ppgen.guides import DiagonalNormalGuide, FilteringGuide
from ppgen.models import VAE
from ppgen.models.vrnn import VRNN


def test_draw_plan_keeps_all_draws_of_a_datapoint_together_when_they_fit():
    # 10_000 (datapoint, draw) pairs fit: all 1000 draws, 10 datapoints per pass
    assert draw_plan(447, 1000, per_draw=100, budget=1_000_000) == (10, 1000)
    # 300 pairs fit: one datapoint, its draws split into passes of 300
    assert draw_plan(447, 1000, per_draw=100, budget=30_000) == (1, 300)
    # never more datapoints than there are, never less than one draw
    assert draw_plan(3, 10, per_draw=1, budget=10 ** 9) == (3, 10)
    assert draw_plan(3, 10, per_draw=10 ** 9, budget=1) == (1, 1)
    with pytest.raises(ValueError, match="positive"):
        draw_plan(3, 0, per_draw=1)


def test_draw_bytes_counts_what_grows_with_the_draws(digits):
    torch.manual_seed(0)
    model = VAE.for_data(digits, 4, hidden=16)
    guide = DiagonalNormalGuide.for_model(model, hidden=16)
    state = torch.get_rng_state()
    per_draw = draw_bytes(model, guide, (digits.test[:5],))
    assert torch.equal(state, torch.get_rng_state())  # measuring draws nothing
    logits = digits.x_dim * 17 * 4  # one draw's 17-level logits, float32
    assert logits <= per_draw < 20 * logits


def test_planned_passes_give_the_weights_of_explicit_ones(digits):
    torch.manual_seed(0)
    model = VAE.for_data(digits, 4, hidden=16)
    guide = DiagonalNormalGuide.for_model(model, hidden=16)
    x = digits.test[:20]
    per_draw = draw_bytes(model, guide, (x,))
    budget = per_draw * 30  # 30 pairs per pass: one datapoint, draws 30 at a time
    pyro.set_rng_seed(1)
    planned = heldout_log_weights(model, guide, x, k=50, budget=budget)
    pyro.set_rng_seed(1)
    explicit = heldout_log_weights(model, guide, x, 50, 1, 30)
    torch.testing.assert_close(planned, explicit)
    assert planned.shape == (50, 20)


def test_progress_bar_counts_every_draw(digits, capsys):
    model = VAE.for_data(digits, 4, hidden=16)
    guide = DiagonalNormalGuide.for_model(model, hidden=16)
    iwae_log_likelihood(model, guide, digits.test[:7], k=6, progress=True)
    err = capsys.readouterr().err
    assert "IWAE log p(x), K=6" in err and "/42" in err  # a bar over K * N = 42 draws
    iwae_log_likelihood(model, guide, digits.test[:7], k=6)
    assert capsys.readouterr().err == ""  # library calls are quiet by default


def test_length_groups_sort_and_fill_the_budget():
    lengths = torch.tensor([3, 9, 5, 9, 1])
    mask = torch.arange(10) < lengths[:, None]
    groups = length_groups(mask, k=2, frame_bytes=1, budget=40)
    # longest first; a group of sequences of length <= L holds budget // (k * L) of them
    assert [(g.tolist(), frames) for g, frames in groups] == [([1, 3], 9), ([2, 0, 4], 5)]
    assert sorted(torch.cat([g for g, _ in groups]).tolist()) == list(range(5))


def test_sequences_in_length_groups_give_each_sequence_its_own_log_likelihood():
    """A model whose latents do not matter: log p(x_n) is exact whatever the draws, so grouping
    and cutting padding must reproduce each sequence's own value, in the data's order."""
    D, Z, H = 6, 2, 8
    logits = torch.randn(D)
    model = VRNN(D, Z, H, prior="standard")
    guide = FilteringGuide.for_model(model)
    with torch.no_grad():  # emissions ignore z and h; the guide is the prior N(0, 1)
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.copy_(logits)
        guide.head[-1].weight.zero_()
        guide.head[-1].bias.copy_(torch.cat([torch.zeros(Z), torch.full((Z,), math.log(math.expm1(1 - 1e-4)))]))
    lengths = torch.tensor([4, 7, 2, 7, 5])
    mask = torch.arange(9) < lengths[:, None]
    x = torch.bernoulli(torch.full((5, 9, D), 0.3)) * mask[..., None]
    exact = (torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1) * mask).sum(-1)
    got = iwae_per_sequence(model, guide, (x, mask), k=4, budget=1)  # a pass per draw and sequence
    torch.testing.assert_close(got, exact, atol=1e-3, rtol=0)
    assert not math.isnan(float(got.sum()))

"Tests for adalib.duo's s07 additions: the uniform-k training mix, the calibrated router offset, the sequence bootstrap (vs scipy), oracle placement; and moe.LabelRouter."
import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st
from scipy import stats
from sklearn.linear_model import LogisticRegression

from adalib import duo, moe

torch.set_num_threads(1)


def test_uniform_k_routes_cover_every_budget_uniformly():
    r = duo.uniform_k_routes((30000,), 5, generator=torch.Generator().manual_seed(0))
    nb = (r == duo.ROUTE_BIG).sum(-1)
    counts = torch.bincount(nb, minlength=6).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3                      # k uniform on 0..5
    assert set(r.unique().tolist()) == {duo.ROUTE_SMALL, duo.ROUTE_BIG}
    # given k, the big layers are uniform over positions
    pos = (r[nb == 2] == duo.ROUTE_BIG).float().mean(0).numpy()
    assert np.allclose(pos, 2 / 5, atol=0.03)
    again = duo.uniform_k_routes((30000,), 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r, again)
    mix = duo.route_mix(r)
    assert mix["share_of_tokens"].sum() == pytest.approx(1.0) and mix["share_skip"].iloc[0] == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=8, max_size=60), st.integers(0, 10_000))
def test_seq_bootstrap_matches_scipy_percentile(vals, seed):
    v = np.array(vals)
    if v.std() < 1e-6: return
    b = duo.seq_bootstrap(v, n_boot=4000, seed=seed)
    ref = stats.bootstrap((v,), np.mean, n_resamples=4000, method="percentile", random_state=seed).confidence_interval
    sd = v.std(ddof=1) / np.sqrt(len(v))
    assert b["mean"] == pytest.approx(v.mean())
    assert b["lo"] <= b["mean"] <= b["hi"]
    assert abs(b["lo"] - ref.low) < 0.25 * sd + 1e-9 and abs(b["hi"] - ref.high) < 0.25 * sd + 1e-9


def test_seq_bootstrap_bad_input():
    with pytest.raises(ValueError, match="at least 2"): duo.seq_bootstrap(np.ones((2, 2)))
    with pytest.raises(ValueError, match="level"): duo.seq_bootstrap([1.0, 2.0], level=1.5)


def test_calibrated_offset_meets_budget_and_is_monotone():
    torch.manual_seed(0)
    stream, _ = duo.arith_corpus(300, seed=0)
    m = duo.dual_llama(vocab_size=128, d_model=16, n_layers=4, n_heads=2, big=32, small=4, max_len=24)
    duo.train_dual(m, stream, steps=20, batch_size=8, seq_len=24, progress=False)
    cal = stream[: 24 * 16].view(16, 24)
    test_ids = stream[24 * 16: 24 * 32].view(16, 24)
    for k in (1, 2, 3):
        routers = duo.train_duo_router(m, stream, k, steps=20, batch_size=8, seq_len=24, seed=k)
        realized = []
        for o in (-4.0, 0.0, 4.0):
            for r in routers: r.offset = o
            realized.append(duo.router_eval(m, cal, routers)[1].float().mean().item())
        assert realized[0] <= realized[1] <= realized[2]
        duo.calibrate_router_offset(m, routers, cal, k)
        assert abs(duo.router_eval(m, cal, routers)[1].float().mean().item() - k) <= 0.1 * k
        assert abs(duo.router_eval(m, test_ids, routers)[1].float().mean().item() - k) <= 0.25 * k   # held-out: same stream, loose


class Shift(nn.Module):
    def __init__(self, v): super().__init__(); self.register_buffer("v", v)
    def forward(self, x): return self.v.expand_as(x)


def test_oracle_position_on_known_route():
    "3 layers; big helps only at layer 1 (harmful at 0): k=1 -> position 1 (centre 1 -> 0); k=2 -> layers 1, 2 (+0.5)."
    m = duo.dual_llama(vocab_size=5, d_model=16, n_layers=3, n_heads=2, big=32, small=4, max_len=16, seed=0).eval()
    E = m.model.embed_tokens.weight.detach()
    for layer in m.model.layers:
        nn.init.zeros_(layer.self_attn.o_proj.weight); layer.mlp.small = Shift(torch.zeros(16))
    m.model.layers[0].mlp.big = Shift(3.0 * E[0] / E[0].norm())
    m.model.layers[1].mlp.big = Shift(3.0 * E[2] / E[2].norm())
    m.model.layers[2].mlp.big = Shift(torch.zeros(16))
    res = duo.oracle_search(m, torch.full((2, 8), 2, dtype=torch.long), chunk=3)
    assert torch.allclose(duo.oracle_position(res, 1), torch.zeros(2))
    pos2 = duo.oracle_position(res, 2)
    assert (pos2 >= 0).all()        # never the harmful early layer when a tie-free choice exists
    with pytest.raises(ValueError, match="k must be"): duo.oracle_position(res, 0)


def test_label_router_matches_sklearn_and_beats_majority():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0.3).long() + (x[:, 0] > 1.0).long()
    base = moe.ThresholdRouter(8, 3).fit(x, torch.stack([x[:, 0], x[:, 1]], -1))
    lr = moe.LabelRouter(base, n_pcs=8).fit(x[:1500], y[:1500])
    pred = lr.route(x[1500:])
    acc = (pred == y[1500:]).float().mean().item()
    maj = (y[1500:] == torch.bincount(y[:1500]).argmax()).float().mean().item()
    assert acc > maj + 0.2
    ref = LogisticRegression(max_iter=500).fit(lr.features(x[:1500]), y[:1500].numpy())
    assert (ref.predict(lr.features(x[1500:])) == pred.numpy()).mean() > 0.99
    assert lr.route(x[:6].view(2, 3, 8)).shape == (2, 3)


def test_label_router_flops_counted():
    torch.manual_seed(0)
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 61, (4, 12))
    X, R = moe.collect_ffn_inputs(model, [ids], with_residual=True)
    moe.nested_from_dense(model, X, [16, 32, 64])
    routers = moe.fit_routers(model, X, R)
    lrs = [moe.LabelRouter(r, n_pcs=4).fit(x, moe.labels_at(moe.expert_errors(f, x, rr), 0.3))
           for r, x, rr, f in zip(routers, X, R, moe.nested_layers(model))]
    moe.set_policy(model, [("router", lr, 0.3) for lr in lrs])
    with moe.tracking(model): model(input_ids=ids)
    sh = moe.expert_shares(model)
    mean_w = (sh * np.array([16, 32, 64])).sum(1).mean()
    assert moe.flop_fraction(model) == pytest.approx(mean_w / 64 + 2 * 32 * (2 + 4) / (6 * 32 * 64))
    moe.set_policy(model, None)

"Tests for adalib.moe: nested permutation identity, oracle on a toy model with a known best route, budget loss, routed execution, bad inputs."
import math
import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.linear_model import Ridge
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP

from adalib import duo, moe

torch.set_num_threads(1)


def tiny_llama(seed=0, layers=3, d=32, d_ff=64, vocab=61):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=d_ff, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


# ---------------------------------------------------------------- nested permutation identity
def test_nested_permutation_reproduces_dense_logits():
    model = tiny_llama()
    ids = torch.randint(0, 61, (4, 20), generator=torch.Generator().manual_seed(1))
    am = torch.ones_like(ids); am[0, 15:] = 0
    with torch.no_grad(): ref = model(input_ids=ids, attention_mask=am).logits
    X, R = moe.collect_ffn_inputs(model, [(ids, am)], with_residual=True)
    assert X[0].shape == (int(am.sum()), 32) and R[0].shape == (int(am.sum()),)
    imps = moe.nested_from_dense(model, X, [8, 16, 32, 64])
    perms = [l.mlp.perm for l in model.model.layers]
    assert all(not torch.equal(p, torch.arange(64)) for p in perms)           # a real permutation happened
    for imp, p in zip(imps, perms): assert (imp[p][:-1] >= imp[p][1:]).all()    # most important first
    with torch.no_grad(): out = model(input_ids=ids, attention_mask=am).logits
    assert (out - ref).abs().max().item() < 1e-5


def test_neuron_importance_matches_definition():
    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2))
    x = torch.randn(30, 8)
    h = torch.nn.functional.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
    want = h.abs().mean(0) * mlp.down_proj.weight.norm(dim=0)
    assert torch.allclose(moe.neuron_importance(mlp, x), want, atol=1e-6)


def test_sliced_equals_masked_and_flops():
    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=16, intermediate_size=48, num_attention_heads=2))
    f = moe.NestedFFN(mlp, [12, 24, 48], torch.randperm(48))
    x = torch.randn(3, 7, 16)
    idx = torch.randint(0, 3, (3, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        f.policy, f.mode = ("experts", idx), "masked"; a = f(x)
        f.mode = "sliced"; tm = {}; f.timer = tm; b = f(x)
        outs = f.expert_outputs(x.reshape(-1, 16))
    assert torch.allclose(a, b, atol=1e-5)
    want = torch.stack([outs[j][i] for i, j in enumerate(idx.flatten().tolist())]).view(3, 7, 16)
    assert torch.allclose(a, want, atol=1e-5)
    assert set(tm) == {"routing", "gather_scatter", "matmul"} and all(v >= 0 for v in tm.values())
    assert moe.ffn_flops(16, 48) == 6 * 16 * 48


def test_fast_sliced_equals_reference_on_mixed_routes():
    # the fast path (scratch buffers, in-place silu, addmm_) against the first implementation and the masked path
    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=24, intermediate_size=96, num_attention_heads=2))
    f = moe.NestedFFN(mlp, [8, 24, 56, 96], torch.randperm(96))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 33, 24, generator=g)
    routes = [("experts", torch.randint(0, 4, (5, 33), generator=g)),
              ("experts", torch.tensor([3] + [0] * 164).view(5, 33)),          # one wide token, the rest narrow
              ("static", 40), ("static", 0), ("static", 96), ("static", 1)]
    with torch.no_grad():
        for pol in routes:
            f.policy = pol
            f.mode = "sliced"; fast = f(x)
            f.mode = "sliced_reference"; ref = f(x)
            f.mode = "masked"; masked = f(x)
            assert (fast - ref).abs().max().item() <= 1e-6, pol
            assert (fast - masked).abs().max().item() <= 1e-5, pol
        for _ in range(3):                                       # arbitrary widths, 0 and non-expert ones included
            w = torch.tensor([0, 1, 7, 8, 50, 95, 96])[torch.randint(0, 7, (5, 33), generator=g)]
            assert (f._sliced(x, w, None) - f._sliced_reference(x, w)).abs().max().item() <= 1e-6
        f.policy, f.mode = ("experts", torch.randint(0, 4, (5, 33), generator=g)), "sliced"
        a = f(x); b = f(x * 2)                                   # shared scratch buffers do not alias outputs
        assert not torch.equal(a, b) and torch.equal(a, f(x))
    x.requires_grad_(True)                                        # under autograd the fast path falls back
    f(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_full_width_nested_logits_equal_dense_in_every_mode():
    model = tiny_llama(seed=2)
    ids = torch.randint(0, 61, (3, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(): ref = model(input_ids=ids).logits
    X, R = moe.collect_ffn_inputs(model, [ids], with_residual=True)
    moe.nested_from_dense(model, X, [8, 16, 32, 64])
    routers = moe.fit_routers(model, X, R)
    full = [None, ("static", 64), ("experts", torch.full((3, 17), 3)), [("router", r, 1e-12) for r in routers]]
    for pol in full:
        for mode in ("masked", "sliced", "sliced_reference"):
            moe.set_policy(model, pol, mode)
            with torch.no_grad(): out = model(input_ids=ids).logits
            assert (out - ref).abs().max().item() < 1e-5, (pol if not isinstance(pol, list) else "router", mode)


def test_flop_fraction_static_and_router_overhead():
    model = tiny_llama()
    ids = torch.randint(0, 61, (2, 10))
    X, R = moe.collect_ffn_inputs(model, [ids], with_residual=True)
    moe.nested_from_dense(model, X, [16, 32, 64])
    moe.set_policy(model, ("static", 16))
    with moe.tracking(model): model(input_ids=ids)
    assert moe.flop_fraction(model) == pytest.approx(0.25)
    routers = moe.fit_routers(model, X, R)
    moe.set_policy(model, [("router", r, 0.5) for r in routers])
    with moe.tracking(model): model(input_ids=ids)
    sh = moe.expert_shares(model)
    mean_w = (sh * np.array([16, 32, 64])).sum(1).mean()
    assert moe.flop_fraction(model) == pytest.approx(mean_w / 64 + 2 * 32 * 2 / (6 * 32 * 64))


# ---------------------------------------------------------------- oracle on a toy with a known best route
class Shift(nn.Module):
    "An FFN stand-in that adds a fixed vector to every token."
    def __init__(self, v): super().__init__(); self.register_buffer("v", v)
    def forward(self, x): return self.v.expand_as(x)


def known_route_model():
    """3 layers, attention switched off (o_proj = 0) so tokens do not interact; small FFNs output 0.
    Big FFNs: layer 0 pushes towards a wrong token (harmful), layer 1 towards the target (helpful),
    layer 2 adds nothing. Input and target are always token 2. Best route with 1 big layer: big at
    layer 1; with 2: big at layers 1 and 2."""
    m = duo.dual_llama(vocab_size=5, d_model=16, n_layers=3, n_heads=2, big=32, small=4, max_len=16, seed=0).eval()
    E = m.model.embed_tokens.weight.detach()
    for layer in m.model.layers:
        nn.init.zeros_(layer.self_attn.o_proj.weight)
        layer.mlp.small = Shift(torch.zeros(16))
    m.model.layers[0].mlp.big = Shift(3.0 * E[0] / E[0].norm())
    m.model.layers[1].mlp.big = Shift(3.0 * E[2] / E[2].norm())
    m.model.layers[2].mlp.big = Shift(torch.zeros(16))
    return m


def test_oracle_finds_known_best_route():
    m = known_route_model()
    ids = torch.full((2, 8), 2, dtype=torch.long)
    res = duo.oracle_search(m, ids, chunk=3)
    assert res.losses.shape == (2, 7, 8)
    S, B = duo.ROUTE_SMALL, duo.ROUTE_BIG
    _, i1 = res.best(1)
    assert (res.patterns[i1] == torch.tensor([S, B, S])).all()
    _, i2 = res.best(2)
    assert (res.patterns[i2] == torch.tensor([S, B, B])).all() or \
        torch.allclose(res.losses[..., res.pattern_index([S, B, B])], res.best(2)[0])
    # helpful layer beats all-big (which includes the harmful layer) and all-small
    assert (res.best(1)[0] < res.all_big()).all() and (res.best(1)[0] < res.all_small()).all()
    d = duo.difficulty_labels(res, 1)
    assert torch.allclose(d, res.all_small() - res.losses[..., res.pattern_index([S, B, S])])
    assert (d > 0).all()
    # at most k: with k=3 allowed the best is still a pattern without the harmful layer
    _, i3 = res.best(3, exact=False)
    assert (res.patterns[i3][..., 0] == S).all()


def test_oracle_matches_brute_force_and_random_baseline_bounds():
    torch.manual_seed(0)
    m = duo.dual_llama(vocab_size=13, d_model=16, n_layers=3, n_heads=2, big=32, small=4, max_len=16).eval()
    ids = torch.randint(0, 13, (3, 9), generator=torch.Generator().manual_seed(3))
    res = duo.oracle_search(m, ids, chunk=5)
    for c, p in enumerate(res.patterns):
        with duo.set_routes(m, p.expand(3, 9, 3)): assert torch.allclose(moe.token_losses(m, ids), res.losses[..., c], atol=1e-6)
    for k in range(4):
        v, i = res.best(k)
        sel = res.losses[..., (res.n_big() == k)]
        assert torch.allclose(v, sel.min(-1).values)
    # k = L: the only pattern is all-big, random with k = L is all-big too
    rb = duo.best_of_random(m, ids, k=3, n=2)
    assert torch.allclose(rb, res.all_big(), atol=1e-6)
    assert duo.route_patterns(4).shape == (16, 4) and duo.route_patterns(4, 2).shape == (6, 4)


def test_set_routes_skip_path():
    m = known_route_model()
    ids = torch.full((1, 5), 2, dtype=torch.long)
    skip = torch.zeros(1, 5, 3, dtype=torch.long)
    small = torch.ones(1, 5, 3, dtype=torch.long)
    with duo.set_routes(m, skip): a = moe.token_losses(m, ids)
    with duo.set_routes(m, small): b = moe.token_losses(m, ids)
    assert torch.allclose(a, b)      # small FFNs output 0 here, so skip == small
    assert all(l.mlp.route is None for l in m.model.layers)   # routes cleared after the block


# ---------------------------------------------------------------- budget loss and routers
def test_budget_loss_values_and_gradient():
    u = torch.tensor([0.5, 1.5, 2.5], requires_grad=True)
    assert duo.budget_loss(u, 1.5).item() == pytest.approx(0.0)
    assert duo.budget_loss(u, 1.0).item() == pytest.approx(0.25)
    assert duo.budget_loss(u, 2.0, mode="max").item() == 0.0
    assert duo.budget_loss(u, 1.0, mode="max").item() == pytest.approx(0.25)
    duo.budget_loss(u, 1.0).backward()
    assert (u.grad > 0).all()


def test_budget_loss_trains_router_to_budget():
    torch.manual_seed(0)
    r = duo.Top1Router(8, 2)
    x = torch.randn(512, 8)
    opt = torch.optim.Adam(r.parameters(), lr=0.05)
    for _ in range(300):
        loss = duo.budget_loss(r.probs(x)[:, 1], 0.3)
        opt.zero_grad(); loss.backward(); opt.step()
    assert r.probs(x)[:, 1].mean().item() == pytest.approx(0.3, abs=0.01)


def test_duo_router_training_moves_usage_towards_budget():
    torch.manual_seed(0)
    m = duo.dual_llama(vocab_size=128, d_model=16, n_layers=3, n_heads=2, big=32, small=4, max_len=16)
    stream, _ = duo.arith_corpus(60, seed=0)
    ids = stream[:64].view(4, 16)
    for k in (1, 2):
        routers = duo.train_duo_router(m, stream, k, steps=25, batch_size=4, seq_len=16, lam=20.0, seed=0)
        _, nb = duo.router_eval(m, ids, routers)
        assert abs(nb.float().mean().item() - k) <= 1.0
    assert all(l.mlp.router is None for l in m.model.layers)
    assert all(p.requires_grad for p in m.parameters())


def test_threshold_router_fit_matches_sklearn_ridge():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g); y = x @ torch.randn(6, 2, generator=g) + 0.1 * torch.randn(300, 2, generator=g)
    r = moe.ThresholdRouter(6, 3).fit(x, y, l2=0.05)
    sk = Ridge(alpha=0.05 * 300, fit_intercept=True).fit(x.double().numpy(), y.double().numpy())
    assert np.allclose(r.weight.numpy(), sk.coef_, atol=1e-5) and np.allclose(r.bias.numpy(), sk.intercept_, atol=1e-5)
    pred = r.predict(x)
    th = 0.5
    want = [next((j for j in range(2) if pred[i, j] <= math.log(th)), 2) for i in range(len(x))]
    assert r.route(x, th).tolist() == want


def test_random_routes_exact_k_and_seeded():
    a = duo.random_routes((10, 4), k=2, n_layers=5, generator=torch.Generator().manual_seed(7))
    b = duo.random_routes((10, 4), k=2, n_layers=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and ((a == duo.ROUTE_BIG).sum(-1) == 2).all()


def test_labels_at_smallest_expert_within_theta():
    e = torch.tensor([[0.5, 0.2, 0.05, 0.0], [0.01, 0.0, 0.0, 0.0], [0.9, 0.8, 0.7, 0.0]])
    assert moe.labels_at(e, 0.1).tolist() == [2, 0, 3]
    assert moe.labels_at(e, 0.6).tolist() == [0, 0, 3]


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("theta", [0.0, 1.0, -0.1, 2.0, float("nan"), "0.5"])
def test_theta_out_of_range_raises(theta):
    e = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="theta must be a number strictly between 0 and 1"):
        moe.labels_at(e, theta)
    with pytest.raises(ValueError, match="theta"):
        moe.ThresholdRouter(4, 3).route(torch.zeros(2, 4), theta)


@pytest.mark.parametrize("widths,msg", [([16, 8, 32], "strictly increasing"), ([8, 8, 32], "strictly increasing"),
                                        ([0, 32], "positive"), ([8, 16], "must equal the FFN width 32"),
                                        ([32], "at least two"), ([8.5, 32], "integers")])
def test_bad_expert_widths_raise(widths, msg):
    mlp = LlamaMLP(LlamaConfig(hidden_size=8, intermediate_size=32, num_attention_heads=2))
    with pytest.raises(ValueError, match=msg):
        moe.NestedFFN(mlp, widths)


def test_other_bad_inputs():
    with pytest.raises(TypeError, match="widths must be a sequence"): moe.check_widths(5)
    with pytest.raises(ValueError, match="mode"): duo.budget_loss(torch.zeros(3), 1.0, mode="min")
    with pytest.raises(ValueError, match="k must be in"): duo.route_patterns(3, 4)
    with pytest.raises(ValueError, match="k must be in"): duo.random_routes((2,), k=5, n_layers=3)
    with pytest.raises(ValueError, match="probs"): duo.random_routes((2,), probs=(0.5, 0.6, 0.1))
    with pytest.raises(ValueError, match="n_layers"): duo.dual_llama(n_layers=20)
    with pytest.raises(ValueError, match="fraction"): moe.calibrate_layer_thetas(None, [], [], 1.5)
    m = duo.dual_llama(vocab_size=11, d_model=16, n_layers=2, n_heads=2, big=32, small=4, max_len=8)
    with pytest.raises(ValueError, match="routes last dim"):
        with duo.set_routes(m, torch.ones(1, 4, 3, dtype=torch.long)): pass
    with pytest.raises(ValueError, match="route shape"):
        with duo.set_routes(m, torch.ones(1, 3, 2, dtype=torch.long)): m(input_ids=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="budget k"): duo.train_duo_router(m, torch.zeros(100, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="NestedFFN"): moe.set_policy(m, None)
    dense = tiny_llama(layers=1)
    with pytest.raises(ValueError, match="no tracked tokens"):
        X = moe.collect_ffn_inputs(dense, [torch.zeros(1, 3, dtype=torch.long)])
        moe.nested_from_dense(dense, X, [32, 64]); moe.flop_fraction(dense)
    f = dense.model.layers[0].mlp; f.policy = ("static", 100)
    with pytest.raises(ValueError, match="static width"): f(torch.zeros(1, 2, 32))
    f.policy = ("bogus",)
    with pytest.raises(ValueError, match="unknown NestedFFN policy"): f(torch.zeros(1, 2, 32))


def test_answer_accuracy_matches_greedy_generation():
    model = tiny_llama(seed=4, layers=2, vocab=23)
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 23, (n,), generator=g).tolist() for n in (4, 7, 5, 6)]
    with torch.no_grad():
        greedy = [model.generate(input_ids=torch.tensor([p]), max_new_tokens=2, do_sample=False, pad_token_id=0)[0, len(p):].tolist() for p in prompts]
    answers = [greedy[0], [greedy[1][0], (greedy[1][1] + 1) % 23], greedy[2][:1], [(greedy[3][0] + 1) % 23]]
    acc = moe.answer_accuracy(model, prompts, answers, pad_id=0, batch_size=3)
    assert acc.tolist() == [True, False, True, False]

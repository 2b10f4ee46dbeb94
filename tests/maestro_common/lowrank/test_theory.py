"""Maestro's two theory results, checked numerically on small problems."""

import torch

from maestro_common.lowrank.layers import LowRankLinear
from maestro_common.lowrank.regularizers import group_lasso
from maestro_common.lowrank.samplers import MaestroSampler
from maestro_common.lowrank.shrinking import importance, shrink


def test_ordered_dropout_recovers_the_truncated_svd_for_every_k():
    """(a) Isotropic inputs, one random prefix per step: U_k V_kᵀ -> A_k and ‖u_i‖‖v_i‖ -> σ_i."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    out, inp = 6, 8
    sigma = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    p, _ = torch.linalg.qr(torch.randn(out, out, generator=g))
    q, _ = torch.linalg.qr(torch.randn(inp, out, generator=g))
    target = p @ torch.diag(sigma) @ q.T
    layer = LowRankLinear(inp, out, bias=False)
    sampler = MaestroSampler({"layer": out}, seed=0)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 3000)
    for _ in range(3000):
        x = torch.randn(256, inp, generator=g)  # isotropic: E‖(W-A)x‖² = ‖W-A‖²_F
        loss = (layer(x, rank=sampler.sample()["layer"]) - x @ target.T).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        for k in range(1, out + 1):
            best_k = p[:, :k] @ torch.diag(sigma[:k]) @ q[:, :k].T
            err = (layer.dense_weight(k) - best_k).norm() / best_k.norm()
            assert err < 0.05, f"rank {k}: relative error {err:.3f} to the truncated SVD"
        norms = layer.u.norm(dim=0) * layer.v.norm(dim=0)
        assert torch.allclose(norms, sigma, rtol=0.02), norms


def test_group_lasso_autoencoder_keeps_as_many_components_as_the_data_rank():
    """(b) A linear autoencoder with the group lasso on rank-3 data keeps 3 important components."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    n, d, k = 512, 10, 3
    data = torch.randn(n, k, generator=g) @ torch.randn(k, d, generator=g)  # rank 3
    ae = LowRankLinear(d, d, bias=False)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2000)
    for _ in range(2000):
        loss = (ae(data) - data).pow(2).sum(1).mean() + 0.05 * group_lasso(ae)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    imp = importance(ae)
    assert (imp[:k] > 0.1).all(), imp
    assert (imp[k:] < 1e-3 * imp[0]).all(), imp
    assert shrink(ae, eps=1e-3) == {"": k}  # a bare layer is the model: its name is ""
    assert ae.rank == k
    rel = ((ae(data) - data).norm() / data.norm()).item()
    assert rel < 0.2, rel  # the kept components still reconstruct the data

"""gradwise's batched Muon: same arithmetic as PyTorch's Muon, orthogonal updates, shapes handled."""

from __future__ import annotations

import copy

import pytest
import torch

from gradwise.optim.muon import Muon, orthogonalize


def matrices(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(24, 8), (8, 24), (8, 24), (16, 16), (8, 8)]  # tall and wide of one shape share a batch
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in shapes]


def run(opt_cls: type, params: list[torch.nn.Parameter], steps: int, **kw: object) -> None:
    opt = opt_cls(params, **kw)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def test_orthogonalize_brings_singular_values_near_one() -> None:
    g = torch.randn(3, 16, 48) * torch.logspace(-1, 1, 16)[:, None]  # condition number in the hundreds
    s = torch.linalg.svdvals(orthogonalize(g, dtype=torch.float32))
    assert s.min() > 0.5 and s.max() < 1.3  # Muon's quintic lands in about [0.7, 1.2], by design


@pytest.mark.parametrize("kind", ["random", "low rank", "wide spectrum"])
def test_the_gram_iteration_of_wide_fp32_matrices_is_the_plain_iteration(kind: str, monkeypatch) -> None:
    """Wide fp32 matrices iterate on their Gram matrix (fewer FLOPs): the same update, to fp32's rounding."""
    import gradwise.optim.muon as muon

    g = torch.Generator().manual_seed(0)
    x = {"random": lambda: torch.randn(4, 64, 256, generator=g),
         "low rank": lambda: torch.randn(4, 64, 3, generator=g) @ torch.randn(4, 3, 256, generator=g)
         + 1e-4 * torch.randn(4, 64, 256, generator=g),
         "wide spectrum": lambda: torch.randn(4, 64, 256, generator=g) * torch.logspace(-5, 0, 256)}[kind]()
    assert x.shape[-1] >= muon.GRAM_RATIO * x.shape[-2]
    fast = orthogonalize(x, dtype=torch.float32)
    monkeypatch.setattr(muon, "GRAM_RATIO", 10 ** 9)  # the plain iteration
    plain = orthogonalize(x, dtype=torch.float32)
    assert (fast - plain).abs().max() < 1e-3 * plain.abs().max()  # measured: below 6e-4 of it, low rank worst


@pytest.mark.parametrize("adjust", ["match_rms_adamw", "original"])
def test_matches_pytorch_muon(adjust: str) -> None:
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs PyTorch 2.9")
    ours, theirs = matrices(), matrices()
    run(Muon, ours, 4, lr=0.02, weight_decay=0.1, adjust_lr=adjust, ns_dtype="bfloat16")  # PyTorch's precision
    run(torch.optim.Muon, theirs, 4, lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust)
    for a, b, start in zip(ours, theirs, matrices(), strict=True):
        # bf16 Newton-Schulz: a batched matmul may round differently from a single one
        torch.testing.assert_close(a.detach(), b.detach(), atol=3e-3, rtol=0)
        assert (a.detach() - start.detach()).abs().max() > 0.01  # they moved, far more than the tolerance


def test_state_is_a_momentum_buffer_per_matrix_and_round_trips() -> None:
    params = matrices()
    opt = Muon(params, lr=0.01)
    run(Muon, params, 0)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    state = copy.deepcopy(opt.state_dict())  # not the live buffers, which opt's next step changes in place
    assert all(set(s) == {"momentum_buffer"} for s in state["state"].values())
    clone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = Muon(clone, lr=0.01)
    opt2.load_state_dict(state)
    for o in (opt, opt2):
        for p in o.param_groups[0]["params"]:
            p.grad = torch.full_like(p, 0.5)
        o.step()
    for a, b in zip(params, clone, strict=True):
        assert torch.equal(a.detach(), b.detach())


def test_refuses_non_matrices() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


class FakeShard:
    """What Muon reads of an FSDP2 parameter: a DTensor sharded by rows over a 1-D mesh of ``world`` ranks."""

    class Mesh:
        def __init__(self, world: int, rank: int):
            self.ndim, self.world, self.rank = 1, world, rank

        def size(self) -> int:
            return self.world

        def get_local_rank(self) -> int:
            return self.rank

    def __init__(self, whole: torch.Tensor, world: int, rank: int):
        from torch.distributed.tensor import Shard

        self.device_mesh, self.placements = self.Mesh(world, rank), (Shard(0),)
        chunks = whole.chunk(world)
        self.local = chunks[rank] if rank < len(chunks) else whole[:0]

    def full_tensor(self) -> torch.Tensor:  # its presence marks the tensor as sharded
        raise AssertionError("not needed")

    def to_local(self) -> torch.Tensor:
        return self.local


@pytest.mark.parametrize(("rows", "world"), [(8, 2), (7, 3), (3, 4)])
def test_each_fsdp_rank_takes_its_own_rows_of_the_whole_update(rows: int, world: int) -> None:
    """Uneven shards too: FSDP2 splits rows as torch.chunk does, so a rank past the last chunk holds none."""
    from gradwise.optim.muon import _my_rows

    update = torch.arange(rows * 5, dtype=torch.float32).reshape(rows, 5)
    mine = [_my_rows(update, FakeShard(torch.zeros(rows, 5), world, r)) for r in range(world)]
    assert torch.equal(torch.cat(mine), update)  # every row once, in order
    assert [m.shape[0] for m in mine] == [c.shape[0] for c in update.chunk(world)] + [0] * (world - len(
        update.chunk(world)))

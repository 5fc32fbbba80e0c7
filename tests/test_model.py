"""The GPT: shapes, causality, tied embeddings, parameter count, sampling filters."""

from __future__ import annotations

import torch

from gradwise.models.gpt import GPT, GPTConfig, filter_logits


def small(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, **kw))


def test_forward_shapes_and_block_limit() -> None:
    model = small()
    logits = model(torch.randint(0, 50, (3, 16)))
    assert logits.shape == (3, 16, 50)
    try:
        model(torch.randint(0, 50, (1, 17)))
    except ValueError as exc:
        assert "block_size" in str(exc)
    else:
        raise AssertionError("a sequence longer than block_size must be refused")


def test_attention_is_causal() -> None:
    model = small().eval()
    x = torch.randint(0, 50, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 50  # change only the future after position 9
    a, b = model(x), model(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_tied_embeddings_share_one_matrix_and_count_once() -> None:
    tied, untied = small(), small(tie_embeddings=False)
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.num_params() - tied.num_params() == 50 * 32
    expected = sum(p.numel() for p in {id(p): p for p in tied.parameters()}.values())
    assert tied.num_params() == expected
    assert tied.num_params(non_embedding=True) == expected - 16 * 32


def test_bias_switch() -> None:
    assert small(bias=True).blocks[0].attn.qkv.bias is not None
    assert small(bias=False).blocks[0].attn.qkv.bias is None


def test_dropout_only_in_training_mode() -> None:
    model = small(dropout=0.5)
    x = torch.randint(0, 50, (2, 16))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_top_k_and_top_p_filters() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = filter_logits(logits, top_k=2, top_p=None)
    assert torch.isinf(k2[0, 2:]).all() and torch.isfinite(k2[0, :2]).all()
    p = filter_logits(logits, top_k=None, top_p=0.7)  # 0.5 alone < 0.7, 0.5+0.3 reaches it
    assert torch.isfinite(p[0, :2]).all() and torch.isinf(p[0, 2:]).all()
    assert torch.equal(filter_logits(logits, None, None), logits)


def test_generate_extends_and_is_reproducible_with_a_seed() -> None:
    model = small().eval()
    start = torch.zeros((2, 1), dtype=torch.long)
    a = model.generate(start, 30, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(start, 30, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 31) and torch.equal(a, b)
    greedy = model.generate(start, 5, temperature=0)
    assert torch.equal(greedy[0], greedy[1])

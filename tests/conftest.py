"""Test setup. Without a GPU the Triton kernels run under the interpreter, which must be
switched on before triton is first imported."""
import os
import sys
from pathlib import Path

# The checkout root must not be on sys.path (`python -m pytest` puts it there): its
# kernels/ folder would shadow Hugging Face's `kernels` package. qrt and qrt_kernels are
# imported from the installed (editable) distribution instead.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture
def rng_seed():
    """Fresh random inputs each run (seed printed on failure), per the test standards."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    return seed


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    """A tiny random Llama (2 blocks, hidden 64, context 128, tied embeddings) with a
    byte-level tokenizer (256 ids), saved as a Hugging Face directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_lm")
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(out)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    gen = torch.Generator().manual_seed(1234)  # fixed weights: the fixture is shared by the session
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 if p.ndim > 1 else p)
    model.save_pretrained(out)
    return out


# tiny random models of the families qrt loads (tests/tiny_models.py)
@pytest.fixture
def make_model():
    from tiny_models import make
    return make


@pytest.fixture
def ids_for():
    from tiny_models import sample_ids
    return sample_ids


@pytest.fixture
def run_logits():
    from tiny_models import logits
    return logits

"""Tiny random models of the families qrt loads, saved to tmp dirs like real checkpoints.

Hidden sizes are chosen so some layers have in_features not divisible by 128 (192 = 64*3),
exercising the group-size adjustment that real models like SmolLM2 (576) need."""
import torch
import transformers as tf

_COMMON = dict(hidden_size=192, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=320, max_position_embeddings=128)

FAMILIES = {
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**_COMMON, tie_word_embeddings=True)),
    "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**_COMMON, tie_word_embeddings=False)),
    "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(**_COMMON, head_dim=48, tie_word_embeddings=True)),
    "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**_COMMON, tie_word_embeddings=False)),
    "gemma": lambda: tf.GemmaForCausalLM(tf.GemmaConfig(**_COMMON, head_dim=48)),
    "gemma3": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**_COMMON, head_dim=48, sliding_window=16)),
    "bert": lambda: tf.BertForMaskedLM(tf.BertConfig(
        hidden_size=192, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=320, max_position_embeddings=128)),
}


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Random init is tiny (std 0.02) and norms are exactly 1; perturb norms and biases so
    a loader that drops or mis-assigns them is caught."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()



def make(family: str, out_dir=None):
    """fp32 model of `family`; saved with save_pretrained (name_or_path pointed there) when
    out_dir is given, so save_quantized copies its files along like for a real checkpoint."""
    model = _randomize(FAMILIES[family]())
    if out_dir is not None:
        model.save_pretrained(out_dir)
        model.name_or_path = str(out_dir)
    return model


def sample_ids(model: torch.nn.Module, batch: int = 2, seq: int = 10) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (batch, seq))


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def save_tiny_tokenizer(out_dir, vocab_size: int = 320):
    """A word-level tokenizer over `vocab_size` made-up words with a chat template, saved
    beside a tiny model so `qrt generate` runs end to end without network."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i for i in range(3, vocab_size)})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = "{% for m in messages %}<s> {{ m['content'] }} </s>{% endfor %}<s>"
    tok.save_pretrained(out_dir)
    return tok

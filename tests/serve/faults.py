"""Fault injection for the liveness tests: a forward pre-hook that raises on the Nth call.

`Fault(after=n, kill_thread=False)` raises RuntimeError("injected fault") from the n+1-th
forward of the module it is registered on, and from every one after it. kill_thread=True
raises a BaseException instead: the generation loop handles Exception only, so the thread
dies without failing its requests, the way a thread killed from outside dies.
"""
from __future__ import annotations

import time


class ThreadKill(BaseException):
    """Escapes `except Exception`: the generation thread dies on it."""


class Fault:
    def __init__(self, after: int = 0, kill_thread: bool = False):
        self.after, self.kill_thread = after, kill_thread
        self.calls = 0
        self.fired_at: float | None = None  # time.monotonic() of the first raise

    def __call__(self, module, args):
        self.calls += 1
        if self.calls > self.after:
            if self.fired_at is None:
                self.fired_at = time.monotonic()
            raise (ThreadKill if self.kill_thread else RuntimeError)("injected fault")

    def attach(self, model):
        """Register on the input embedding of an HF causal LM (a module both transformers'
        forward and qrt's engine call once per forward; the engine calls its fused
        projections directly, without module hooks); returns the hook handle."""
        return model.get_input_embeddings().register_forward_pre_hook(self)


def wait_until(cond, timeout: float = 5.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()

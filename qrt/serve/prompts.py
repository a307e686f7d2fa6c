"""Prompt text -> token ids, off the event loop.

Tokenizing and chat templating cost time in proportion to the text, so they run in one
worker thread (a Hugging Face tokenizer is not safe to share between threads): /health and
other requests keep being answered meanwhile. Prompts are checked in characters first, so
an over-long one is refused before any tokenizer work. A tokenizer or template failure is a
400 naming the field, never a 500.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from qrt.serve.handlers import HTTPError


class PromptProcessor:
    def __init__(self, tokenizer, max_chars: int):
        self.tok, self.max_chars = tokenizer, max_chars
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qrt-tokenize")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def completion_ids(self, prompt: str | list[int]) -> list[int]:
        """/v1/completions `prompt` (a string or token ids) -> token ids in the vocabulary."""
        if isinstance(prompt, str):
            self._check_chars(len(prompt), "prompt")
            ids = await self._run("prompt", lambda: self.tok(prompt).input_ids)
        else:
            ids = prompt
        return self._check_ids(ids, "prompt")

    async def chat_ids(self, messages: list[dict]) -> list[int]:
        """/v1/chat/completions `messages` -> the templated prompt's token ids."""
        if not getattr(self.tok, "chat_template", None):
            raise HTTPError(400, "messages: this model has no chat template; use /v1/completions", "messages")
        self._check_chars(sum(len(m["content"]) for m in messages), "messages")
        ids = await self._run("messages", lambda: self.tok.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False))
        return self._check_ids(list(ids), "messages")

    def _check_chars(self, n: int, field: str) -> None:
        if n > self.max_chars:
            raise HTTPError(400, f"{field}: {n} characters exceed the limit of {self.max_chars} "
                                 "(the server's max_prompt_chars)", field)

    async def _run(self, field: str, work):
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)
        except Exception as e:  # any tokenizer/template failure is about this input
            if isinstance(e, RuntimeError) and "after shutdown" in str(e):  # the server is stopping
                raise HTTPError(503, "server is shutting down", None, "service_unavailable") from None
            raise HTTPError(400, f"{field}: the tokenizer rejected it ({type(e).__name__}: {e})", field) from None

    def _check_ids(self, ids: list[int], field: str) -> list[int]:
        n = len(self.tok)
        if any(t < 0 or t >= n for t in ids):
            raise HTTPError(400, f"{field}: token ids must be in [0, {n})", field)
        return list(ids)

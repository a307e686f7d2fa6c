"""Incremental detokenization with stop strings, for one request.

`TextTracker.update(token_ids)` re-decodes the generated tokens (outputs are short; the
fast tokenizer decodes hundreds of tokens in well under a millisecond) and returns the text
that is safe to show: while the request runs it holds back a trailing incomplete UTF-8
character ("\ufffd") and any tail that could still grow into a stop string, so a streamed
stop string never leaks out half-written.
"""
from __future__ import annotations


class TextTracker:
    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.text = ""  # decoded text, cut before a stop string once one is found
        self.stopped = False

    def update(self, token_ids: list[int]) -> bool:
        """token_ids: every token generated so far. Returns True when a stop string appeared
        (the text is then cut just before it and must not grow any more)."""
        if self.stopped:
            return True
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        if self.stop:
            longest = max(len(s) for s in self.stop)
            start = max(0, len(self.text) - longest + 1)  # a stop string may straddle the old end
            hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.text, self.stopped = text[:min(hits)], True
                return True
        self.text = text
        return False

    def visible(self, finished: bool) -> str:
        """The text a client may be shown now (all of it once the request finished)."""
        if finished:
            return self.text
        text = self.text.rstrip("\ufffd")
        for s in self.stop:  # hold back a tail that is a proper prefix of a stop string
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    text = text[:-k]
                    break
        return text

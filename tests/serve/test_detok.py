"""Stop strings and streaming hold-back in TextTracker, on a real byte-level tokenizer."""
from tiny_serving import make_tokenizer

from qrt.serve.detok import TextTracker


def test_stop_string_cuts_the_text_and_is_excluded():
    tok = make_tokenizer()
    ids = tok("The quick brown fox jumps over the lazy dog.").input_ids
    t = TextTracker(tok, stop=("fox",))
    stopped_at = next(i for i in range(1, len(ids) + 1) if t.update(ids[:i]))
    assert t.text == "The quick brown " and t.stopped
    assert "fox" in tok.decode(ids[:stopped_at]) and "fox" not in tok.decode(ids[:stopped_at - 1])


def test_streamed_text_never_shows_a_partial_stop_string():
    tok = make_tokenizer()
    text = "Hello world, this is a tiny model for tests."
    ids = tok(text).input_ids
    t = TextTracker(tok, stop=("tiny model",))
    shown = []
    for i in range(1, len(ids) + 1):
        if t.update(ids[:i]):
            break
        shown.append(t.visible(finished=False))
    final = t.visible(finished=True)
    assert final == "Hello world, this is a "
    assert all(final.startswith(s) for s in shown)  # every streamed prefix is a prefix of the result
    assert all("tiny"[:2] not in s[len("Hello world, this is a"):] for s in shown)


def test_incomplete_utf8_is_held_back_until_finished():
    tok = make_tokenizer()
    ids = tok("é").input_ids  # byte-level: two byte tokens (this tokenizer has no merge for it)
    assert len(ids) == 2
    t = TextTracker(tok)
    t.update(ids[:1])
    assert t.visible(finished=False) == ""
    t.update(ids)
    assert t.visible(finished=False) == "é"

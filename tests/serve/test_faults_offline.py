"""Liveness of qrt.LLM: a failing forward or a dead generation thread turns into an exception
naming the cause within 2 s, the engine restarts, and an engine that keeps dying gives up."""
import time

import pytest
from faults import Fault, wait_until

import qrt
from qrt.serve.engine import MAX_RESTARTS, EngineDeadError
from qrt.serve.llm import GenerationError

PROMPTS = ["Hello", "The quick brown fox", "Paged attention", "tiny model"]
# the injected thread death is reported by threading.excepthook: expected here, not a test problem
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
BOUND_S = 2.0  # the liveness contract: callers learn of a dead engine within 2 s


@pytest.fixture
def llm(tiny_dir):
    llm = qrt.LLM(str(tiny_dir), max_num_seqs=2, max_waiting=4, kv_cache_mb=4, num_threads=1)
    yield llm
    llm.shutdown()


def _params(n=24):
    return qrt.SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)


@pytest.mark.parametrize("kill_thread", [False, True], ids=["forward-raises", "thread-dies"])
def test_generate_raises_naming_the_cause_then_the_engine_recovers(llm, kill_thread):
    reference = llm.generate(PROMPTS, _params(), use_tqdm=False)
    fault = Fault(after=3, kill_thread=kill_thread)
    handle = fault.attach(llm.engine.model)
    try:
        with pytest.raises(GenerationError, match="injected fault" if not kill_thread else "generation") as info:
            llm.generate(PROMPTS, _params(), use_tqdm=False)
        raised_after = time.monotonic() - fault.fired_at
    finally:
        handle.remove()
    assert raised_after < BOUND_S, f"generate raised {raised_after:.2f} s after the fault"
    if kill_thread:  # nothing recorded an error: the watchdog names what it saw
        assert "generation loop died" in str(info.value)
    assert wait_until(lambda: llm.engine.health() is None, BOUND_S), llm.engine.health()
    assert llm.engine.num_requests() == (0, 0)
    again = llm.generate(PROMPTS, _params(), use_tqdm=False)  # restarted: same greedy tokens as before
    assert [o.outputs[0].token_ids for o in again] == [o.outputs[0].token_ids for o in reference]


def test_an_engine_that_keeps_dying_gives_up_and_says_why(llm):
    gave_up = []
    llm.engine.on_fatal = gave_up.append
    handle = Fault(after=0, kill_thread=True).attach(llm.engine.model)
    try:
        for _ in range(MAX_RESTARTS + 1):  # each death restarts the loop until the budget is spent
            with pytest.raises(GenerationError):
                llm.generate(PROMPTS[:1], _params(4), use_tqdm=False)
        assert wait_until(lambda: gave_up, BOUND_S), "on_fatal was not called"
        assert "died" in llm.engine.health() and llm.engine.is_dead()
        assert len(gave_up) == 1 and "died" in gave_up[0]
        start = time.monotonic()
        with pytest.raises(EngineDeadError, match="engine failed"):
            llm.generate(PROMPTS[:1], _params(4), use_tqdm=False)
        assert time.monotonic() - start < BOUND_S
    finally:
        handle.remove()


def test_generate_returns_when_the_engine_is_stopped_under_it(llm, tiny_dir):
    """A stopped engine (no loop, no watchdog) is a liveness failure too: generate raises
    instead of waiting forever on requests nobody will finish."""
    import threading
    errors = []

    def run():
        try:
            llm.generate(PROMPTS, _params(200), use_tqdm=False)
        except Exception as e:  # noqa: BLE001 - recorded and asserted below
            errors.append(e)
    t = threading.Thread(target=run)
    t.start()
    assert wait_until(lambda: llm.engine.num_requests()[1] > 0, 30)
    stopped = time.monotonic()
    llm.engine.stop()
    t.join(timeout=BOUND_S + 5)
    assert not t.is_alive(), "generate did not return after the engine stopped"
    assert time.monotonic() - stopped < BOUND_S + 1
    assert len(errors) == 1 and isinstance(errors[0], (EngineDeadError, GenerationError))

"""Scheduler decisions without a model: token budget, chunked prefill, admission, preemption."""
import pytest

from qrt.engine.scheduler import Scheduler, SchedulerConfig
from qrt.engine.sequence import Sequence, SequenceStatus


def run_step(sched):
    """Schedule and pretend the forward ran; sequences that reached their end emit token 1."""
    batch = sched.schedule()
    sched.advance(batch)
    for seq, _ in batch.seqs:
        if seq.num_computed_tokens == len(seq):
            seq.append_token(1)
    return batch


def test_prefill_is_chunked_to_the_token_budget_and_decodes_go_first():
    s = Scheduler(SchedulerConfig(num_blocks=32, page_size=4, max_batch_tokens=16, max_model_len=64))
    a, b = Sequence("a", list(range(40)), 4), Sequence("b", list(range(100, 105)), 4)
    s.add(a), s.add(b)
    assert [n for _, n in run_step(s).seqs] == [16]  # a's first chunk fills the budget
    assert [n for _, n in run_step(s).seqs] == [16]
    assert [(q.seq_id, n) for q, n in run_step(s).seqs] == [("a", 8), ("b", 5)]
    assert [(q.seq_id, n) for q, n in run_step(s).seqs] == [("a", 1), ("b", 1)]  # both decode


def test_admission_respects_max_num_seqs():
    s = Scheduler(SchedulerConfig(num_blocks=32, page_size=4, max_num_seqs=2, max_model_len=32))
    for i in range(3):
        s.add(Sequence(str(i), [5, 6], 4))
    assert [q.seq_id for q, _ in run_step(s).seqs] == ["0", "1"]
    assert [q.seq_id for q in s.waiting] == ["2"]


def test_preemption_frees_the_newest_and_requeues_it_first():
    s = Scheduler(SchedulerConfig(num_blocks=4, page_size=4, max_model_len=16, enable_prefix_caching=False))
    a, b = Sequence("a", [1] * 4, 8), Sequence("b", [2] * 4, 8)
    s.add(a), s.add(b)
    run_step(s)  # both prefill: 2 blocks used, each now has 5 tokens -> needs a 2nd block
    run_step(s)  # 4 blocks used
    assert s.block_manager.num_free_blocks == 0
    for _ in range(4):
        run_step(s)  # a grows to 9 tokens: needs a 3rd block -> b is preempted
    assert s.num_preemptions == 1 and b.status is SequenceStatus.WAITING and s.waiting[0] is b
    assert b.block_table == [] and b.num_computed_tokens == 0 and b.num_output_tokens == 5  # keeps its output


@pytest.mark.parametrize("kw,name", [({"num_blocks": 3}, "num_blocks"), ({"page_size": 0}, "page_size"),
                                     ({"max_num_seqs": True}, "max_num_seqs")])
def test_config_is_validated(kw, name):
    with pytest.raises(ValueError, match=name):
        SchedulerConfig(**{"num_blocks": 64, "page_size": 4, "max_model_len": 16, **kw})

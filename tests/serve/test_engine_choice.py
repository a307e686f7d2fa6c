"""Serving runs on qrt's own engine: an architecture it has no decoder for is refused up
front, naming the supported ones, and no qrt module reaches into transformers' internals."""
import ast
from pathlib import Path

import pytest
import transformers as tf

import qrt
from qrt.serve.config import EngineConfig
from qrt.serve.engine import Engine

QRT = Path(qrt.__file__).resolve().parent
# private attributes qrt sets on its own objects (a QuantLinear's cached check), not on transformers'
OWN_OBJECTS = {("qrt/runtime/int8_act.py", "_input_scale_ok")}


def _gpt2():
    model = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=64))
    return model.eval()


def test_serve_engine_refuses_an_unsupported_architecture():
    with pytest.raises(ValueError, match=r"'gpt2'.*supported: llama, mistral, qwen2, qwen3"):
        Engine(_gpt2(), tokenizer=None, config=EngineConfig(kv_cache_mb=1))


def test_llm_refuses_an_unsupported_architecture(tiny_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    with pytest.raises(ValueError, match=r"not supported by qrt's engine; supported: llama, mistral, qwen2, qwen3"):
        qrt.LLM(_gpt2(), tok)


def _private_attribute_assignments(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, attr) assigning obj._name where obj is not self/cls (patching someone's internals)."""
    lines = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            if isinstance(t, ast.Attribute) and t.attr.startswith("_") and not t.attr.startswith("__") \
                    and not (isinstance(t.value, ast.Name) and t.value.id in ("self", "cls")):
                lines.append((t.lineno, t.attr))
    return lines


def test_no_transformers_internals():
    found = []
    for path in sorted(QRT.rglob("*.py")):
        src = path.read_text()
        if "continuous_batching" in src:
            found.append(f"{path.relative_to(QRT.parent)}: mentions transformers' continuous_batching")
        rel = str(path.relative_to(QRT.parent))
        found += [f"{rel}:{n}: assigns {attr} on another object" for n, attr in
                  _private_attribute_assignments(ast.parse(src)) if (rel, attr) not in OWN_OBJECTS]
    assert not found, "\n".join(found)

"""Issue 17: a bounded fuzzer over quantization configs (hypothesis; ~10 s). Whatever JSON
lands in a config, only the documented error type (qrt.CheckpointConfigError) escapes the
validation pass, and a config that passes it never crashes the readers that use it."""
import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt.formats.awq import awq_settings
from qrt.formats.compressed_tensors import layer_scheme
from qrt.formats.gptq import gptq_config
from qrt.formats.validate import CheckpointConfigError, validate_quant_config

# JSON leaves, plus the near-misses that crashed the parser on main (floats for ints, regex junk)
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=False),
                   st.sampled_from(["re:(", "re:.*", "lm_head", "Linear", "int", "float", "group", "channel",
                                    "tensor", "token", "weight", "pack-quantized", "int-quantized", "64", ""]),
                   st.text(max_size=8))
JSON = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                   st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                    max_leaves=8)

CT_BASE = {"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
           "config_groups": {"group_0": {"targets": ["Linear"], "format": "pack-quantized",
                                         "weights": {"num_bits": 4, "type": "int", "symmetric": True,
                                                     "group_size": 64, "strategy": "group", "dynamic": False,
                                                     "actorder": None},
                                         "input_activations": None, "output_activations": None}},
           "quantization_status": "compressed"}
CT_PATHS = [(), ("quant_method",), ("format",), ("ignore",), ("ignore", 0), ("config_groups",),
            ("config_groups", "group_0"), ("config_groups", "group_0", "targets"),
            ("config_groups", "group_0", "targets", 0), ("config_groups", "group_0", "format"),
            ("config_groups", "group_0", "weights"), ("config_groups", "group_0", "input_activations"),
            ("config_groups", "group_0", "output_activations"),
            *[("config_groups", "group_0", "weights", k) for k in CT_BASE["config_groups"]["group_0"]["weights"]],
            *[("config_groups", "group_0", "input_activations", k) for k in ("num_bits", "strategy", "dynamic")]]
GPTQ_BASE = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True,
             "checkpoint_format": "gptq"}
AWQ_BASE = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm", "zero_point": True}
FLAT_PATHS = [(), ("quant_method",), ("bits",), ("group_size",), ("desc_act",), ("sym",), ("checkpoint_format",),
              ("version",), ("zero_point",), ("w_bit",), ("pack_dtype",)]
MODULES = [("model.layers.0.self_attn.q_proj", ["Linear"]), ("lm_head", ["Linear"]),
           ("model.embed_tokens", ["Embedding"])]


def put(cfg, path, value):
    """cfg with the value at path replaced (a missing parent is made a dict)."""
    if not path:
        return value
    node = cfg
    for k in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(k, {})
        elif isinstance(node, list) and isinstance(k, int) and k < len(node):
            node = node[k]
        else:
            return cfg
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        node[path[-1]] = value
    return cfg


def mutated(base, paths):
    return st.lists(st.tuples(st.sampled_from(paths), JSON), min_size=1, max_size=3).map(
        lambda edits: _apply(copy.deepcopy(base), edits))


def _apply(cfg, edits):
    for path, value in edits:
        cfg = put(cfg, path, value)
    return cfg


def check(cfg) -> None:
    try:
        validate_quant_config(cfg, "config.json")
    except CheckpointConfigError as e:
        assert e.file == "config.json" and "expected" in str(e)
        return
    # it passed: the readers must take it without any exception
    method = cfg["quant_method"]
    if method == "compressed-tensors":
        for name, classes in MODULES:
            layer_scheme(name, cfg, classes)
    elif method.lower() == "gptq":
        gptq_config(cfg)
    else:
        awq_settings(cfg)


FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@FUZZ
@given(st.one_of(mutated(CT_BASE, CT_PATHS), mutated(GPTQ_BASE, FLAT_PATHS), mutated(AWQ_BASE, FLAT_PATHS)))
def test_only_the_documented_error_escapes(cfg):
    check(cfg)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(JSON)
def test_arbitrary_json_as_the_config(cfg):
    check(cfg)


def test_the_bases_are_valid():
    """The mutations start from configs the readers accept (else the fuzzer would test nothing)."""
    for base in (CT_BASE, GPTQ_BASE, AWQ_BASE):
        validate_quant_config(copy.deepcopy(base), "config.json")
    assert layer_scheme("model.layers.0.self_attn.q_proj", CT_BASE, ["Linear"])[0].bits == 4
    assert layer_scheme("lm_head", CT_BASE, ["Linear"]) is None

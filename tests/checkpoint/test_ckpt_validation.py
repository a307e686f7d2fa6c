"""Issue 17, finding 4: a malformed checkpoint config is one ValueError subclass
(qrt.CheckpointConfigError) naming the file, the field path, expected vs found, raised before
anything is built; tensors without a place in the model and non-finite scales are errors."""
import json

import pytest
from safetensors.torch import load_file, save_file

from qrt import CheckpointConfigError, load_quantized, quantize_model, save_quantized


@pytest.fixture
def ckpt(make_model, tmp_path):
    model = make_model("llama")
    quantize_model(model, "w4a16", progress=False)
    save_quantized(model, tmp_path / "q")
    return tmp_path / "q"


def edit(ckpt, fn):
    cfg = json.loads((ckpt / "config.json").read_text())
    fn(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg))


def g0(cfg):
    return cfg["quantization_config"]["config_groups"]["group_0"]


# (edit of config.json, field path named in the error); each crashed with a raw Python error
# (AttributeError, TypeError, re.error) or was silently wrong on main
CASES = {
    "targets [null]": (lambda c: g0(c).update(targets=[None]), "config_groups.group_0.targets[0]"),
    "targets null": (lambda c: g0(c).update(targets=None), "config_groups.group_0.targets"),
    "config_groups 5": (lambda c: c["quantization_config"].update(config_groups=5), "config_groups"),
    "config_groups list": (lambda c: c["quantization_config"].update(config_groups=[1]), "config_groups"),
    "ignore [{}]": (lambda c: c["quantization_config"].update(ignore=[{}]), "ignore[0]"),
    "ignore string": (lambda c: c["quantization_config"].update(ignore="lm_head"), "ignore"),
    "input_activations true": (lambda c: g0(c).update(input_activations=True), "group_0.input_activations"),
    "num_bits 4.0": (lambda c: g0(c)["weights"].update(num_bits=4.0), "weights.num_bits"),
    "actorder []": (lambda c: g0(c)["weights"].update(actorder=[]), "weights.actorder"),
    "group_size '64'": (lambda c: g0(c)["weights"].update(group_size="64"), "weights.group_size"),
    "quant_method {}": (lambda c: c["quantization_config"].update(quant_method={}), "quant_method"),
    "re:( in targets": (lambda c: g0(c).update(targets=["re:("]), "targets[0]"),
    "re:( in ignore": (lambda c: c["quantization_config"].update(ignore=["re:("]), "ignore[0]"),
    "num_bits 5": (lambda c: g0(c)["weights"].update(num_bits=5), "config_groups.group_0"),
    "num_hidden_layers '2'": (lambda c: c.update(num_hidden_layers="2"), "num_hidden_layers"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_config_is_one_named_error(ckpt, case):
    fn, field = CASES[case]
    edit(ckpt, fn)
    with pytest.raises(CheckpointConfigError) as e:
        load_quantized(ckpt, device="cpu", progress=False)
    assert isinstance(e.value, ValueError)
    assert e.value.file == str(ckpt / "config.json") and e.value.field.endswith(field), e.value.field
    assert str(e.value).startswith(f"{ckpt / 'config.json'}: ") and "expected" in str(e.value)


def test_invalid_json_names_the_file(ckpt):
    (ckpt / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], ')
    with pytest.raises(CheckpointConfigError, match=r"config\.json: expected valid JSON, found <Expecting"):
        load_quantized(ckpt, device="cpu", progress=False)


def test_config_one_layer_short_is_an_error_unless_allowed(ckpt):
    edit(ckpt, lambda c: c.update(num_hidden_layers=c["num_hidden_layers"] - 1))
    with pytest.raises(ValueError, match=r"checkpoint tensor\(s\) have no place in the model .*model\.layers\.1\."):
        load_quantized(ckpt, device="cpu", progress=False)
    model = load_quantized(ckpt, device="cpu", progress=False, allow_unused_tensors=True)
    assert len(model.model.layers) == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_scale_is_named(ckpt, value):
    name = "model.layers.0.mlp.up_proj.weight_scale"
    f = ckpt / "model.safetensors"
    tensors = load_file(f)
    tensors[name][3, 1] = value
    save_file(tensors, f, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"model\.safetensors: tensor '{name}': expected finite scales, "
                                         rf"found {value} at \[3, 1\]"):
        load_quantized(ckpt, device="cpu", progress=False)

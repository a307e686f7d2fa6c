import pytest

from qrt.schemes import PRESETS, ActivationScheme, QuantScheme, resolve_scheme


def test_presets_resolve_and_roundtrip():
    for name, s in PRESETS.items():
        assert resolve_scheme(name) is s
        assert QuantScheme.from_dict(s.to_dict()) == s
    assert resolve_scheme("w4a16").bits == 4 and resolve_scheme("w4a16").group_size == 128
    assert resolve_scheme("w8a16").strategy == "channel"
    assert resolve_scheme("w4a16-asym").symmetric is False
    assert resolve_scheme("w2a16").group_size == 64
    assert resolve_scheme("w4a16-g64").group_size == 64
    assert resolve_scheme("W4A16-ASYM-g32") == QuantScheme(bits=4, group_size=32, symmetric=False)
    assert resolve_scheme("w8a8").activations == ActivationScheme()


@pytest.mark.parametrize("kwargs, field", [
    (dict(bits=5), "bits"),
    (dict(bits=16), "bits"),
    (dict(strategy="block"), "strategy"),
    (dict(group_size=0), "group_size"),
    (dict(group_size=-128), "group_size"),
    (dict(group_size=None), "group_size"),
    (dict(strategy="channel", group_size=128), "group_size"),
    (dict(scale_dtype="float8"), "scale_dtype"),
    (dict(actorder="static"), "actorder"),
    (dict(strategy="channel", group_size=None, actorder="group"), "actorder"),
    (dict(symmetric=False, activations=ActivationScheme()), "symmetric"),
])
def test_invalid_scheme_names_field(kwargs, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        QuantScheme(**kwargs)


def test_invalid_activation_scheme():
    with pytest.raises(ValueError, match="activations.bits"):
        ActivationScheme(bits=6)
    with pytest.raises(ValueError, match="4-bit activations in qrt are NVFP4"):
        ActivationScheme(bits=4)
    with pytest.raises(ValueError, match="activations.strategy"):
        ActivationScheme(dynamic=False, strategy="token")
    with pytest.raises(ValueError, match="activations.dynamic"):
        ActivationScheme(dynamic="local")  # compressed-tensors' "local" is for NVFP4 groups only
    with pytest.raises(ValueError, match="activations.group_size"):
        ActivationScheme(group_size=16)


NVFP4_ACT = dict(bits=4, type="float", strategy="tensor_group", group_size=16, dynamic="local")
NVFP4_W = dict(type="float", bits=4, strategy="tensor_group", group_size=16)


def test_nvfp4_activations_w4a4():
    """W4A4 (llmcompressor's NVFP4 preset): read-only in qrt, so no preset makes it."""
    a = ActivationScheme(**NVFP4_ACT)
    assert a.is_nvfp4 and not ActivationScheme().is_nvfp4
    s = QuantScheme(**NVFP4_W, activations=a)
    assert QuantScheme.from_dict(s.to_dict()) == s
    assert not any(p.activations is not None and p.activations.is_nvfp4 for p in PRESETS.values())
    with pytest.raises(ValueError, match="unknown scheme 'nvfp4'"):
        resolve_scheme("nvfp4")


@pytest.mark.parametrize("change, named", [
    (dict(group_size=32), "group_size=32"),
    (dict(dynamic=True), "dynamic=True"),
    (dict(strategy="group"), "strategy='group'"),
    (dict(type="int"), "type='int'"),
    (dict(symmetric=False), "symmetric=False"),
    (dict(group_size=16.0), "group_size=16.0"),
])
def test_nvfp4_activations_refuse_other_layouts(change, named):
    with pytest.raises(ValueError, match=f"NVFP4: type 'float'.* only; found {named}"):
        ActivationScheme(**{**NVFP4_ACT, **change})


@pytest.mark.parametrize("weights", [
    dict(type="float", bits=4, strategy="group", group_size=32),  # MXFP4
    dict(type="float", bits=8, strategy="channel", group_size=None),  # FP8
    dict(bits=4, strategy="group", group_size=128),  # int4
])
def test_nvfp4_activations_need_nvfp4_weights(weights):
    with pytest.raises(ValueError, match="'activations(.type)?'"):
        QuantScheme(**weights, activations=ActivationScheme(**NVFP4_ACT))


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown scheme 'w5a16'"):
        resolve_scheme("w5a16")
    with pytest.raises(ValueError, match="per-channel"):
        resolve_scheme("w8a16-g64")


def test_frozen():
    with pytest.raises(Exception):
        PRESETS["w4a16"].bits = 8

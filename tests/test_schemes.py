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
        ActivationScheme(bits=4)
    with pytest.raises(ValueError, match="activations.strategy"):
        ActivationScheme(dynamic=False, strategy="token")


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown scheme 'w5a16'"):
        resolve_scheme("w5a16")
    with pytest.raises(ValueError, match="per-channel"):
        resolve_scheme("w8a16-g64")


def test_frozen():
    with pytest.raises(Exception):
        PRESETS["w4a16"].bits = 8

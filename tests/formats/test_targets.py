import torch
from torch import nn

from qrt.formats.targets import iter_targets, matches, set_submodule


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.o_proj, self.norm = nn.Linear(4, 4), nn.Linear(4, 4), nn.LayerNorm(4)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])
        self.lm_head = nn.Linear(4, 8)


def test_matching_rules():
    m = Model()
    names = [n for n, _ in iter_targets(m)]
    assert names == ["layers.0.q_proj", "layers.0.o_proj", "layers.1.q_proj", "layers.1.o_proj"]
    names = [n for n, _ in iter_targets(m, ["re:.*q_proj$"], ignore=["layers.1.q_proj"])]
    assert names == ["layers.0.q_proj"]
    assert matches("x", nn.LayerNorm(2), ["LayerNorm"]) and not matches("x", nn.Linear(1, 1), ["LayerNorm"])
    # re: uses re.match (anchored at the start), like compressed-tensors
    assert not matches("layers.0.q_proj", nn.Linear(1, 1), ["re:q_proj"])


def test_set_submodule():
    m = Model()
    new = nn.Identity()
    set_submodule(m, "layers.1.o_proj", new)
    assert m.layers[1].o_proj is new
    set_submodule(m, "lm_head", nn.Identity())
    assert isinstance(m.lm_head, nn.Identity)
    assert torch.equal(m.layers[0].q_proj.weight, m.layers[0].q_proj.weight)

"""AWQ's clipping search against a direct float64 search on the tokens themselves."""
import torch

from qrt.numerics.quant import fake_quantize
from qrt.quantize.awq_clip import clip_weights
from qrt.schemes import resolve_scheme


def test_clip_matches_per_group_search_on_tokens():
    g = torch.Generator().manual_seed(0)
    out, cin, tokens = 12, 64, 300
    w = torch.randn(out, cin, generator=g)
    w[:, 5] *= 8  # an outlier column: clipping it is worth testing
    x = torch.randn(tokens, cin, generator=g) * torch.linspace(0.2, 3, cin)
    scheme = resolve_scheme("w4a16-g32").replace(scale_dtype="float32")
    got = clip_weights(w, x.T @ x, scheme)
    # reference: per (row, group) partial outputs computed from the tokens, float64 error
    gs, ng = 32, 2
    w3 = w.reshape(out, ng, gs)
    full = w3.abs().amax(-1, keepdim=True)
    errs, ms = [], []
    for i in range(10):
        m = full * (1 - i / 20)
        wc = torch.maximum(torch.minimum(w3, m), -m)
        dw = (fake_quantize(wc.reshape(out, cin), scheme).reshape(out, ng, gs) - w3).double()
        part = torch.einsum("ogi,tgi->ogt", dw, x.double().reshape(tokens, ng, gs))
        errs.append((part ** 2).sum(-1))
        ms.append(m)
    best = torch.stack(errs).argmin(0)  # [out, ng]
    m_ref = torch.stack(ms)[best, torch.arange(out)[:, None], torch.arange(ng)[None, :]]
    ref = torch.maximum(torch.minimum(w3, m_ref), -m_ref).reshape(out, cin)
    # the Gram form equals the token sum up to float32 rounding; a near-tie between two
    # ratios could flip, so allow one (row, group) of 24 to differ
    differ = (got.reshape(out, ng, gs) != ref.reshape(out, ng, gs)).any(-1)
    assert differ.sum() <= 1, differ
    assert (best > 0).any()  # some group was actually clipped
    e_clip = ((x.double() @ (fake_quantize(got, scheme).double() - w.double()).T) ** 2).sum()
    e_rtn = ((x.double() @ (fake_quantize(w, scheme).double() - w.double()).T) ** 2).sum()
    assert e_clip < e_rtn

"""GPTQ (Frantar et al., 2022): quantize a Linear's weight column by column, spreading each
column's rounding error over the not-yet-quantized columns through the inverse Hessian of
the layer's inputs, so the layer output X W^T moves as little as possible.

Follows llmcompressor's `quantize_weight` (float32 work, dead columns, dampening
percdamp * mean(diag H), Cholesky factor of H^-1, lazy block updates, activation order):
  H = 2 X^T X / n                 [in, in], X the layer inputs, n rows (tokens)
  dead column (diag H == 0)       -> H_jj = 1, W[:, j] = 0 (the column never sees input)
  H += percdamp * mean(diag H) I; U = chol(H^-1)^T (upper); columns in blocks of block_size:
  for each column j: q_j = Q(w_j);  e = (w_j - q_j) / U_jj;  w_{j+1..} -= e U_{j, j+1..}
Cholesky failure -> GPTQFallbackWarning and plain RTN for the layer.

Activation order (columns processed by descending diag H) and where group qparams come from:
  None      natural order; a group's qparams from its current (error-updated) columns at
            the moment the group starts (the GPTQ paper, AutoGPTQ's default).
  "weight"  permuted order, groups stay contiguous in the ORIGINAL column order, so qparams
            are fixed up front from the original weights (llmcompressor >= 0.10 computes all
            qparams this way; AutoGPTQ's static_groups) and no g_idx is needed at run time.
  "group"   permuted order, groups contiguous in the PERMUTED order (qparams at group start,
            like None) -> a g_idx [in] maps each original column to its group.
static_groups=True makes None use up-front qparams too (exactly llmcompressor's numerics);
"weight" always uses them.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from qrt.numerics.quant import QuantizedWeight, check_finite, compute_qparams, expand_groups
from qrt.numerics.quant import quantize_weight as rtn_quantize_weight
from qrt.quantize.awq_clip import clip_weights
from qrt.schemes import ACTORDERS, QuantScheme

SPARSITY_THRESHOLD = 0.05  # >= 5% exact zeros: treat the weight as pruned, keep its zeros


class GPTQFallbackWarning(UserWarning):
    """The Hessian could not be factorized; the layer was quantized with RTN instead."""


class HessianAccumulator:
    """Running H = 2 X^T X / n over every input row seen (float32, on `device`).

    X^T X is symmetric, so `add` computes only its block rows right of and on the diagonal
    (column blocks of ~512: about half the GEMM work once in_features > 1024; measured 1.6 s
    against 2.6 s per 65536 x 1536 rows on a 2-core AVX2 CPU) and `xtx` mirrors the rest
    when read."""

    BLOCK = 512

    def __init__(self, in_features: int, device=None):
        self._xtx = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        k = -(-in_features // self.BLOCK)
        self._bounds = [in_features * i // k for i in range(k + 1)]
        self._mirrored = True
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        """x [..., in]: every leading index is one row (token) of X."""
        x = x.detach().reshape(-1, self._xtx.shape[0]).to(self._xtx.device, torch.float32)
        b = self._bounds
        for i in range(len(b) - 1):
            self._xtx[b[i]:b[i + 1], b[i]:].addmm_(x[:, b[i]:b[i + 1]].T, x[:, b[i]:])
        self._mirrored = len(b) == 2
        self.rows += x.shape[0]

    @property
    def xtx(self) -> torch.Tensor:
        """X^T X [in, in], whole (the accumulator itself: in-place changes must keep it symmetric)."""
        if not self._mirrored:
            b = self._bounds
            for i in range(1, len(b) - 1):
                self._xtx[b[i]:, b[i - 1]:b[i]] = self._xtx[b[i - 1]:b[i], b[i]:].T
            self._mirrored = True
        return self._xtx

    def hessian(self) -> torch.Tensor:
        if self.rows == 0:
            raise ValueError("no calibration inputs reached this layer (0 rows); cannot build its Hessian")
        return self.xtx * (2.0 / self.rows)


def inverse_hessian_factor(h: torch.Tensor, percdamp: float) -> torch.Tensor | None:
    """Upper Cholesky factor U of (H + percdamp * mean(diag H) I)^-1, or None if H is not
    positive definite after dampening. h [in, in] float32 (modified in place)."""
    if not torch.isfinite(h).all():
        return None
    h.diagonal().add_(percdamp * h.diagonal().mean())
    chol, info = torch.linalg.cholesky_ex(h)
    if info.item() != 0:
        return None
    u, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol), upper=True)
    return u if info.item() == 0 else None


class _ColumnQuantizer:
    """Per-column qparams in processing order: scale/zero [out, in] float32, filled either
    up front (static) or group by group as the sweep reaches each group's first column."""

    code_dtype = torch.int8

    def __init__(self, scheme: QuantScheme, out_f: int, in_f: int, weight_dtype: torch.dtype, device):
        self.scheme, self.weight_dtype = scheme, weight_dtype
        self.scale_dtype = scheme.scale_torch_dtype(weight_dtype)
        self.group_size = scheme.effective_group_size(in_f)
        self.scales, self.zeros = [], []  # per-group [out, 1] in the order groups are found
        self.col_scale = torch.empty(out_f, in_f, device=device)
        self.col_zero = torch.zeros(out_f, in_f, device=device)

    def set_static(self, w: torch.Tensor, perm: torch.Tensor | None) -> None:
        """Qparams of the original weights w [out, in], groups in original column order."""
        scale, zero = compute_qparams(w, self.scheme, self.scale_dtype)
        self.scales, self.zeros = [scale], [zero]
        col_s = expand_groups(scale.float(), self.group_size, w.shape[1])
        col_z = None if zero is None else expand_groups(zero.float(), self.group_size, w.shape[1])
        if perm is not None:
            col_s = col_s[:, perm]
            col_z = None if col_z is None else col_z[:, perm]
        self.col_scale.copy_(col_s)
        if col_z is not None:
            self.col_zero.copy_(col_z)

    def start_group(self, cols: torch.Tensor, start: int) -> None:
        """Qparams for the group whose current column values are cols [out, <=G], which
        occupies processing positions start .. start + cols.shape[1]."""
        scale, zero = compute_qparams(cols, self.scheme.replace(strategy="channel", group_size=None, actorder=None),
                                      self.scale_dtype)
        self.scales.append(scale)
        self.zeros.append(zero)
        end = start + cols.shape[1]
        self.col_scale[:, start:end] = scale.float()
        if zero is not None:
            self.col_zero[:, start:end] = zero.float()

    def fake_quantize(self, w: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Column w [out] at processing position j -> (q int8 [out], dequantized [out]).
        The dequantized value is rounded to the weight dtype, as the layer will see it."""
        s, z = self.col_scale[:, j], self.col_zero[:, j]
        q = torch.round(w / s + z).clamp(self.scheme.qmin, self.scheme.qmax)
        return q.to(torch.int8), ((q - z) * s).to(self.weight_dtype).float()

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        scale = torch.cat(self.scales, dim=1)
        zero = None if self.zeros[0] is None else torch.cat(self.zeros, dim=1)
        return scale, zero


def _current_columns(W: torch.Tensor, W1: torch.Tensor, err1: torch.Tensor, U: torch.Tensor,
                     i1: int, i: int, end: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Up-to-date values of processing columns [i1+i, end) while block [i1, i1+W1 width) is
    mid-sweep: in-block columns live in W1; later ones still owe the block's pending lazy
    update -err1[:, :i] @ U[i1:i1+i, ...]."""
    i2 = i1 + W1.shape[1]
    inside = W1[:, i: min(end, i2) - i1]
    if end <= i2:
        return inside
    pending = err1[:, :i] @ U[i1:i1 + i, i2:end]
    if mask is not None:
        pending = pending * mask[:, i2:end]
    return torch.cat([inside, W[:, i2:end] - pending], dim=1)


@contextlib.contextmanager
def single_thread(device: torch.device):
    """The sweep is a long chain of tiny ops; on CPU, intra-op threads only add fork/join
    overhead, which explodes when the cores are shared (measured 25x slower on 2 busy cores)."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def gptq_sweep(W: torch.Tensor, U: torch.Tensor, quant: _ColumnQuantizer, block_size: int,
                dynamic_groups: bool, mask: torch.Tensor | None) -> torch.Tensor:
    """The column sweep over W [out, in] (processing order, float32, updated in place) with
    the upper factor U [in, in]. Returns the codes [out, in] (quant.code_dtype: int8, or
    float8_e4m3fn for qrt.quantize.gptq_fp8) in processing order."""
    out_f, in_f = W.shape
    G = quant.group_size
    Q = torch.empty(out_f, in_f, dtype=quant.code_dtype, device=W.device)
    for i1 in range(0, in_f, block_size):
        i2 = min(i1 + block_size, in_f)
        W1 = W[:, i1:i2].clone()
        err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        mask1 = None if mask is None else mask[:, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if dynamic_groups and j % G == 0:
                end = min(j + G, in_f)
                quant.start_group(_current_columns(W, W1, err1, U, i1, i, end, mask), j)
            w = W1[:, i]
            Q[:, j], deq = quant.fake_quantize(w, j)
            err = (w - deq) / U1[i, i]
            update = err[:, None] * U1[i, i:][None, :]
            W1[:, i:] -= update if mask1 is None else update * mask1[:, i:]
            err1[:, i] = err
        update = err1 @ U[i1:i2, i2:]
        W[:, i2:] -= update if mask is None else update * mask[:, i2:]
    return Q


def _check_args(w, hessian, scheme, block_size, percdamp, actorder, static_groups):
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight [out, in], found shape {tuple(w.shape)}")
    if hessian.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"Hessian must be [in, in] = {(w.shape[1],) * 2}, found {tuple(hessian.shape)}")
    if actorder not in ACTORDERS:
        raise ValueError(f"actorder must be one of {ACTORDERS}, found {actorder!r}")
    if actorder == "group" and scheme.strategy != "group":
        raise ValueError(f"actorder 'group' needs strategy 'group', found {scheme.strategy!r}")
    if actorder == "weight" and static_groups is False:
        raise ValueError("actorder 'weight' keeps groups in the original column order, so its "
                         "qparams must be static (static_groups True or None), found False")
    if actorder == "group" and static_groups:
        raise ValueError("actorder 'group' takes its groups in the permuted order, found static_groups=True "
                         "(static groups in the original order are actorder 'weight')")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, found {block_size!r}")
    if not 0.0 <= percdamp:
        raise ValueError(f"percdamp must be >= 0, found {percdamp!r}")
    check_finite(w)


def gptq_quantize_weight(w: torch.Tensor, hessian: torch.Tensor, scheme: QuantScheme, *,
                         block_size: int = 128, percdamp: float = 0.01, actorder: str | None = None,
                         static_groups: bool | None = None, name: str = "layer",
                         clip: bool = False) -> QuantizedWeight:
    """GPTQ of one weight w [out, in] given its input Hessian [in, in] (2 X^T X / n).

    clip: take the static qparams from the weights clamped per (row, group) to the shrunk
    range with the least output error under H (qrt.quantize.awq_clip, AWQ's clipping search
    with H as the Gram matrix); the sweep still rounds the original weights, so GPTQ's error
    feedback carries what the clamp cuts off. Needs static qparams (actorder "weight",
    static_groups, or per-channel); symmetric integer schemes only.

    Returns q int8 [out, in] (original column order), scale [out, n_groups] in the scheme's
    scale dtype (else w's), zero [out, n_groups] or None, and g_idx int32 [in] for
    actorder "group" (None otherwise). `QuantLinear.from_quantized(qw, scheme.replace(
    actorder=actorder), bias, dtype)` packs it. A Hessian that is not positive definite
    after dampening -> GPTQFallbackWarning and RTN (`qrt.numerics.quant.quantize_weight`).
    """
    _check_args(w, hessian, scheme, block_size, percdamp, actorder, static_groups)
    static = scheme.strategy != "group" or actorder == "weight" or bool(static_groups)
    if clip and not (static and scheme.symmetric and not scheme.is_float and scheme.strategy != "tensor"):
        raise ValueError(f"GPTQ clip needs static per-channel or per-group qparams of a symmetric integer scheme "
                         f"(actorder 'weight' or static_groups); {name} has {scheme.bits}-bit "
                         f"{'sym' if scheme.symmetric else 'asym'} {scheme.strategy} weights, actorder {actorder!r}, "
                         f"static_groups {static_groups!r}")
    with single_thread(w.device):
        qw = _gptq(w.detach(), hessian.detach(), scheme, block_size, percdamp, actorder, static, clip)
    if qw is not None:
        return qw
    warnings.warn(f"GPTQ: the Hessian of {name} is not positive definite after dampening "
                  f"(percdamp={percdamp}); quantizing {name} with round-to-nearest instead. "
                  "More calibration samples or a larger percdamp usually fix this.",
                  GPTQFallbackWarning, stacklevel=2)
    qw = rtn_quantize_weight(w, scheme)
    if actorder == "group":  # keep the layer format: an identity group map
        g = torch.arange(w.shape[1], device=w.device) // scheme.effective_group_size(w.shape[1])
        qw = QuantizedWeight(qw.q, qw.scale, qw.zero, g.to(torch.int32))
    return qw


def prepare_sweep(w: torch.Tensor, hessian: torch.Tensor, percdamp: float, actorder: str | None):
    """(W float32 [out, in] in processing order, dead columns zeroed; U the upper inverse-
    Hessian factor; perm [in] or None; sparsity mask or None), or None when the Hessian
    cannot be factorized. Shared by the integer and the FP8 (qrt.quantize.gptq_fp8) GPTQ."""
    W = w.to(torch.float32).clone()
    H = hessian.to(W.device, torch.float32).clone()
    zeros = W == 0
    mask = (~zeros).float() if zeros.float().mean() >= SPARSITY_THRESHOLD else None
    perm = None
    if actorder is not None:
        perm = torch.argsort(H.diagonal(), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
        mask = None if mask is None else mask[:, perm]
    dead = H.diagonal() == 0
    H.diagonal()[dead] = 1.0
    W[:, dead] = 0.0
    U = inverse_hessian_factor(H, percdamp)
    if U is None:
        return None
    return W, U, perm, mask


def _gptq(w, hessian, scheme, block_size, percdamp, actorder, static, clip=False) -> QuantizedWeight | None:
    """The algorithm of gptq_quantize_weight; None when the Hessian cannot be factorized."""
    prepared = prepare_sweep(w, hessian, percdamp, actorder)
    if prepared is None:
        return None
    W, U, perm, mask = prepared
    quant = _ColumnQuantizer(scheme, *W.shape, weight_dtype=w.dtype, device=W.device)
    if static:
        quant.set_static(clip_weights(w, hessian, scheme).to(w.dtype) if clip else w, perm)
    Q = gptq_sweep(W, U, quant, block_size, dynamic_groups=not static, mask=mask)
    scale, zero = quant.qparams()
    g_idx = None
    if perm is not None:
        inv = torch.argsort(perm)
        Q = Q[:, inv]
        if actorder == "group":
            g_idx = (inv // quant.group_size).to(torch.int32)
    return QuantizedWeight(Q.contiguous(), scale.contiguous(),
                           None if zero is None else zero.contiguous(), g_idx)

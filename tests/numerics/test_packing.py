"""Packing: bit-exact round trips, and the layout checked against compressed-tensors'
own pack_to_int32 (an independent implementation of the format we must match)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrt.numerics.packing import pack_int32, packed_words, unpack_int32

ct_helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")


def _rand_q(rows, cols, bits, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (rows, cols), generator=g, dtype=torch.int8)


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8]), rows=st.integers(1, 9), cols=st.integers(1, 300),
       dim=st.sampled_from([0, 1]), seed=st.integers(0, 2**31))
def test_roundtrip_and_matches_compressed_tensors(bits, rows, cols, dim, seed):
    q = _rand_q(rows, cols, bits, seed)
    p = pack_int32(q, bits, dim=dim)
    n = cols if dim == 1 else rows
    assert p.dtype == torch.int32
    assert p.shape[dim] == packed_words(n, bits)
    assert torch.equal(unpack_int32(p, bits, n, dim=dim), q)
    assert torch.equal(p, ct_helpers.pack_to_int32(q, bits, packed_dim=dim))


def test_known_layout_lsb_first():
    # 4-bit values 0..7 then -8..-1: stored = q + 8 -> nibbles 8..15, 0..7, LSB first
    q = torch.arange(-8, 8, dtype=torch.int8).roll(8).reshape(1, 16)
    p = pack_int32(q, 4)
    assert p.tolist() == [[int.from_bytes(bytes([0x98, 0xBA, 0xDC, 0xFE]), "little", signed=True),
                           int.from_bytes(bytes([0x10, 0x32, 0x54, 0x76]), "little", signed=True)]]
    # 3-bit: element 10 straddles words 0 and 1 (bits 30..32)
    q3 = torch.full((1, 11), -4, dtype=torch.int8)
    q3[0, 10] = 3  # stored 7 = 0b111 -> bits 30, 31 of word 0 and bit 0 of word 1
    p3 = pack_int32(q3, 3)
    assert p3.shape == (1, 2) and (int(p3[0, 0]) >> 30) & 3 == 3 and int(p3[0, 1]) == 1


def test_bad_input():
    with pytest.raises(ValueError, match="int8"):
        pack_int32(torch.zeros(2, 2, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match=r"4-bit range \[-8, 7\]: found \[0, 9\]"):
        pack_int32(torch.tensor([[0, 9]], dtype=torch.int8), 4)
    with pytest.raises(ValueError, match="need 1 int32 words per row, found 2"):
        unpack_int32(torch.zeros(1, 2, dtype=torch.int32), 4, 8)

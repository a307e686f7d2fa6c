def test_qrt_kernels_and_hf_kernels_import_side_by_side():
    import kernels  # Hugging Face's package
    import qrt_kernels
    import qrt_kernels.reference

    assert kernels.__name__ == "kernels" and qrt_kernels.__name__ == "qrt_kernels"
    assert "qrt" not in (kernels.__file__ or "").split("/")[-2]
    assert qrt_kernels.__file__ != kernels.__file__
    assert hasattr(qrt_kernels.reference, "dequant_matmul_ref")
    assert hasattr(kernels, "get_kernel")

"""Fixtures over tiny_models (tiny random models of the families qrt loads)."""
import pytest
from tiny_models import logits, make, sample_ids


@pytest.fixture
def make_model():
    return make


@pytest.fixture
def ids_for():
    return sample_ids


@pytest.fixture
def run_logits():
    return logits

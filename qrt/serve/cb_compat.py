"""The one module that touches transformers' continuous-batching internals.

The serving engine runs on transformers' ContinuousBatchingManager, whose pieces below are
not a documented public API and change between releases (5.24 changed how the generation
loop is called). Everything qrt uses of it is here, behind a version check that runs when
this module is imported: an untested transformers release fails at start-up with a message
naming the supported range, instead of a generation thread dying later.

QRT_ALLOW_UNTESTED_TRANSFORMERS=1 turns the refusal into a warning (for trying a new release).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable

import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version

# The releases CI runs against (constraints.txt pins the lower end); keep in step with pyproject.toml.
SUPPORTED_TRANSFORMERS = SpecifierSet(">=5.23,<5.24")
ALLOW_ENV = "QRT_ALLOW_UNTESTED_TRANSFORMERS"
log = logging.getLogger("qrt.serve")


def check_transformers_version(version: str = transformers.__version__) -> None:
    """RuntimeError unless `version` is in SUPPORTED_TRANSFORMERS (a warning with QRT_ALLOW_UNTESTED_TRANSFORMERS=1)."""
    if Version(version) in SUPPORTED_TRANSFORMERS:
        return
    msg = (f"qrt's serving engine uses transformers' continuous-batching internals and supports transformers "
           f"{SUPPORTED_TRANSFORMERS}; found {version}. Install a supported release "
           f"(pip install 'transformers{SUPPORTED_TRANSFORMERS}') or set {ALLOW_ENV}=1 to try this one anyway.")
    if os.environ.get(ALLOW_ENV) == "1":
        log.warning(msg)
        return
    raise RuntimeError(msg)


check_transformers_version()

from transformers.generation.configuration_utils import ContinuousBatchingConfig  # noqa: E402
from transformers.generation.continuous_batching.cache import PagedAttentionCache  # noqa: E402
from transformers.generation.continuous_batching.cb_logits_processors import (  # noqa: E402
    ContinuousBatchingLogitsProcessor,
)
from transformers.generation.continuous_batching.requests import RequestStatus  # noqa: E402

__all__ = ["ContinuousBatchingConfig", "ContinuousBatchingLogitsProcessor", "PagedAttentionCache",
           "add_logits_processor", "route_outputs", "accepts_requests", "fatal_error", "free_blocks"]


class _Router:
    """Stands in for transformers' OutputRouter: every output goes to `deliver(list)`."""

    def __init__(self, deliver: Callable):
        self._deliver = deliver

    def deliver(self, output) -> None:
        self._deliver([output])

    def deliver_batch(self, outputs) -> None:
        self._deliver(outputs)

    def fail_and_deliver(self, state, error: Exception) -> None:
        state.status, state.error = RequestStatus.FAILED, str(error)
        self._deliver([state.to_generation_output()])


def route_outputs(manager, deliver: Callable) -> None:
    """Send every output of `manager` (finished, streamed or failed) to deliver(list_of_outputs)."""
    manager.output_router = _Router(deliver)


def add_logits_processor(manager, processor) -> None:
    """Append a per-request processor to the manager's CB processor list (before `start`, i.e.
    before the batch processor sizes its argument tensors)."""
    plist = manager.logit_processor
    plist.logits_processor.append(processor)
    plist.tensors_required += 1
    plist._retrieve_processors_kwargs()
    plist.do_processing = True


def accepts_requests(manager) -> bool:
    """The generation thread is alive and has not recorded a fatal error or a stop."""
    return manager.is_running() and manager.background_thread_status.can_accept_new_requests() is None


def fatal_error(manager) -> BaseException | None:
    """The error that stopped the generation loop, if it recorded one."""
    return manager.background_thread_status.fatal_error


def free_blocks(manager) -> int | None:
    """Free KV-cache blocks (None before the loop built the cache). Blocks a finished request
    left cached for prefix reuse count as free: the cache evicts them when a live request needs room."""
    bp = getattr(manager, "batch_processor", None)
    if bp is None:
        return None
    cache = bp.cache
    free = cache.compute_free_capacity(relative=False)
    free += sum(len(a.ledger.cached_blocks) * a.bytes_per_block for a in cache.cache_allocators.values())
    return round(free / (cache.num_sectors * cache.bytes_per_sector) * cache.num_blocks)

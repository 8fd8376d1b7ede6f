"""A job's size is bounded by the memory this computer has, not by a fixed number of megapixels."""

from __future__ import annotations

import pytest

from core import memory
from core.requests import RequestError, _check_size


def test_a_4000x3000_layer_upscales_when_the_memory_is_there() -> None:
    need = memory.job_bytes("upscale", 4000, 3000, 4, 1)
    assert 2**30 < need < 16 * 2**30  # the 192 MP result, held a few times: gigabytes, not more
    free = memory.available()
    if free is None or need > free * memory.HEADROOM:
        pytest.skip(f"this computer has {free} bytes available, the job needs {need}")
    _check_size("upscale", 4000, 3000, 4, "u8", max_megapixels=0)  # the old 100 MP limit: refused


def test_too_big_for_this_computer_is_refused_with_advice_that_works_in_gimp() -> None:
    with pytest.raises(RequestError) as refused:
        _check_size("upscale", 65535, 65535, 4, "u16", max_megapixels=0)
    assert refused.value.status == 413 and refused.value.code == "too_large"
    message = refused.value.message
    assert "GB of memory" in message and "available" in message
    assert "selection" in message and "Image > Precision > 8 bit" in message
    assert "--max-megapixels" not in message  # not an option a GIMP user can reach


def test_an_explicit_server_limit_still_applies() -> None:
    with pytest.raises(RequestError, match="--max-megapixels"):
        _check_size("stylize", 3000, 2000, 3, "u8", max_megapixels=4)

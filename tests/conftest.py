"""Suite-wide settings and the ``needs_data`` marker.

Strict numerics: implicit rank promotion is a bug here. JAX's persistent compilation cache
is on (:mod:`jaxcl.compile_cache`; ``JAXCL_COMPILE_CACHE=0`` turns it off). Tests never
download: a test that needs a dataset is marked ``@pytest.mark.needs_data("mnist", ...)``
and is skipped, naming the datasets, when :func:`jaxcl.data.available` finds no prepared
copy.
"""

import os

import jax
import pytest

from jaxcl import compile_cache, data

os.environ.setdefault("JAXCL_NO_DOWNLOAD", "1")  # subprocesses inherit it

jax.config.update("jax_numpy_rank_promotion", "raise")
compile_cache.enable()  # a second run of the suite loads its programs


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_data(*names): skip unless these tfds datasets are prepared locally"
    )


def pytest_runtest_setup(item):
    for marker in item.iter_markers(name="needs_data"):
        missing = [name for name in marker.args if not data.available(name)]
        if missing:
            pytest.skip(f"needs the prepared dataset(s) {missing} (see README, Data)")

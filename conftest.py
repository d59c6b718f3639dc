"""pytest configuration shared by the suite: markers, and the fixtures several test modules use.

Helper functions live in ``tests/fielddata.py`` (``tests/`` is put on ``sys.path`` here);
fixtures live here, so that no test module imports another one.
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "tests"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "slurm: needs the local Slurm cluster (slurm/cluster-up.sh)")
    config.addinivalue_line("markers", "mpi: launches mpiexec")


@pytest.fixture(scope="session")
def plain_data(tmp_path_factory):
    """The sample field 2583-2-136 with its frames decompressed (shared; clone it to break files)."""
    from fielddata import stage_data

    return stage_data(tmp_path_factory.mktemp("plain") / "sdss")


@pytest.fixture(scope="session")
def detected_init(plain_data, tmp_path_factory):
    """SEP detection of the sample field written as an ``--init`` catalog (runs start from it)."""
    from fielddata import write_init_catalog

    return write_init_catalog(plain_data, tmp_path_factory.mktemp("init") / "init.fits")

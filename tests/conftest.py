import os

import pyro
import pytest
import torch

# tests run on 2 shared cores; more threads only add contention
torch.set_num_threads(int(os.environ.get("PPGEN_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Every test starts with an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def digits():
    from ppgen.data import load_digits

    return load_digits()


@pytest.fixture
def float64():
    """The test runs with float64 as torch's default dtype (exact-enumeration and closed-form
    oracles compared at tight tolerances); use with ``pytestmark = pytest.mark.usefixtures("float64")``."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)

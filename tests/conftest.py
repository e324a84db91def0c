import pytest

import bench
from bench import registry
from bench.task import Task


class NoTuning(Task):
    """A task with a denoiser but no tuning split."""
    name = "no-tuning"
    description = "test task without tuning data"
    shape = (2,)

    def denoisers(self):
        return dict(exact=lambda: bench.get_task("gmm8").exact_denoiser())


@pytest.fixture
def no_tuning_task():
    registry._load_builtin()
    registry._TASKS["no-tuning"] = NoTuning
    yield "no-tuning"
    del registry._TASKS["no-tuning"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run fastest on one thread (intra-op threads only contend on a loaded machine)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

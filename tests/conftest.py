import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))   # the tests' own modules (helpers) import by name

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic push-world data set in the BAIR layout (shared by the tests of a session)."""
    from cvae_video.data import synth
    root = tmp_path_factory.mktemp("synth") / "data"
    synth.write_dataset(root, n_train=24, n_validate=8, n_test=8, seed=3, progress=False)
    return root

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A tiny synthesized corpus (0.01 h, seed 3), shared read-only by the CLI tests."""
    from edgeasr.data.corpus import synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(out, hours=0.01, seed=3, jobs=1, progress=False)
    return out

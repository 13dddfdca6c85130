from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The built-in data sets at the small scale, generated once per test session."""
    from ssast.demo import builtin as demo

    root = tmp_path_factory.mktemp("demo")
    demo.build(root, "small", seed=0)
    return root

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The built-in data sets at the small scale, generated once per test session."""
    from ssast.data import demo

    root = tmp_path_factory.mktemp("demo")
    demo.build(root, "small", seed=0)
    return root


@pytest.fixture(scope="session")
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f"golden vectors not found at {REFERENCE} (../shared/reference beside the checkout)")
    return REFERENCE

"""Compiled manifests: the arrays give back the reader's examples; built once per source, mapped afterwards,
rebuilt when the source changes, shared by concurrent processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ssast.data.index import Dataset, Example, Examples, read_dataset, split_holdout
from ssast.data.sampling import class_balanced_weights
from ssast.data.sources import ManifestError, source

pytestmark = pytest.mark.unit

EXAMPLES = [Example("a.wav", (0, 2)), Example("ü/b.wav", ()), Example("c.wav", (1,)), Example("d.wav", (2, 1, 0))]


def test_packed_examples_index_like_the_list_they_came_from():
    packed = Examples.pack(EXAMPLES)
    assert len(packed) == 4 and list(packed) == EXAMPLES and packed[-1] == EXAMPLES[-1] and packed[1:3] == EXAMPLES[1:3]
    with pytest.raises(IndexError):
        packed[4]
    picked = packed.take(np.array([3, 1, 3]))
    assert list(picked) == [EXAMPLES[3], EXAMPLES[1], EXAMPLES[3]]
    values = np.array([1.0, 10.0, 100.0])
    assert picked.label_sums(values).tolist() == [111.0, 0.0, 111.0]
    assert packed.label_counts(3).tolist() == [2, 2, 2] and picked.label_counts(3).tolist() == [2, 2, 2]


def test_class_balanced_weights_equal_the_per_clip_formula():
    dataset = Dataset(EXAMPLES * 3 + [Example("e.wav", (1,))], ["x", "y", "z"])
    counts = np.zeros(3)
    for e in dataset.examples:
        counts[list(e.labels)] += 1
    expected = [sum(1000.0 / (counts[i] + 0.01) for i in e.labels) for e in dataset.examples]
    np.testing.assert_allclose(class_balanced_weights(dataset), expected, rtol=1e-12)


def write_manifest(tmp_path, n):
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n0,/m/a,A\n1,/m/b,B\n")
    data = [{"wav": f"clips/{i}.wav", "labels": "/m/a,/m/b" if i % 2 else "/m/b"} for i in range(n)]
    (tmp_path / "data.json").write_text(json.dumps({"data": data}))
    return source(kind="json", path=str(tmp_path / "data.json"), labels=str(tmp_path / "labels.csv"))


def test_a_manifest_compiles_once_maps_afterwards_and_recompiles_when_edited(tmp_path, manifest_cache):
    cfg = write_manifest(tmp_path, 5)
    before = set(manifest_cache.glob("*/*/meta.json"))
    first = read_dataset(cfg)
    assert [(e.path, e.labels) for e in first.examples] == [
        (str(tmp_path / f"clips/{i}.wav"), (0, 1) if i % 2 else (1,)) for i in range(5)
    ]
    assert first.classes == ["A", "B"] and first.multi_label
    built = set(manifest_cache.glob("*/*/meta.json")) - before
    assert len(built) == 1 and isinstance(first.examples.path_offsets, np.memmap)
    again = read_dataset(cfg)
    assert set(manifest_cache.glob("*/*/meta.json")) - before == built and list(again.examples) == list(first.examples)
    # An edited manifest (size or mtime) is compiled anew; its old arrays stay for readers still mapping them.
    cfg = write_manifest(tmp_path, 7)
    assert len(read_dataset(cfg).examples) == 7 and len(set(manifest_cache.glob("*/*/meta.json")) - before) == 2
    # A split of a compiled set indexes the same arrays.
    whole = read_dataset(cfg)
    rest, held = split_holdout(whole, 2)
    assert [e.path[-5:] for e in held.examples] == ["0.wav", "3.wav"]
    assert rest.examples.path_offsets is whole.examples.path_offsets and rest.examples.rows.tolist() == [1, 2, 4, 5, 6]
    assert len(rest.examples) == 5 and {e.path for e in rest.examples}.isdisjoint(e.path for e in held.examples)


def test_a_broken_manifest_leaves_nothing_in_the_cache(tmp_path, manifest_cache):
    (tmp_path / "bad.json").write_text('{"data": [{"wav": 3}]}')
    before = set(manifest_cache.iterdir())
    with pytest.raises(ManifestError, match="entry 0: expected an object with a 'wav' path string"):
        read_dataset(source(kind="json", path=str(tmp_path / "bad.json")))
    (folder,) = set(manifest_cache.iterdir()) - before  # the source's folder holds its lock, nothing else
    assert [p.name for p in folder.iterdir()] == [".lock"]


@pytest.mark.parametrize("damage", ["cut short", "a flipped byte", "no meta"])
def test_a_damaged_compiled_manifest_heals_with_one_warning(tmp_path, manifest_cache, damage):
    cfg = write_manifest(tmp_path, 3)
    before = set(manifest_cache.glob("*/*/meta.json"))
    expected = [(e.path, e.labels) for e in read_dataset(cfg).examples]
    (folder,) = {m.parent for m in set(manifest_cache.glob("*/*/meta.json")) - before}
    paths = folder / "paths.npy"
    if damage == "cut short":
        paths.write_bytes(paths.read_bytes()[:-10])
    elif damage == "a flipped byte":
        data = bytearray(paths.read_bytes())
        data[-1] ^= 0xFF
        paths.write_bytes(bytes(data))
    else:
        (folder / "meta.json").unlink()
    code = (
        "from ssast.data.index import read_dataset\nfrom ssast.data.sources import source\n"
        f"d = read_dataset(source('json', path={cfg.path!r}, labels={cfg.labels!r}))\n"
        "print([(e.path, e.labels) for e in d.examples])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == str(expected)
    why = {"cut short": "paths.npy is not", "a flipped byte": "paths.npy fails its checksum", "no meta": ""}[damage]
    if damage == "no meta":  # a version without meta.json is not there: compiled anew, no warning needed
        assert out.stderr == ""
    else:
        assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"compiled manifest {folder} is damaged ({why}")
        assert out.stderr.rstrip().endswith("): compiling it anew")
    healed = read_dataset(cfg)  # the version in place again, whole: read here without a warning or a compile
    assert [(e.path, e.labels) for e in healed.examples] == expected and (folder / "meta.json").is_file()
    assert not list(folder.parent.glob("*.tmp*"))


def test_concurrent_processes_build_one_compiled_manifest(tmp_path, manifest_cache):
    """Four processes read a fresh 20k-entry manifest at once: one builds (under the lock), all map the same
    arrays."""
    cfg = write_manifest(tmp_path, 20_000)
    before = set(manifest_cache.glob("*/*/meta.json"))
    code = (
        "import hashlib, logging; from ssast.data.index import read_dataset; from ssast.data.sources import source\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"d = read_dataset(source(kind='json', path={cfg.path!r}, labels={cfg.labels!r}))\n"
        "print(len(d.examples), hashlib.sha1(bytes(d.examples.paths[0:len(d.examples.paths)])).hexdigest())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs, logs = zip(*(p.communicate() for p in procs), strict=True)
    assert all(p.returncode == 0 for p in procs) and len(set(outputs)) == 1 and outputs[0].startswith("20000 ")
    assert "".join(logs).count("compiled 20000 clips") == 1
    built = set(manifest_cache.glob("*/*/meta.json")) - before
    assert len(built) == 1
    assert not [p for p in manifest_cache.rglob("*") if ".tmp" in p.name]  # no half-built folder left
    assert os.environ["SSAST_CACHE"] in str(built.pop())

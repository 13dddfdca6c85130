"""Data in four layers, each importing only those below it:

- `sources`: one config class per on-disk format (json, csv, AudioSet, ESC-50, Speech Commands, folder, list,
  shards), each parsing its format and naming the files that key the cache;
- `index`: a source's clips compiled once per node into memory-mapped arrays, and the held-out split;
- `sampling`: the training samplers (epoch, shard, class-balanced, mixture) and the train/valid assembly;
- `loader`: reading, decoding and features through fairseq2, bad clips counted.

Tools on top: `prepare` (corpora to manifests), `shards` (tar shards), `stats` (normalisation statistics).
"""

"""Self-supervised Audio Spectrogram Transformers: the library behind the pretrain, finetune, probes and slurm
stages. Its rooms, each importing only those listed before it:

- `config`, `cli`, `files`: typed configs and their command lines, atomic writes;
- `features`: the front end (waveform -> normalised fbank); `spectrograms`: pictures of the masked reconstruction;
- `models`: AST, SSAST and the classifier, masking, checkpoint formats and `load_model`, Hugging Face interop;
- `data`: sources, compiled indexes, samplers and the loader, and the `prepare` / `shards` / `stats` tools;
- `train`: the engine and what it runs in, the pretraining and fine-tuning tasks and protocols;
- `eval`: embedding stores, linear probes, kNN and retrieval, metrics, tables, the HEAR API;
- `demo`: the built-in data sets and the demo's report.
"""

"""Evaluation of frozen and fine-tuned encoders: embedding stores (`embeddings`), fair linear probes
(`linear_probe`) and the probe recipes that run them (`probes`), FAISS retrieval (`retrieval`), classification
metrics (`metrics`), result tables and learning curves (`tables`, `curves`), and the HEAR API (`hear`)."""

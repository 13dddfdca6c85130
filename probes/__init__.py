"""The probe stage (``python -m probes``): linear probes, kNN, embedding stores and retrieval."""

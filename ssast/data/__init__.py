"""Reading data: manifests and folder layouts (`readers`), the fairseq2 pipeline (`pipeline`), statistics (`stats`)."""

"""torch -> ONNX exporters (full, step and chunk graphs), graph clean-up, metadata, verification, TRT lint."""

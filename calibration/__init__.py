"""Calibration data from real streaming states, QDQ int8 quantization, accuracy-aware fallback."""

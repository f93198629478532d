"""Encoders, mixers, CTC head, DirDrop and the streaming state protocol (torch + numpy only)."""

"""Deployment path: feature frontend, CTC decoding and backend sessions. Never imports torch."""

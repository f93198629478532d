"""Click CLI, configs, corpus, training loop, parity and bench reports."""

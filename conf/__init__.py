"""Hydra configs; a package so that a plain `pip install .` ships them as `locseg.conf`."""

"""Test shim, on PYTHONPATH only when a daisy program runs under PyPI's daisy: there
``import blockwise.daisy as daisy`` gives the real ``daisy``."""

"""customs-edge agent: the program that runs on each screening unit."""

__version__ = "0.1.0"

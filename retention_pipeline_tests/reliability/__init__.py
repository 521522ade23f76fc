"""Reliability suite: the real job against real databases and real files, under kills and faults."""

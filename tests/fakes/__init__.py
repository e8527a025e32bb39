"""Narrow fakes at the OS boundary for code that needs hardware this machine lacks."""

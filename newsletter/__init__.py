"""Breakfast in red: collect the day's articles, render one edition, send it to every reader."""

__version__ = "0.1.0"

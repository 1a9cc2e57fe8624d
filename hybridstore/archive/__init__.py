"""Layouts as tar archives: the tar reader and writer, export, import, chart untar."""

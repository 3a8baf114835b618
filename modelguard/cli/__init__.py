"""Command-line interface: click commands that call the Python API and render."""

"""Thin click commands over the public Python API (`jobgroup`). The core never imports this."""

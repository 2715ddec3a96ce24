"""convstudy: CNN architecture studies you can trust."""

__version__ = "0.1.0"

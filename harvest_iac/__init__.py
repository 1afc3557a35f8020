"""harvest: infrastructure as code for Modal."""

__version__ = "0.1.0"

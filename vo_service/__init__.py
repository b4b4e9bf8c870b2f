"""vo-service: a Virtual Observatory image cutout service and cutout library."""

__version__ = "0.1.0"

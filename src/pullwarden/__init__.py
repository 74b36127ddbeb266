"""pullwarden: the kubelet image pull path with KEP-2535 credential verification."""

__version__ = "0.1.0"

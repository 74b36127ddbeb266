"""``python -m pullwarden``: the ``pullwarden`` command."""

from pullwarden.cli import console_main

console_main()

"""``python -m pullwarden``: the ``pullwarden`` command."""

from pullwarden.cli import main

main(prog_name="pullwarden")

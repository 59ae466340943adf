"""Subcommands of the ``alod`` CLI that live in their own module."""

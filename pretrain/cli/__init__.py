"""Command-line entry points. ``tools/*.py`` and the ``pretrain-*`` console scripts call these."""

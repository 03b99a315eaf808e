"""The ``flowproject`` command (also ``python -m flowproject``).

Each command lives in its own module of this package and registers itself on ``main``.
"""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Run and steer this project's sensors from a laptop."""


from . import dev, replay, reset, status  # noqa: E402,F401  (each registers its command)

"""``python -m flowproject``: the ``flowproject`` command."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="flowproject")

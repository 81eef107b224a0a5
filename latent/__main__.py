"""``python -m latent``: see :mod:`latent.cli`."""

from latent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m jaxrec.experiments NAME ...``: the same as ``jaxrec experiment NAME ...``."""

from jaxrec.experiments import main

main()

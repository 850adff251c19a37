"""``python -m seqclf``: the ``seqclf`` command line (``seqclf.cli.main``)."""

from seqclf.cli.main import run

run()

"""``python -m seqclf``: the ``seqclf`` command line (``seqclf.cli``)."""

from seqclf.cli import run

run()

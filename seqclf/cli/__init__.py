"""The ``seqclf`` command line (``main``), one module per command, and the
report and plots a person looks at (``report``, ``plots``)."""

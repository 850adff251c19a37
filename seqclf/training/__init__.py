"""The pieces of a training run, below the entry points (``seqclf.train``,
``seqclf.sweep``):

* ``state`` and ``steps``: the train state and the pure jitted steps;
* ``optim``: the optimizer a config describes;
* ``loop``: chunk boundaries and the chunk runner;
* ``parallel``: data parallelism (one device, pmap, sharded jit, processes);
* ``autotune``: ``impl='auto'``, the fastest path timed on this machine;
* ``checkpoint``: orbax checkpoints, resume and restore;
* ``preemption``, ``workdir``, ``metric_logging``: stop requests, the
  workdir lock, progress and TensorBoard.
"""

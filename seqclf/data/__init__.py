"""Data: from files to the arrays and batch order the trainer reads.

* ``splits``: what a dataset is (three splits of numpy arrays);
* ``registry``: which dataset a config names, loaded and checked;
* ``prepared`` with ``mnist_files``, ``mnist_builder``, ``fashion_mnist``
  and ``timeseries``: the tfds datasets, fetched, verified and prepared once;
* ``npz``: the user's own arrays;
* ``views``: how a model reads an image (rows, pixels, permuted pixels);
* ``order``: batches as a pure function of (seed, step);
* ``ops``: operations on batches, on the host or inside the train step;
* ``sequence_files`` and ``images``: files to classify.
"""

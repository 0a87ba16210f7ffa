"""The disease trees (``anterior.json``, ``fundus.json``: data, not code) and the label maps
that turn a data set's labels into their codes (``*_labels.json``); ``tree.py`` loads and
walks the trees, ``ml/data.py`` reads the label maps.

May import: ``services.kernel``. Imported by every context (at any depth)."""

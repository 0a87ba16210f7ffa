"""The prospective study: one analysis record per eye with its reference standard
(``records``), and the tables of the export, one module per family (``tables``).

May import: the shared kernel, ``services.clinic``, ``services.reporting``,
``services.screening``. Exports nothing other contexts need."""

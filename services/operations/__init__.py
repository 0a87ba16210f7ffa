"""Operations: online backups and their restore (``backup``), and the sweeps that bring work
back after a crash or an outage (``recovery``).

May import: the shared kernel, ``services.clinic``, ``services.reporting``."""

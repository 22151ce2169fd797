"""The stages of one sample, in the order a joule travels (``exporter/sampler.py`` runs them):

1. :mod:`.cpu` — processes and node CPU time from procfs, CPU energy from the CPU meter;
2. :mod:`.gpu` — each GPU's reading through its backend, turned into an energy delta by its
   :class:`~exporter.pipeline.device.GpuAccount`;
3. :mod:`.requests` — engine request/token increments into the ledger;
4. :mod:`.booking` — attribution (``exporter.attribution``, pure) → identity
   (``exporter.identity.resolver``) → the ledger, and carbon (:mod:`.carbon`) from the same split.

Every stage takes its inputs explicitly, keeps its own state behind ``checkpoint()``/``restore()``
when it has any, and contributes its own series to the snapshot (``contribute(snap)``).
"""

"""Data quality: exact and near duplicates (``units``, ``minhash``, ``dedupe``), split leakage and
contamination (``contamination``), and the report of ``gradwise data check`` (``check``)."""

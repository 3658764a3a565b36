"""dicom-vault: the vault core (API app, catalog, object store, auth, audit, retention).

Importing it first sets pydicom up so that no element value reaches a log
(:mod:`vault.pydicom_quiet`).
"""

from vault import pydicom_quiet as _pydicom_quiet  # noqa: F401  (configures on import)

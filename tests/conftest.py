"""Shared test configuration: the session-service plugins.

The tests build their own settings; an operator's environment must not reach
them. Settings read ``DICOM_VAULT_*`` variables and the file named by
``DICOM_VAULT_CONFIG``, so a test run from a shell set up for a deployment
would write its organisations, cases and studies into that deployment's
catalog and bucket. They are removed here, before any test or service
starts (``DICOM_VAULT_TEST_*``, the tests' own, stay).
"""

import os

for _name in [name for name in os.environ if name.startswith("DICOM_VAULT_")]:
    if not _name.startswith("DICOM_VAULT_TEST_"):
        del os.environ[_name]

pytest_plugins = [
    "tests.services.seaweedfs",
    "tests.services.stores",
    "tests.services.softhsm",
    "tests.services.openbao",
    "tests.services.key_providers",
    "tests.services.postgres",
    "tests.services.vault_env",
    "tests.services.auth_env",
    "tests.services.redis",
    "tests.services.dicom_peers",
    "tests.services.browser",
]

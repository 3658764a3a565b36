"""Shared test configuration: the session-service plugins."""

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

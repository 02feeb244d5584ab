"""The test suite's fixtures live in tests/support and are registered here, once."""

pytest_plugins = [
    "support.store_fixtures",
    "support.adb_fixtures",
]

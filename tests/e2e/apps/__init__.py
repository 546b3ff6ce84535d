"""Apps the end-to-end tests serve with ``nessen serve tests.e2e.apps.sample:NAME``."""

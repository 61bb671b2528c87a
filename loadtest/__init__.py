"""The Locust load-test suite (see loadtest/README.md)."""

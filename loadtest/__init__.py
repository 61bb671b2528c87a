"""The Locust load-test suite of quart-sse (``locust -f loadtest/locustfile.py``)."""

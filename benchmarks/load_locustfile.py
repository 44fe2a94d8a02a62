"""Locust user for benchmarks/load.py: FastHttpUser, no wait, one GET of the static file.

The path comes from WIREKIT_BENCH_PATH (set by load.py) so both sides always agree.
"""

import os

from locust import FastHttpUser, constant, task

PATH = os.environ.get("WIREKIT_BENCH_PATH", "/small.txt")


class StaticFile(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self) -> None:
        self.client.get(PATH)

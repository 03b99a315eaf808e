"""The floor of a sensor check: a two-step Metaflow flow whose ``start`` lists the prefix with a
plain boto3 client (no comparison, no state, no card).

It pays what the sensor cannot avoid: Metaflow's cost, S3's cost and boto3's import, once, as
the sensor pays them. The bucket and prefix come from ``FLOOR_BUCKET`` and ``FLOOR_PREFIX``
(environment, so the flow stores no parameter artifacts).
"""

import os

from metaflow import FlowSpec, step


class FloorFlow(FlowSpec):
    @step
    def start(self):
        import boto3

        client = boto3.client("s3")
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=os.environ["FLOOR_BUCKET"], Prefix=os.environ["FLOOR_PREFIX"]
        )
        print("%d objects" % sum(len(page.get("Contents", ())) for page in pages))
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    FloorFlow()

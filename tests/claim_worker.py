"""The worker of test_downstream's concurrent-claim test (and the storage its claims use), in a
module of its own: each spawned process imports this module only, not the test file with its
pyiceberg, deltalake and fixtures (about half a second of CPU in each of the eight processes)."""

import os


def local_storage(root):
    """Metaflow's local datastore storage in ``root``/.metaflow."""
    from metaflow.plugins.datastores.local_storage import LocalStorage

    return LocalStorage(os.path.join(str(root), ".metaflow"))


def claim_in_process(root, run, barrier, answers):
    """Claim change ``c1`` of TrainFlow as ``run`` once every process is ready; answer
    ``(run, whether it may proceed)``."""
    from flowproject.once import ProcessedOnce

    storage = local_storage(root)
    barrier.wait()
    verdict = ProcessedOnce(storage, "TrainFlow", "p", "user.t", {"default": "c1"}).claim(run)
    answers.put((run, verdict.proceed))

"""The worker of test_downstream's concurrent-claim test, in a module of its own: each spawned
process imports this module only, not the test file with its pyiceberg, deltalake and
fixtures (about half a second of CPU in each of the eight processes)."""

import os


def claim_in_process(root, run, barrier, answers):
    """Claim change ``c1`` of TrainFlow as ``run`` once every process is ready; answer
    ``(run, whether it may proceed)``."""
    from metaflow.plugins.datastores.local_storage import LocalStorage

    from flowproject.once import ProcessedOnce

    storage = LocalStorage(os.path.join(str(root), ".metaflow"))
    barrier.wait()
    verdict = ProcessedOnce(storage, "TrainFlow", "p", "user.t", {"default": "c1"}).claim(run)
    answers.put((run, verdict.proceed))

"""Supervision of a served Flow: when one of its processes dies, the whole Flow stops with a non-zero exit status.

Jina 3 neither restarts a dead executor nor stops the Flow: after `kill -9` of one executor every request failed
with a ConnectionError while the Flow process stayed alive, so no supervisor acted. `python -m dalle_flow serve`
watches every process of the Flow (gateway, heads, executor replicas) once per `POLL_S`; when one has exited it logs
which, stops the rest (SIGTERM, then SIGKILL after `STOP_GRACE_S`) and exits with `EXIT_PROCESS_DIED`, so Docker (`--restart`), Kubernetes or systemd starts it
again; the gateway's port closes with it, so the health check fails at once.
"""
from __future__ import annotations

import os
import sys
import threading
import time

EXIT_PROCESS_DIED = 3
POLL_S = 1.0
STOP_GRACE_S = 10.0  # how long the other processes get to close after one died


def flow_processes(flow) -> list[tuple[str, object]]:
    """(name, multiprocessing.Process) of every process a started Flow runs locally."""
    processes = []
    for deployment in flow._deployment_nodes.values():
        pods = [deployment.gateway_pod, deployment.head_pod, deployment.uses_before_pod, deployment.uses_after_pod]
        for replicas in deployment.shards.values():
            pods += list(replicas._pods)
        for pod in pods:
            worker = getattr(pod, "worker", None)
            if worker is not None:
                processes.append((pod.name, worker))
    return processes


class Watchdog(threading.Thread):
    """Sets `stop_event` (what `Flow.block` waits on) once any watched process has exited; `dead` says which."""

    def __init__(self, processes, stop_event: threading.Event, poll_s: float = POLL_S):
        super().__init__(name="dalle-flow-watchdog", daemon=True)
        self.processes = processes
        self.stop_event = stop_event
        self.poll_s = poll_s
        self.finished = threading.Event()  # set when the Flow stops for another reason: no more watching
        self.dead: tuple[str, int, int | None] | None = None

    def run(self):
        while not self.finished.wait(self.poll_s):
            for name, process in self.processes:
                if not process.is_alive():
                    self.dead = (name, process.pid, process.exitcode)
                    self.stop_event.set()
                    return

    def report(self) -> str:
        name, pid, code = self.dead
        return (f"error: {name} (pid {pid}) exited with code {code}; stopping the Flow so that a supervisor restarts "
                f"it (exit status {EXIT_PROCESS_DIED})")


def serve_supervised(flow) -> int:
    """Serve a Flow until interrupted (0) or until one of its processes dies (EXIT_PROCESS_DIED)."""
    stop = threading.Event()
    with flow:
        processes = flow_processes(flow)
        for name, process in processes:
            print(f"watching {name} (pid {process.pid})", file=sys.stderr, flush=True)
        watchdog = Watchdog(processes, stop)
        watchdog.start()
        try:
            flow.block(stop_event=stop)
        finally:
            watchdog.finished.set()
        if watchdog.dead is not None:
            print(watchdog.report(), file=sys.stderr, flush=True)
            stop_processes([process for _, process in processes])
            sys.stdout.flush()
            # not Flow.__exit__: Jina's orderly close waits about a minute on the dead executor before it gives up,
            # and a supervisor should restart the Flow within seconds
            os._exit(EXIT_PROCESS_DIED)
    return 0


def stop_processes(processes, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every live process (executors close, e.g. the store its database), SIGKILL what is left after grace_s."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5)

"""``flowproject dev``: the reactive loop on a laptop, sensor -> event -> triggered flow.

Metaflow's ``@trigger`` has no effect on local runs. ``DevLoop`` plays Argo Events' part:
it receives the sensor's events on a loopback webhook (the Argo Events webhook format) and
starts each flow at the repository root whose ``@trigger`` listens for the event, in the same
``@project`` branch, with the payload mapped to its Parameters as the Sensor Metaflow compiles
would map them (``flowproject.argo_sensor``). Like Argo, it does not de-duplicate.

A flow whose ``@trigger`` has several events (``@sensor_trigger(sources=[...])``) starts once
each of them has arrived since the flow was last started, as Argo Events does for the Sensor
Metaflow compiles (every dependency required), each Parameter from its own event's payload
(the latest event of each). What has arrived is remembered across ``flowproject dev``
invocations in ``<cwd>/.metaflow/flowproject-dev/<project>/<branch>/<Flow>.json`` (``cwd``:
where the runs start), and forgotten when the flow starts.

Every event the webhook receives is written to
``<cwd>/.metaflow/flowproject-dev/<project>/<branch>/received/`` (atomically, before the
webhook answers the sensor, so before anything starts) and marked delivered once the flows it
triggers have started. An event received but never delivered (``flowproject dev`` stopped by
Ctrl-C while the sensor run was finishing) is delivered by the next ``flowproject dev`` in
that folder before its first check, or dropped with ``--drop-undelivered``; either way the
timeline says so. Delivery is at least once: an interruption between starting a flow and
marking its event delivered starts that flow again next time (consumers de-duplicate on
``change_id``).
"""

import datetime
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from .config import DEFAULT_SOURCE, configured_sources, load_flowconfig
from .cron import every_seconds
from .exceptions import DevLoopError


def escape(text):
    """``text`` shown as it is in the timeline's rich markup (stored data is never markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(str(text))


# The tag every run the dev loop starts carries, so dev runs can be told from real ones.
DEV_TAG = "flowproject-dev"

_RUN_ID = re.compile(r"Workflow starting \(run-id (\S+)\)")
_START_LINE = re.compile(r"/start/\d+ \(pid \d+\)\] (.*)$")
_SCRIPT = re.compile(r"\bBaseFlow\b|\bflowconfig\b")


class TriggeredRun(object):
    """A flow run the dev loop started on an event."""

    def __init__(self, flow_file, flow_name, event, argv, process, log_path, run_id_file):
        self.flow_file, self.flow_name, self.event = flow_file, flow_name, event
        self.argv, self.process = argv, process
        self.log_path, self.run_id_file = log_path, run_id_file
        self.returncode = None
        self.announced = False

    @property
    def run_id(self):
        try:
            with open(self.run_id_file) as f:
                return f.read().strip() or None
        except OSError:
            return None

    @property
    def pathspec(self):
        return "%s/%s" % (self.flow_name, self.run_id or "?")


def payload_arguments(rule, payload, parameter_names):
    """The command-line options that start a flow on an event, as Argo's Sensor would.

    Parameters
    ----------
    rule : dict
        One of ``argo_sensor.trigger_rules``: ``parameters`` ({param: payload key}) and
        ``required`` (payload keys that must be present).
    payload : dict
        The event's payload.
    parameter_names : iterable of str
        The flow's Parameter names as declared (the options are spelled that way).

    Returns
    -------
    list of str or None
        ``["--name", "value", ...]``; None when a required key is missing (Argo's filter
        then starts nothing). A missing optional key keeps the Parameter's default.
    """
    if any(key not in payload for key in rule["required"]):
        return None
    spelled = {name.lower(): name for name in parameter_names}
    args = []
    for param, key in sorted(rule["parameters"].items()):
        if key not in payload:
            continue
        value = payload[key]
        # The Sensor's dataTemplate: a string as is, anything else as JSON.
        value = value if isinstance(value, str) else json.dumps(value)
        args += ["--%s" % spelled.get(param, param), value]
    return args


def _alive(pid):
    """Whether a process ``pid`` runs (on this machine)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _RecordingList(list):
    """The webhook's list of events, calling ``on_append(event)`` before an event is added
    (under the webhook's lock, before it answers): if that raises, the sensor is answered
    with an error and publishes again on its next check."""

    def __init__(self, on_append):
        super().__init__()
        self.on_append = on_append

    def append(self, event):
        self.on_append(event)
        super().append(event)


class DevLoop(object):
    """Run the sensor on its schedule and start the flows its events trigger, locally.

    Parameters
    ----------
    root : str
        The repository root: the sensor flow and the triggered flows (``*flow.py``) live there.
    config : str, optional
        A ``flowconfig.toml`` passed as ``--config flowconfig PATH`` to the flows that use it;
        the root's ``flowconfig.toml`` by default.
    branch : str, optional
        ``@project`` branch (``--branch``) of every run; ``production`` selects prod instead.
    every : float, optional
        Seconds between checks, instead of the sensor's ``cron_schedule``.
    checks : int, optional
        Stop after this many checks, once the triggered runs have finished.
    sensor_flow : str
        File name of the sensor flow at the root.
    env : dict, optional
        Environment of the runs; ``os.environ`` by default.
    console : rich.console.Console, optional
        Where the timeline is printed.
    python : str, optional
        The Python that runs the flows; this one by default.
    log_dir : str, optional
        Folder for the runs' logs; a new temporary folder by default.
    cwd : str, optional
        Folder the runs start in (where their local ``.metaflow`` is); the current one by
        default. What a multi-event flow received since its last start is kept in
        ``<cwd>/.metaflow/flowproject-dev/<project>/<branch>/<Flow>.json``, so a later
        ``DevLoop`` (tomorrow's ``flowproject dev``) in the same folder carries it on; every
        event received, until it is delivered, in ``.../<project>/<branch>/received/``.
    drop_undelivered : bool
        ``run()`` drops the events an earlier loop received but never delivered, instead of
        delivering them before the first check (saying so either way).

    Examples
    --------
    >>> with DevLoop(".", config="flowconfig.toml") as loop:
    ...     succeeded, events = loop.check(1)
    ...     loop.reap(wait=True)
    >>> [(run.pathspec, run.returncode) for run in loop.runs]
    """

    def __init__(
        self,
        root=".",
        config=None,
        branch=None,
        production=False,
        every=None,
        checks=None,
        sensor_flow="sensorflow.py",
        env=None,
        console=None,
        python=None,
        log_dir=None,
        cwd=None,
        drop_undelivered=False,
    ):
        from rich.console import Console

        self.root = os.path.abspath(root)
        self.config = os.path.abspath(config) if config else None
        self.branch, self.production = branch, production
        self.every, self.checks = every, checks
        self.sensor_flow = sensor_flow
        self.python = python or sys.executable
        self.cwd = cwd  # where the runs keep .metaflow; the current folder by default
        self.console = console or Console(highlight=False, soft_wrap=True)
        self._log_dir = log_dir
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONUNBUFFERED"] = "1"
        # The flows import flowproject from the root; `-m flowproject.argo_sensor` needs this
        # very package even when the root is elsewhere.
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.env["PYTHONPATH"] = os.pathsep.join(
            [self.root, package_parent] + [p for p in [self.env.get("PYTHONPATH")] if p]
        )
        # What multi-event flows received since their last start (see memory_path).
        self.memory_root = os.path.join(
            os.path.abspath(self.cwd or os.getcwd()), ".metaflow", "flowproject-dev"
        )
        self.drop_undelivered = drop_undelivered
        self._received_files = []  # the record of each event received, in receiver order
        self._received_folder = None
        self.receiver = None
        self.runs = []  # every TriggeredRun started
        self.failures = []  # what failed, one line each
        self.flows = {}  # flow file -> description (triggered flows only)
        self._sensor_process = None
        self._seen_events = 0

    # ------------------------------------------------------------------ set-up

    @property
    def log_dir(self):
        """The folder of the logs: ``log_dir``, else a temporary folder made when the first
        log is written (a loop that never starts, e.g. on an invalid config, leaves none)."""
        if self._log_dir is None:
            self._log_dir = tempfile.mkdtemp(prefix="flowproject-dev-")
        return self._log_dir

    def flowconfig(self):
        path = self.config or os.path.join(self.root, "flowconfig.toml")
        try:
            return load_flowconfig(path)
        except OSError as e:
            raise DevLoopError("cannot read %s: %s" % (path, e)) from None

    def project_args(self):
        if self.production:
            return ["--production"]
        return ["--branch", self.branch] if self.branch else []

    def top_args(self, flow_file):
        """Options before the command: ``--config`` for flows using flowconfig, the branch."""
        with open(os.path.join(self.root, flow_file), encoding="utf-8") as f:
            uses_config = bool(_SCRIPT.search(f.read()))
        args = ["--config", "flowconfig", self.config] if (self.config and uses_config) else []
        return args + self.project_args()

    def discover(self):
        """Describe every flow at the root with a ``@trigger`` (Metaflow's own processing)."""
        from .argo_sensor import trigger_rules

        for path in sorted(glob.glob(os.path.join(self.root, "*flow.py"))):
            flow_file = os.path.basename(path)
            if flow_file == self.sensor_flow:
                continue
            out = os.path.join(self.log_dir, flow_file + ".describe.json")
            argv = [self.python, "-m", "flowproject.argo_sensor", "--describe-out", out, path]
            argv += self.top_args(flow_file) + ["argo-workflows", "create", "--only-json"]
            proc = subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, text=True)
            if proc.returncode != 0 or not os.path.exists(out):
                raise DevLoopError(
                    "cannot read the triggers of %s:\n%s"
                    % (flow_file, "\n".join((proc.stdout + proc.stderr).splitlines()[-15:]))
                )
            with open(out) as f:
                description = json.load(f)
            if description["triggers"]:
                description["rules"] = trigger_rules(description)
                self.flows[flow_file] = description
        return self.flows

    # ------------------------------------------------------------------ the timeline

    def say(self, text):
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        self.console.print("[dim]%s[/dim] %s" % (stamp, text))

    # ------------------------------------------------------------------ one check

    def check(self, number):
        """Run the sensor once and deliver the events it published.

        Returns
        -------
        tuple
            ``(succeeded, events)``: whether the sensor run succeeded, the events received.
        """
        flow = os.path.join(self.root, self.sensor_flow)
        argv = [self.python, flow] + self.top_args(self.sensor_flow) + ["run", "--tag", DEV_TAG]
        log_path = os.path.join(self.log_dir, "check-%d.log" % number)
        self.say(
            "[bold]check %d[/bold]: %s" % (number, escape(" ".join([self.sensor_flow] + argv[2:])))
        )
        with open(log_path, "w") as log:
            self._sensor_process = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            returncode = self._sensor_process.wait()
            self._sensor_process = None
        with open(log_path) as f:
            output = f.read()
        match = _RUN_ID.search(output)
        name = "SensorFlow/%s" % (match.group(1) if match else "?")
        reason = self._decision_line(output)
        if returncode != 0:
            self.say(
                "  [red]%s failed[/red] (exit %d, log %s)" % (name, returncode, escape(log_path))
            )
            for line in output.strip().splitlines()[-8:]:
                self.console.print("    " + line, markup=False, highlight=False)
            self.failures.append("check %d (%s, exit %d)" % (number, name, returncode))
        else:
            for line in self._source_decision_lines(output) or [reason or "(no decision printed)"]:
                self.say("  %s decided: %s" % (name, escape(line)))  # the source's words
        events = self.receiver.events[self._seen_events :]
        records = self._received_files[self._seen_events : self._seen_events + len(events)]
        self._seen_events += len(events)
        if returncode == 0 and not events:
            self.say("  no event")
        for event, record in zip(events, records, strict=True):
            self.deliver_recorded(event, record)
        return returncode == 0, events

    @staticmethod
    def _decision_line(output):
        # The sensor's start step prints decision.reason last; Metaflow prefixes the task.
        reason = None
        for line in output.splitlines():
            match = _START_LINE.search(line)
            if match and not match.group(1).startswith(("Task is starting", "Task finished")):
                reason = match.group(1).strip()
        return reason

    def _source_decision_lines(self, output):
        """The decision of each source (``orders: unchanged ...``) with [sources.<name>]."""
        # A named source's lines start with its name; the one [data] source's do not.
        names = tuple(
            "%s: " % watched.name
            for watched in configured_sources(self.flowconfig())
            if watched.name != DEFAULT_SOURCE
        )
        if not names:
            return []
        lines = []
        for line in output.splitlines():
            match = _START_LINE.search(line)
            if match and match.group(1).startswith(names):
                lines.append(match.group(1).strip())
        return lines

    def deliver(self, event):
        """Start every flow whose trigger listens for ``event``; show what happened.

        A flow with several events starts only once each has arrived since its last start
        (``memory_path`` keeps what arrived); until then the timeline says what it waits for.

        Returns
        -------
        int
            The number of runs started.
        """
        name, payload = event.get("name"), event.get("payload") or {}
        shown = ", ".join(
            "%s=%s" % (k, payload[k]) for k in ("change_id",) + self._mapped_keys() if k in payload
        )
        self.say("  [cyan]event[/cyan] %s (%s)" % (escape(name), escape(shown)))
        started = listening = 0
        for flow_file, description in self.flows.items():
            for rule in description["rules"]:
                if rule["event"] != name:
                    continue
                listening += 1
                args = payload_arguments(rule, payload, description["parameters"])
                if args is None:
                    self.say(
                        "  %s not started: the payload lacks %s (Argo's filter would drop it)"
                        % (description["flow"], ", ".join(rule["required"]))
                    )
                    continue
                if len(description["rules"]) > 1:
                    started += self._deliver_one_of_several(flow_file, description, event)
                    continue
                self.start(flow_file, description["flow"], event, args)
                started += 1
        if not listening:
            self.say("  [yellow]no flow listens to %s[/yellow]" % escape(name))
        return started

    # ------------------------------------------------------------------ received events

    def received_folder(self):
        """Where each event received is recorded until delivered:
        ``<cwd>/.metaflow/flowproject-dev/<project>/<branch>/received`` (the sensor's project
        and branch: another branch's loop in the same folder keeps its own)."""
        if self._received_folder is None:
            from .operations import project_branch

            if self.branch or self.production:
                branch = project_branch(self.branch, self.production)
            else:  # the user of the runs (self.env), as Metaflow names the branch
                user = self.env.get("METAFLOW_USER") or self.env.get("USER") or "unknown"
                branch = "user.%s" % user
            project = self.flowconfig()["project_name"]
            self._received_folder = os.path.join(
                self.memory_root, project, branch.replace("/", "_"), "received"
            )
        return self._received_folder

    @staticmethod
    def _write_record(path, record):
        """Write ``record`` (JSON) to ``path`` atomically and durably: a reader, or the next
        ``flowproject dev`` after a crash, sees the old file or the new one, never half."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = "%s.%d.tmp" % (path, os.getpid())
        with open(temporary, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)

    def record_received(self, event):
        """Record ``event`` as received and not yet delivered; return the record's path.

        Called by the webhook before it answers the sensor: an event the sensor was told
        was published is on disk before anything starts."""
        now = datetime.datetime.now()
        path = os.path.join(
            self.received_folder(),
            "%s-%s.json" % (now.strftime("%Y%m%dT%H%M%S%f"), uuid.uuid4().hex[:8]),
        )
        record = {
            "event": event,
            "received_at": now.isoformat(sep=" ", timespec="seconds"),
            "pid": os.getpid(),
            "delivered_at": None,
            "started": None,
            "dropped_at": None,
        }
        self._write_record(path, record)
        return path

    def _on_receive(self, event):
        self._received_files.append(self.record_received(event))

    def _settle_record(self, path, **changes):
        """Mark the record at ``path`` delivered (``started``: the flows started) or
        dropped."""
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            record = {}
        record.update(changes)
        self._write_record(path, record)

    def deliver_recorded(self, event, record_path):
        """``deliver(event)``, then mark its record delivered (the flows have started)."""
        before = len(self.runs)
        started = self.deliver(event)
        self._settle_record(
            record_path,
            delivered_at=datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
            started=[run.flow_name for run in self.runs[before:]],
        )
        return started

    def undelivered(self, mine=False):
        """``[(path, record)]`` of the events received but never delivered, oldest first.

        Parameters
        ----------
        mine : bool
            Only those this process received; otherwise only those of loops no longer
            running (a loop still running in this folder delivers its own)."""
        try:
            names = sorted(os.listdir(self.received_folder()))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.received_folder(), name)
            try:
                with open(path) as f:
                    record = json.load(f)
            except (OSError, ValueError) as e:
                self.say(
                    "  [yellow]unreadable record of a received event[/yellow] %s: %s"
                    % (escape(path), escape(str(e)))
                )
                continue
            if not isinstance(record, dict) or not isinstance(record.get("event"), dict):
                self.say("  [yellow]not a record of a received event:[/yellow] %s" % escape(path))
                continue
            if record.get("delivered_at") or record.get("dropped_at"):
                continue
            pid = record.get("pid")
            if mine != (pid == os.getpid()):
                if mine or _alive(pid):
                    continue
            found.append((path, record))
        return found

    def _describe_received(self, record):
        event = record["event"]
        payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
        return "%s (change_id=%s) received at %s" % (
            event.get("name"),
            payload.get("change_id", "?"),
            record.get("received_at", "?"),
        )

    def deliver_undelivered(self):
        """Deliver (or, with ``drop_undelivered``, drop) the events an earlier loop received
        but never delivered, saying which. Returns the number of runs started."""
        left = self.undelivered()
        if not left:
            return 0
        self.say(
            "[yellow]%d event(s) received by an earlier flowproject dev were never delivered"
            "[/yellow] (it was stopped before starting the flows they trigger):" % len(left)
        )
        for _, record in left:
            self.say("  %s" % escape(self._describe_received(record)))
        started = 0
        for path, record in left:
            if self.drop_undelivered:
                self._settle_record(
                    path,
                    dropped_at=datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
                )
                self.say(
                    "  dropped (--drop-undelivered), no flow started: %s"
                    % escape(self._describe_received(record))
                )
                continue
            self.say("  delivering %s" % escape(self._describe_received(record)))
            started += self.deliver_recorded(record["event"], path)
        return started

    def _forget_settled(self, keep=20):
        """Delete the records of delivered or dropped events but the newest ``keep``."""
        try:
            names = sorted(n for n in os.listdir(self.received_folder()) if n.endswith(".json"))
        except FileNotFoundError:
            return
        settled = []
        for name in names:
            path = os.path.join(self.received_folder(), name)
            try:
                with open(path) as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and (
                record.get("delivered_at") or record.get("dropped_at")
            ):
                settled.append(path)
        for path in settled[:-keep] if keep else settled:
            try:
                os.unlink(path)
            except OSError:
                pass

    # ------------------------------------------------------------------ several events

    def memory_path(self, description):
        """The file holding what a multi-event flow received since its last start:
        ``<cwd>/.metaflow/flowproject-dev/<project>/<branch>/<Flow>.json``."""
        parts = [p for p in (description.get("project"), description.get("branch")) if p]
        return os.path.join(self.memory_root, *parts, description["flow"] + ".json")

    def received_since_start(self, description):
        """``{event name: {"payload": ..., "received_at": ...}}`` of a multi-event flow: the
        latest event of each of its rules received since its last start (this invocation
        or an earlier one). Events it no longer listens to, or would drop, are left out."""
        try:
            with open(self.memory_path(description)) as f:
                received = json.load(f).get("received") or {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise DevLoopError(
                "cannot read %s (delete it to forget what %s received): %s"
                % (self.memory_path(description), description["flow"], e)
            ) from None
        kept = {}
        for rule in description["rules"]:
            event = received.get(rule["event"])
            if not isinstance(event, dict) or not isinstance(event.get("payload"), dict):
                continue
            if payload_arguments(rule, event["payload"], description["parameters"]) is None:
                continue
            kept[rule["event"]] = event
        return kept

    def _remember(self, description, received):
        path = self.memory_path(description)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        state = {"flow": description["flow"], "received": received}
        temporary = "%s.%d.tmp" % (path, os.getpid())
        with open(temporary, "w") as f:
            json.dump(state, f, indent=2, sort_keys=True)
        os.replace(temporary, path)  # a reader sees the old file or the new one, never half

    def _short_event_name(self, description, name):
        """``orders_updated`` for ``mfns.<project>.<branch>.orders_updated`` of this flow."""
        prefix = "mfns.%s.%s." % (description.get("project"), description.get("branch"))
        return name[len(prefix) :] if name.startswith(prefix) else name

    def waiting_line(self, description, received, with_times=False):
        """``TwoSourceFlow waits for orders_updated (events_updated received)``."""
        missing = [r["event"] for r in description["rules"] if r["event"] not in received]
        got = [
            self._short_event_name(description, r["event"])
            + " received"
            + (" at %s" % received[r["event"]].get("received_at") if with_times else "")
            for r in description["rules"]
            if r["event"] in received
        ]
        return "%s waits for %s (%s)" % (
            description["flow"],
            ", ".join(self._short_event_name(description, e) for e in missing),
            ", ".join(got) or "nothing received",
        )

    def _deliver_one_of_several(self, flow_file, description, event):
        """Remember ``event`` for a multi-event flow; start the flow once all have arrived.

        The memory is read, changed and written under a file lock: two dev loops in one
        folder neither lose an event nor start the flow twice on the same pair."""
        from filelock import FileLock

        path = self.memory_path(description)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with FileLock(path + ".lock", timeout=60):
            return self._deliver_locked(flow_file, description, event)

    def _deliver_locked(self, flow_file, description, event):
        received = self.received_since_start(description)
        received[event["name"]] = {
            "payload": event.get("payload") or {},
            "received_at": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
        }
        if any(rule["event"] not in received for rule in description["rules"]):
            self._remember(description, received)
            self.say("  " + escape(self.waiting_line(description, received)))
            return 0
        args = []
        for rule in description["rules"]:
            payload = received[rule["event"]]["payload"]
            args += payload_arguments(rule, payload, description["parameters"])
        self.start(flow_file, description["flow"], event, args)
        self._remember(description, {})  # Argo's Sensor starts over after triggering
        return 1

    def _mapped_keys(self):
        # The timeline shows the announced values; a manifest's URL is a long path.
        keys, not_shown = [], ["change_id", "changes_url"]
        for description in self.flows.values():
            for rule in description["rules"]:
                keys += [k for k in rule["parameters"].values() if k not in keys + not_shown]
        return tuple(keys)

    def start(self, flow_file, flow_name, event, args):
        number = len(self.runs) + 1
        log_path = os.path.join(self.log_dir, "run-%d-%s.log" % (number, flow_name))
        run_id_file = os.path.join(self.log_dir, "run-%d.id" % number)
        if os.path.exists(run_id_file):  # from an earlier dev loop with the same --logs
            os.unlink(run_id_file)
        argv = [self.python, os.path.join(self.root, flow_file)] + self.top_args(flow_file)
        argv += ["run", "--run-id-file", run_id_file, "--tag", DEV_TAG] + args
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        run = TriggeredRun(flow_file, flow_name, event, argv, process, log_path, run_id_file)
        self.runs.append(run)
        self.say("  -> started %s %s" % (flow_name, escape(" ".join(args))))
        return run

    def reap(self, wait=False):
        """Report the triggered runs that finished (all of them with ``wait``)."""
        for run in self.runs:
            if run.returncode is not None:
                continue
            if not run.announced and run.run_id:
                run.announced = True
                self.say("  %s running (log %s)" % (run.pathspec, escape(run.log_path)))
            code = run.process.wait() if wait else run.process.poll()
            if code is None:
                continue
            run.returncode = code
            if code == 0:
                self.say("  [green]%s succeeded[/green]" % run.pathspec)
            else:
                self.say(
                    "  [red]%s failed[/red] (exit %d, log %s)" % (run.pathspec, code, run.log_path)
                )
                self.failures.append("%s (exit %d)" % (run.pathspec, code))

    # ------------------------------------------------------------------ the loop

    def next_check_at(self, now):
        if self.every is not None:
            return now + self.every
        cron = self.flowconfig()["sensor"]["cron_schedule"]
        every = every_seconds(cron)  # Argo's "@every 1h", which croniter does not read
        if every is not None:
            return now + every
        from croniter import croniter

        utc = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        return croniter(cron, utc).get_next(float)

    def open(self):
        """Start the webhook and read the triggered flows (``with DevLoop(...)`` does it)."""
        from .testing import WebhookReceiver

        self.flowconfig()  # a bad config stops here, with its problems listed
        self.received_folder()
        self.receiver = WebhookReceiver()
        # Each event is on disk before the webhook answers the sensor (see record_received).
        self.receiver.events = _RecordingList(self._on_receive)
        self.receiver.start()
        self.env["METAFLOW_ARGO_EVENTS_WEBHOOK_URL"] = self.receiver.url
        try:
            self.say("webhook (Argo Events format): %s" % self.receiver.url)
            self.discover()
            for description in self.flows.values():
                self._announce(description)
        except BaseException:
            self.close()
            raise
        if not self.flows:
            self.say("[yellow]no flow at %s has a @trigger[/yellow]" % escape(self.root))
        self.say("logs: %s" % escape(self.log_dir))
        return self

    def _announce(self, description):
        """Say what starts a flow; for several events, what has arrived already."""
        for rule in description["rules"]:
            self.say(
                "%s listens to %s (payload -> parameters: %s)"
                % (
                    description["flow"],
                    rule["event"],
                    ", ".join("%s -> %s" % (k, p) for p, k in rule["parameters"].items()),
                )
            )
        if len(description["rules"]) > 1:
            self.say(
                "%s starts when each of its %d events has arrived since its last start "
                "(remembered in %s)"
                % (description["flow"], len(description["rules"]), self.memory_path(description))
            )
            received = self.received_since_start(description)
            if received:
                self.say(escape(self.waiting_line(description, received, with_times=True)))

    def close(self):
        """Stop what is still running and the webhook."""
        self.stop()
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def run(self):
        """Run until ``checks`` checks are done (or Ctrl-C). Returns the exit code."""
        number = 0
        try:
            self.open()
            self._forget_settled()
            self.deliver_undelivered()
            while self.checks is None or number < self.checks:
                number += 1
                self.check(number)
                self.reap()
                if self.checks is not None and number >= self.checks:
                    break
                due = self.next_check_at(time.time())
                self.say(
                    "next check at %s"
                    % datetime.datetime.fromtimestamp(due).strftime("%Y-%m-%d %H:%M:%S")
                )
                while time.time() < due:
                    time.sleep(min(0.5, max(0.0, due - time.time())))
                    self.reap()
            self.reap(wait=True)
        except KeyboardInterrupt:
            self.say("interrupted: stopping every run the dev loop started")
            self.stop()
            for _, record in self.undelivered(mine=True):
                self.say(
                    "[yellow]not delivered[/yellow]: %s; the next flowproject dev here "
                    "delivers it (or drops it with --drop-undelivered)"
                    % escape(self._describe_received(record))
                )
            return 130
        finally:
            self.close()
        if self.failures:
            self.console.print("[red]FAILED:[/red] %s" % "; ".join(self.failures))
            return 1
        self.say("done: %d check(s), %d triggered run(s), all succeeded" % (number, len(self.runs)))
        return 0

    def stop(self):
        """Stop the sensor run and every triggered run still going (their process groups)."""
        processes = [run.process for run in self.runs]
        if self._sensor_process is not None:
            processes.append(self._sensor_process)
        for process in processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

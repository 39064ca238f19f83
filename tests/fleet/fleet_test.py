#!/usr/bin/python3
"""The fleet test (issue 12): three `loraserve serve` replicas of the demo model behind nginx on
loopback, configured by deploy/render from the shipped template, serving 64 generated adapters
loaded on demand from one shared adapter root.

Each policy (round robin, then task hashing) gets a fresh fleet, a warm-up pass (one request per
task) and the same measured traffic: Zipf(1.0) task popularity over the 64 tasks, 16 concurrent
gRPC streaming clients, greedy decoding, a fixed number of requests. Then, on the task-hash
fleet, a third pass during which one replica is killed with SIGKILL. Asserts:

  * no request fails outside the kill pass, and every answer is the offline one (`loraserve
    generate --adapter` of the same adapter and prompt; tokens compared up to the first step
    whose top-2 logprob gap is under 1e-3, where rounding may pick either);
  * with task hashing, cold loads (on-demand host loads, the replicas' /metrics) per 1,000
    measured requests are at most 1/5 of round robin's, and each task's requests all land on one
    replica (per-task request counters of /metrics);
  * the kill pass: a request either completes with the offline answer, or ends with an error
    after it had streamed tokens, all of them right so far (lost with the replica, and told so);
    none that had not streamed a token fails: nginx resends those it had not written to the dead
    replica, and answers the others UNAVAILABLE, which the clients' retry policy resends (the
    configuration docs/scaling.md recommends); the survivors' own tasks do not move.

Prints the table of requests, cold loads, evictions and tokens/s per replica for both policies.
Exit status 0 on success, 1 on a failed assertion, 77 (skipped) when nginx is not installed.

    PYTHONPATH=build/python /usr/bin/python3 tests/fleet/fleet_test.py \\
        --loraserve build/cli/loraserve
"""

import argparse
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

import loraserve_client
from loraserve.v1 import inference_pb2, inference_pb2_grpc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import make_fixtures  # noqa: E402  (the PEFT adapter writer of the reference fixtures)
import reference  # noqa: E402

SKIP = 77  # ctest's SKIP_RETURN_CODE for this test
MODEL = os.path.join(ROOT, "models", "demo")
RENDER = os.path.join(ROOT, "deploy", "render")

REPLICAS = 3
TASKS = 64
CLIENTS = 16
WORKLOAD_REQUESTS_PER_CLIENT = 30  # measured, per policy: 480 requests
KILL_REQUESTS_PER_CLIENT = 12      # the kill pass: 192 requests
MAX_TOKENS = 16       # per request, EOS ignored
KILL_MAX_TOKENS = 64  # longer streams in the kill pass, so that the kill finds some mid-stream
# A replica's host tier holds its third of the tasks with room to spare (ketama rings are uneven)
# but only half of all tasks: round robin sends every task to every replica, and the tier churns.
MAX_HOST_ADAPTERS = 32
MAX_DEVICE_ADAPTERS = 8
# Four sequences per step: a replica that gets more calls queues them, so the kill finds calls
# that were written to the replica but had not started, besides calls streaming tokens.
MAX_BATCH_SIZE = 4
NEAR_TIE = 1e-3
# The clients' retry policy (docs/scaling.md): a call that ends UNAVAILABLE before any response
# arrived (nginx lost the replica it had written the call to) is sent again; gRPC never resends a
# call whose response has begun.
SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": "loraserve.v1.Inference"}],
    "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})
PROMPTS = ["Input: hello\nOutput: ", "Input: fleet\nOutput: ", "Input: zipf\nOutput: ",
           "Input: nginx\nOutput: "]

log = logging.getLogger("fleet_test")


class Failures:
    """Assertion failures, collected so that one run reports all of them."""

    def __init__(self):
        self.messages = []

    def check(self, ok, message):
        if not ok:
            log.error("FAILED: %s", message)
            self.messages.append(message)
        return ok


def task_name(rank):
    """Task of popularity rank `rank` (0 the most requested)."""
    return f"t{rank:02d}"


# Adapter shapes, in turn: the reference fixtures' all-projection, attention (rsLoRA, a rank
# pattern) and regex (rank and alpha patterns) adapters, and the MLP of every layer. (The fixtures'
# one-layer MLP adapter barely moves the demo model: its answers would not tell tasks apart.)
SHAPES = [make_fixtures.ADAPTERS[0], make_fixtures.ADAPTERS[1], make_fixtures.ADAPTERS[3],
          {"name": "mlp_r4", "config": {"r": 4, "lora_alpha": 8,
                                        "target_modules": ["gate_proj", "up_proj", "down_proj"]}}]


def write_adapters(root):
    """64 PEFT adapters for the demo model, written by the reference fixtures' writer: SHAPES in
    turn, each adapter with its own random weights (B non-zero, as after training)."""
    config = reference.load_config(MODEL)
    spec = {"name": "models/demo", "dtype": "BF16"}
    for rank in range(TASKS):
        make_fixtures.write_adapter(spec, SHAPES[rank % len(SHAPES)], config,
                                    os.path.join(root, task_name(rank)), seed=7000 + rank)


def offline_answers(loraserve, adapter_root, lengths, work):
    """{(task, prompt): (token ids, top-2 gaps)} from `loraserve generate`, each task's adapter
    given with --adapter: what every replica must answer. `lengths`: {(task, prompt): tokens};
    a request for fewer tokens must answer their prefix, greedy decoding being the same step by
    step."""
    pairs = sorted(lengths)
    path = os.path.join(work, "offline.jsonl")
    with open(path, "w") as f:
        for task, prompt in pairs:
            f.write(json.dumps({"task": task_name(task), "prompt": PROMPTS[prompt],
                                "max_tokens": lengths[(task, prompt)], "temperature": 0,
                                "ignore_eos": True, "logprobs": 2}) + "\n")
    argv = [loraserve, "generate", "--model", MODEL, "--weights-dtype", "f32", "--input", path,
            "--log-level", "warn", "--max-host-adapters", str(TASKS)]
    for rank in range(TASKS):
        argv += ["--adapter", f"{task_name(rank)}={os.path.join(adapter_root, task_name(rank))}"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()
    if len(out) != len(pairs):
        raise RuntimeError(f"generate answered {len(out)} of {len(pairs)} lines")
    answers = {}
    for key, line in zip(pairs, out):
        j = json.loads(line)
        if "error" in j:
            raise RuntimeError(f"generate: {line[:300]}")
        gaps = [lp["top"][0]["logprob"] - lp["top"][1]["logprob"] for lp in j["logprobs"]]
        answers[key] = (j["token_ids"], gaps)
    return answers


def compared_tokens(answer, length):
    """How many of the first `length` tokens of an answer are compared: those before the first
    near tie of the offline answer (where float rounding in another batch may pick either)."""
    gaps = answer[1][:length]
    return next((i for i, g in enumerate(gaps) if g < NEAR_TIE), len(gaps))


def matches(call, answer):
    """The call's tokens equal the offline answer up to its first near tie, and have the length
    asked for."""
    n = compared_tokens(answer, call.max_tokens)
    return len(call.tokens) == call.max_tokens and call.tokens[:n] == answer[0][:n]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_file(path, proc, what, logfile, timeout=120):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {tail(logfile)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout} s: {tail(logfile)}")
        time.sleep(0.05)


def tail(path, n=3000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class Replica:
    """One `loraserve serve` on free loopback ports, loading adapters on demand."""

    def __init__(self, loraserve, adapter_root, work, index):
        self.index = index
        self.log = os.path.join(work, f"replica-{index}.log")
        ready = os.path.join(work, f"replica-{index}.ready.json")
        self.log_file = open(self.log, "w")
        self.proc = subprocess.Popen(
            [loraserve, "serve", "--model", MODEL, "--weights-dtype", "f32", "--threads", "1",
             "--adapter-root", adapter_root, "--max-host-adapters", str(MAX_HOST_ADAPTERS),
             "--max-device-adapters", str(MAX_DEVICE_ADAPTERS),
             "--max-batch-size", str(MAX_BATCH_SIZE), "--listen", "127.0.0.1:0",
             "--admin-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--ready-file", ready],
            stdout=subprocess.DEVNULL, stderr=self.log_file)
        self.ready = ready

    def wait_ready(self):
        wait_for_file(self.ready, self.proc, f"replica {self.index}", self.log)
        with open(self.ready) as f:
            addresses = json.load(f)
        self.address = addresses["listen"]
        self.http = addresses["http_listen"]

    def metrics(self):
        """{(sample name, sorted labels): value} of /metrics, read with prometheus_client's
        parser."""
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=30) as r:
            text = r.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


class Fleet:
    """Three replicas and nginx in front of them, with the configuration deploy/render writes
    from deploy/nginx/loraserve.conf.j2 for `policy`."""

    def __init__(self, nginx, loraserve, adapter_root, work, policy):
        self.policy = policy
        self.work = os.path.join(work, policy)
        os.makedirs(os.path.join(self.work, "nginx"))
        os.chmod(self.work, 0o755)  # nginx's workers may run as another user than its master
        self.replicas = [Replica(loraserve, adapter_root, self.work, i + 1)
                         for i in range(REPLICAS)]
        self.nginx_proc = None
        try:
            for r in self.replicas:
                r.wait_ready()
            self._start_nginx(nginx)
        except BaseException:
            self.stop()
            raise

    def _start_nginx(self, nginx):
        self.access_log = os.path.join(self.work, "nginx.log")
        conf = os.path.join(self.work, "nginx.conf")
        # The port is free when picked; another process may take it before nginx binds: try again.
        for attempt in range(5):
            self.address = f"127.0.0.1:{free_port()}"
            argv = [RENDER, "nginx", "--grpc-listen", self.address, "--policy", self.policy,
                    "--state-dir", os.path.join(self.work, "nginx"), "--log", self.access_log,
                    "--workers", "1", "-o", conf]
            for r in self.replicas:
                argv += ["--grpc-replica", r.address]
            subprocess.run([sys.executable] + argv, check=True)
            startup = os.path.join(self.work, "nginx-startup.log")
            with open(startup, "a") as err:
                self.nginx_proc = subprocess.Popen(
                    [nginx, "-c", conf, "-p", os.path.join(self.work, "nginx"), "-e", startup,
                     "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=err)
            if self._wait_serving():
                return
            self.nginx_proc.kill()
            self.nginx_proc.wait()
            self.nginx_proc = None
            if "Address already in use" not in tail(self.access_log) + tail(startup):
                break
        raise RuntimeError(f"nginx did not serve: {tail(self.access_log)}")

    def _wait_serving(self, timeout=30):
        """Whether nginx takes connections and passes a health check to a replica. (The port is
        polled first: a gRPC channel refused once waits out its reconnect backoff, seconds.)"""
        deadline = time.monotonic() + timeout
        host, port = self.address.rsplit(":", 1)
        while time.monotonic() < deadline:
            if self.nginx_proc.poll() is not None:
                return False
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        with loraserve_client.Client(self.address, timeout=max(deadline - time.monotonic(),
                                                                1)) as c:
            try:
                return c.health() == "SERVING"
            except grpc.RpcError:
                return False

    def stop(self):
        if self.nginx_proc is not None and self.nginx_proc.poll() is None:
            self.nginx_proc.send_signal(signal.SIGQUIT)  # graceful: finishes the log lines
            try:
                self.nginx_proc.wait(30)
            except subprocess.TimeoutExpired:
                self.nginx_proc.kill()
                self.nginx_proc.wait()
        for r in self.replicas:
            r.stop()

    def retries(self):
        """From nginx's access log: (calls nginx tried on more than one replica, calls nginx
        answered UNAVAILABLE because the replica it had written them to failed)."""
        lines = [line for line in tail(self.access_log, 10 ** 9).splitlines()
                 if "/loraserve.v1.Inference/" in line]
        nginx = sum(1 for line in lines if re.search(r" upstream=\S+, ", line))
        lost = sum(1 for line in lines if re.search(r" upstream_status=(\S+, )*50[24] ", line))
        return nginx, lost


class Call:
    """One request and how it ended, as its client saw it."""

    def __init__(self, task, prompt, max_tokens=MAX_TOKENS):
        self.task = task
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.tokens = []
        self.finish_reason = None
        self.code = None  # a grpc.StatusCode when it failed
        self.details = ""
        self.streamed = False  # a token arrived


def workload(seed, per_client, max_tokens=MAX_TOKENS):
    """Each client's calls: tasks by Zipf(1.0) popularity (rank k with weight 1/(k+1)), prompts
    uniform; drawn up front from `seed`."""
    weights = [1.0 / (k + 1) for k in range(TASKS)]
    calls = []
    for c in range(CLIENTS):
        rng = random.Random(seed * 1000 + c)
        calls.append([Call(rng.choices(range(TASKS), weights)[0], rng.randrange(len(PROMPTS)),
                           max_tokens) for _ in range(per_client)])
    return calls


def warm_up_calls():
    """One call per task, spread over the clients."""
    calls = [[] for _ in range(CLIENTS)]
    for rank in range(TASKS):
        calls[rank % CLIENTS].append(Call(rank, rank % len(PROMPTS)))
    return calls


class Traffic:
    """Sends each client's calls in order over its own channel to nginx, as GenerateStream calls
    (greedy, EOS ignored), recording tokens and errors per call. `on_token`
    and `on_end`, when given, are told each call's first token and its end (from the client
    threads)."""

    def __init__(self, address, calls, on_token=None, on_end=None):
        self.address = address
        self.calls = calls
        self.on_token = on_token
        self.on_end = on_end

    def run(self):
        start = time.monotonic()
        threads = [threading.Thread(target=self._client, args=(c,)) for c in self.calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - start

    def _client(self, calls):
        options = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]
        with grpc.insecure_channel(self.address, options=options) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            for call in calls:
                self._send(stub, call)

    def _send(self, stub, call):
        task = task_name(call.task)
        request = inference_pb2.GenerateStreamRequest(request=loraserve_client.build_request(
            text=PROMPTS[call.prompt], task_id=task, max_tokens=call.max_tokens, temperature=0.0,
            ignore_eos=True))
        try:
            for message in stub.GenerateStream(request, timeout=120,
                                               metadata=loraserve_client.task_metadata(task)):
                if message.token_ids and not call.streamed:
                    call.streamed = True
                    if self.on_token:
                        self.on_token(call)
                call.tokens.extend(message.token_ids)
                if message.finish_reason:
                    call.finish_reason = message.finish_reason
        except grpc.RpcError as e:
            call.code = e.code()
            call.details = e.details() or ""
        if self.on_end:
            self.on_end(call)


def counter(metrics, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= set(ls))


def per_task_requests(metrics):
    """{task: requests the replica ended} from loraserve_requests_total."""
    out = {}
    for (name, labels), value in metrics.items():
        if name == "loraserve_requests_total":
            task = dict(labels)["task"]
            out[task] = out.get(task, 0) + value
    return out


def delta(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items()}


class Scrape:
    """What the table shows of one replica over one pass: counters' deltas."""

    FIELDS = {
        "cold loads": ("loraserve_adapter_host_loads_total", {"trigger": "on_demand"}),
        "host evictions": ("loraserve_adapter_host_evictions_total", {}),
        "slot loads": ("loraserve_adapter_device_loads_total", {}),
        "slot evictions": ("loraserve_adapter_device_evictions_total", {}),
        "tokens": ("loraserve_generation_tokens_total", {}),
    }

    def __init__(self, before, after):
        self.values = {k: counter(after, n, **ls) - counter(before, n, **ls)
                       for k, (n, ls) in self.FIELDS.items()}
        self.requests = {t: n for t, n in delta(per_task_requests(after),
                                                per_task_requests(before)).items() if n}


def scrape_all(replicas):
    return [r.metrics() for r in replicas]


def settled_scrape(replicas, before, expected_requests, timeout=30):
    """Scrapes until the replicas have counted `expected_requests` finished requests since
    `before` (a request is counted after its client has the answer, off the engine thread)."""
    deadline = time.monotonic() + timeout
    while True:
        after = scrape_all(replicas)
        done = sum(sum(Scrape(b, a).requests.values()) for b, a in zip(before, after))
        if done >= expected_requests or time.monotonic() > deadline:
            return after
        time.sleep(0.1)


def check_answers(failures, label, calls, answers, allow_lost=False):
    """Every call that completed equals the offline answer; failed calls are counted (and
    allowed only when `allow_lost`). Returns the failed calls."""
    failed, wrong = [], 0
    for call in calls:
        if call.code is not None:
            failed.append(call)
            continue
        if call.finish_reason != inference_pb2.FINISH_REASON_LENGTH or not matches(
                call, answers[(call.task, call.prompt)]):
            wrong += 1
            if wrong <= 5:
                log.error("%s: %s prompt %d answered %s (finish %s), offline %s", label,
                          task_name(call.task), call.prompt, call.tokens, call.finish_reason,
                          answers[(call.task, call.prompt)][0][:call.max_tokens])
    failures.check(wrong == 0, f"{label}: {wrong} answers differ from the offline answers")
    if not allow_lost:
        for call in failed[:5]:
            log.error("%s: %s failed: %s %s", label, task_name(call.task), call.code,
                      call.details[:200])
        failures.check(not failed, f"{label}: {len(failed)} of {len(calls)} requests failed")
    return failed


def compared_fraction(calls, answers):
    """Of the tokens answered, the fraction compared with the offline answer (before a near
    tie): a check with teeth compares nearly all of them."""
    compared = total = 0
    for call in calls:
        compared += compared_tokens(answers[(call.task, call.prompt)], call.max_tokens)
        total += call.max_tokens
    return compared / max(total, 1)


def run_policy(args, failures, policy, adapter_root, work, answers, measured, kill_calls=None):
    """One fleet: warm-up, the measured pass, and (task-hash) the kill pass. Returns the table's
    rows for the measured pass and the kill pass's figures."""
    log.info("%s: starting %d replicas and nginx", policy, REPLICAS)
    fleet = Fleet(args.nginx, args.loraserve, adapter_root, work, policy)
    try:
        warm = warm_up_calls()
        before = scrape_all(fleet.replicas)
        log.info("%s: nginx on %s; warm-up: one request per task", policy, fleet.address)
        Traffic(fleet.address, warm).run()
        check_answers(failures, f"{policy} warm-up", [c for cs in warm for c in cs], answers)
        n_warm = sum(len(cs) for cs in warm)
        start = settled_scrape(fleet.replicas, before, n_warm)

        n = sum(len(cs) for cs in measured)
        log.info("%s: %d requests from %d clients", policy, n, CLIENTS)
        seconds = Traffic(fleet.address, measured).run()
        end = settled_scrape(fleet.replicas, start, n)
        calls = [c for cs in measured for c in cs]
        check_answers(failures, policy, calls, answers)
        scrapes = [Scrape(b, a) for b, a in zip(start, end)]
        failures.check(sum(sum(s.requests.values()) for s in scrapes) == n,
                       f"{policy}: the replicas counted "
                       f"{sum(sum(s.requests.values()) for s in scrapes)} requests, sent {n}")
        # Where each task was served, warm-up included.
        placement = owners([Scrape(b, a) for b, a in zip(before, end)])
        result = {"scrapes": scrapes, "seconds": seconds, "requests": n, "placement": placement,
                  "compared": compared_fraction(calls, answers)}
        if kill_calls is not None:
            result["kill"] = kill_pass(failures, fleet, end, placement, kill_calls, answers)
        return result
    finally:
        fleet.stop()


def owners(scrapes):
    """{task: [replica indexes that served it]}."""
    out = {}
    for i, s in enumerate(scrapes):
        for task in s.requests:
            out.setdefault(task, []).append(i)
    return out


def kill_pass(failures, fleet, before, placement, calls, answers):
    """More traffic on the task-hash fleet, longer answers; once a quarter of it has ended, the
    replica of the most requested task is killed (SIGKILL) as it streams a token, so that some of
    its calls are mid-stream and, its batch being full, others wait in its queue."""
    owner = {t: rs[0] for t, rs in placement.items()}
    victim = owner[task_name(0)]
    proc = fleet.replicas[victim].proc
    flat = [c for cs in calls for c in cs]
    lock = threading.Lock()
    state = {"ended": 0, "streaming": 0}
    killed = {}

    def kill():  # REQUIRES: lock held
        if not killed:
            proc.send_signal(signal.SIGKILL)
            killed.update(ended=state["ended"], streaming=state["streaming"])

    def on_token(call):
        if owner.get(task_name(call.task)) == victim:
            with lock:
                state["streaming"] += 1
                if state["ended"] >= len(flat) // 4:
                    kill()

    def on_end(call):
        with lock:
            state["ended"] += 1
            if call.streamed and owner.get(task_name(call.task)) == victim:
                state["streaming"] -= 1
            if state["ended"] >= len(flat) // 2:  # the victim's tasks may all have been served
                kill()

    log.info("task-hash: %d more requests of %d tokens; replica %d (that of %s) will be killed",
             len(flat), KILL_MAX_TOKENS, victim + 1, task_name(0))
    seconds = Traffic(fleet.address, calls, on_token, on_end).run()
    proc.wait()
    log.info("replica %d killed after %d requests ended, as %d of its calls were streaming",
             victim + 1, killed["ended"], killed["streaming"])

    failed = check_answers(failures, "kill pass", flat, answers, allow_lost=True)
    wrong = []
    for c in failed:
        answer = answers[(c.task, c.prompt)]
        n = compared_tokens(answer, len(c.tokens))
        if c.tokens[:n] != answer[0][:n]:
            wrong.append(c)
    failures.check(not wrong, f"kill pass: {len(wrong)} lost requests had streamed wrong tokens")
    silent = [c for c in failed if not c.tokens]
    for c in silent[:5]:
        log.error("kill pass: %s failed before any token: %s %s", task_name(c.task), c.code,
                  c.details[:200])
    failures.check(not silent, f"kill pass: {len(silent)} requests that had streamed nothing "
                   "failed instead of being retried on another replica")
    strangers = [c for c in failed if owner.get(task_name(c.task)) != victim]
    failures.check(not strangers, f"kill pass: {len(strangers)} requests of tasks the killed "
                   "replica did not serve failed")

    survivors = [i for i in range(REPLICAS) if i != victim]
    theirs = sum(1 for c in flat if c.code is None and owner.get(task_name(c.task)) != victim)
    after = settled_scrape([fleet.replicas[i] for i in survivors], [before[i] for i in survivors],
                           theirs)
    moved = []
    for i, a in zip(survivors, after):
        for task in Scrape(before[i], a).requests:
            if task in owner and owner[task] != victim and owner[task] != i:
                moved.append(task)
    failures.check(not moved, f"kill pass: tasks of surviving replicas moved: {moved[:10]}")
    nginx_retries, client_retries = fleet.retries()
    failures.check(failed or nginx_retries or client_retries, "kill pass: the kill went "
                   "unnoticed: no call was lost or retried")
    codes = sorted({f"{c.code.name}: {c.details[:80]}" for c in failed})
    return {"requests": len(flat), "lost": len(failed), "lost_codes": codes,
            "nginx_retries": nginx_retries,
            "client_retries": client_retries, "victim": victim, "seconds": seconds,
            "victim_tasks": sum(1 for t in owner.values() if t == victim),
            "in_flight": killed["streaming"]}


def print_table(results):
    header = (f"{'policy':<12} {'replica':<8} {'requests':>8} {'cold loads':>10} "
              f"{'per 1000':>8} {'host evict':>10} {'slot loads':>10} {'slot evict':>10} "
              f"{'tokens/s':>8}")
    lines = [header, "-" * len(header)]
    for policy, r in results.items():
        total = {k: 0 for k in Scrape.FIELDS}
        for i, s in enumerate(r["scrapes"]):
            n = sum(s.requests.values())
            for k in total:
                total[k] += s.values[k]
            lines.append(f"{policy:<12} {i + 1:<8} {n:>8.0f} {s.values['cold loads']:>10.0f} "
                         f"{'':>8} {s.values['host evictions']:>10.0f} "
                         f"{s.values['slot loads']:>10.0f} {s.values['slot evictions']:>10.0f} "
                         f"{s.values['tokens'] / r['seconds']:>8.0f}")
        lines.append(f"{policy:<12} {'all':<8} {r['requests']:>8} {total['cold loads']:>10.0f} "
                     f"{1000 * total['cold loads'] / r['requests']:>8.1f} "
                     f"{total['host evictions']:>10.0f} {total['slot loads']:>10.0f} "
                     f"{total['slot evictions']:>10.0f} {total['tokens'] / r['seconds']:>8.0f}")
    print("\n".join(lines), flush=True)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loraserve", required=True, help="the loraserve binary")
    ap.add_argument("--nginx", default=None, help="nginx binary (default: from PATH or /usr/sbin)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stdout)
    candidates = [args.nginx] if args.nginx else [shutil.which("nginx"), "/usr/sbin/nginx"]
    args.nginx = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if not args.nginx:
        print("fleet_test: SKIPPED: nginx is not installed (apt-get install nginx, or "
              "tools/install-deps test)", flush=True)
        return SKIP
    args.loraserve = os.path.abspath(args.loraserve)

    # Everything here is on loopback: a proxy from the environment (which urllib and gRPC would
    # use) must not get in the way.
    for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ.pop(name, None)
    work = tempfile.mkdtemp(prefix="loraserve_fleet_")
    failures = Failures()
    try:
        adapter_root = os.path.join(work, "adapters")
        log.info("writing %d adapters into %s", TASKS, adapter_root)
        write_adapters(adapter_root)

        measured = {p: workload(1, WORKLOAD_REQUESTS_PER_CLIENT)
                    for p in ("round-robin", "task-hash")}
        kill_calls = workload(2, KILL_REQUESTS_PER_CLIENT, KILL_MAX_TOKENS)
        # Every (task, prompt) for MAX_TOKENS tokens, those of the kill pass for more.
        lengths = {(t, p): MAX_TOKENS for t in range(TASKS) for p in range(len(PROMPTS))}
        lengths.update({(c.task, c.prompt): KILL_MAX_TOKENS for cs in kill_calls for c in cs})
        log.info("offline answers of %d (task, prompt) pairs", len(lengths))
        answers = offline_answers(args.loraserve, adapter_root, lengths, work)
        # A request served with another task's adapter must not pass for a right answer.
        distinct = {tuple(tuple(answers[(t, p)][0][:MAX_TOKENS]) for p in range(len(PROMPTS)))
                    for t in range(TASKS)}
        failures.check(len(distinct) >= TASKS - 2, f"the adapters must answer differently: "
                       f"{len(distinct)} distinct answers of {TASKS} tasks")

        results = {}
        results["round-robin"] = run_policy(args, failures, "round-robin", adapter_root, work,
                                            answers, measured["round-robin"])
        results["task-hash"] = run_policy(args, failures, "task-hash", adapter_root, work,
                                          answers, measured["task-hash"], kill_calls)
        print_table(results)

        rr, th = results["round-robin"], results["task-hash"]
        cold = {p: sum(s.values["cold loads"] for s in r["scrapes"]) * 1000 / r["requests"]
                for p, r in results.items()}
        log.info("cold loads per 1000 requests: task-hash %.1f, round-robin %.1f",
                 cold["task-hash"], cold["round-robin"])
        failures.check(cold["round-robin"] > 0, "round robin caused no cold loads: the host "
                       "tier is too large for the test to compare anything")
        failures.check(cold["task-hash"] <= cold["round-robin"] / 5,
                       f"task-hash cold loads per 1000 requests {cold['task-hash']:.1f} > 1/5 of "
                       f"round robin's {cold['round-robin']:.1f}")
        spread = {t: rs for t, rs in th["placement"].items() if len(rs) > 1}
        failures.check(not spread, f"task-hash: tasks served by more than one replica: {spread}")
        failures.check(len(th["placement"]) == TASKS,
                       f"task-hash: {len(th['placement'])} tasks served, {TASKS} requested")
        spread_rr = sum(1 for rs in rr["placement"].values() if len(rs) > 1)
        log.info("round robin: %d tasks served by more than one replica", spread_rr)
        for p, r in results.items():
            log.info("%s: %.0f%% of the answered tokens compared with the offline answers "
                     "(the rest follow a near tie)", p, 100 * r["compared"])
            failures.check(r["compared"] >= 0.5, f"{p}: only {100 * r['compared']:.0f}% of the "
                           "tokens could be compared")
        k = th["kill"]
        print(f"kill pass: {k['requests']} requests; replica {k['victim'] + 1} (serving "
              f"{k['victim_tasks']} tasks) killed with SIGKILL with {k['in_flight']} of its "
              f"streams in flight; {k['nginx_retries']} calls resent by nginx to another replica "
              f"(never written to the dead one), {k['client_retries']} answered UNAVAILABLE by "
              f"nginx and resent by their client, {k['lost']} lost after streaming tokens (each "
              "ended with an error at its client)", flush=True)
        for code in k["lost_codes"]:
            print(f"  lost with {code}", flush=True)
    finally:
        if args.keep:
            log.info("work folder kept: %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failures.messages:
        print(f"fleet_test: {len(failures.messages)} failure(s):\n  " +
              "\n  ".join(failures.messages), flush=True)
        return 1
    print("fleet_test: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""deploy/ checked without a cluster: the nginx and HAProxy configurations that deploy/render
writes pass `nginx -t` and `haproxy -c`; HAProxy's hand-made gRPC health check tells a SERVING
replica from a NOT_SERVING one (a real grpcio Health server); the Kubernetes manifests parse and
hold together (selectors match the pods, probes and Services name real ports, the grace period
covers preStop and --drain-timeout, references resolve). `kubectl apply --dry-run=client` needs an
API server to map kinds even in client mode, so the structure is checked here instead, and
`kubectl kustomize` (offline) runs when kubectl is installed. Run by ctest (label deploy):

    /usr/bin/python3 tests/deploy/deploy_test.py --stubs build/python
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RENDER = os.path.join(ROOT, "deploy", "render")
K8S = os.path.join(ROOT, "deploy", "kubernetes")
REPLICAS = ["127.0.0.1:50061", "127.0.0.1:50062", "127.0.0.1:50063"]
HTTP_REPLICAS = ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]

# Objects the manifests refer to that are created by other means (deploy/README.md): the admin
# token's Secret and the Gateway of the gateway implementation.
EXTERNAL = {("Secret", "loraserve-admin"), ("Gateway", "inference-gateway"),
            ("Service", "loraserve-epp")}

API_VERSIONS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodMonitor": "monitoring.coreos.com/v1",
    "InferencePool": "inference.networking.k8s.io/v1",
    "InferenceObjective": "inference.networking.x-k8s.io/v1alpha2",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def render(engine, out, *extra):
    subprocess.run([sys.executable, RENDER, engine, *extra, "-o", out], check=True,
                   capture_output=True, text=True)
    with open(out) as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BalancerConfigTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="loraserve_deploy_")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def replicas(self):
        args = []
        for g, h in zip(REPLICAS, HTTP_REPLICAS):
            args += ["--grpc-replica", g, "--http-replica", h]
        return args

    def test_nginx_configs_pass_nginx_t(self):
        state = os.path.join(self.dir, "state")
        os.mkdir(state)
        for policy in ("task-hash", "round-robin"):
            conf = os.path.join(self.dir, f"nginx-{policy}.conf")
            text = render("nginx", conf, *self.replicas(), "--policy", policy, "--state-dir", state,
                          "--grpc-listen", "127.0.0.1:50060", "--http-listen", "127.0.0.1:8080",
                          "--log", os.path.join(self.dir, "nginx.log"))
            hashes = text.count("hash $http_x_loraserve_task consistent;")
            self.assertEqual(hashes, 2 if policy == "task-hash" else 0, policy)
            for r in REPLICAS + HTTP_REPLICAS:
                self.assertEqual(text.count(f"server {r} max_fails=2 fail_timeout=10s;"), 1, r)
            # nginx cannot resend a gRPC call it wrote to a replica (non_idempotent would change
            # nothing); what it answers itself goes out as gRPC UNAVAILABLE, which clients retry.
            self.assertIn("grpc_next_upstream error timeout;", text)
            self.assertIn("error_page 502 503 504 = @grpc_unavailable;", text)
            self.assertIn("add_header grpc-status 14 always;", text)
            self.assertIn("proxy_next_upstream error timeout http_503 non_idempotent;", text)
            out = subprocess.run(["nginx", "-t", "-c", conf, "-p", self.dir], capture_output=True,
                                 text=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("test is successful", out.stderr)

    def test_haproxy_configs_pass_haproxy_c(self):
        for policy in ("task-hash", "round-robin"):
            conf = os.path.join(self.dir, f"haproxy-{policy}.cfg")
            text = render("haproxy", conf, *self.replicas(), "--policy", policy)
            expected = 2 if policy == "task-hash" else 0
            self.assertEqual(len(re.findall(r"^  balance hdr\(x-loraserve-task\)$", text, re.M)),
                             expected, policy)
            self.assertEqual(len(re.findall(r"^  hash-type consistent$", text, re.M)), expected)
            # Server i has id i in both backends: the same ring for gRPC and HTTP.
            for i in (1, 2, 3):
                self.assertEqual(len(re.findall(rf"^  server r{i} \S+ id {i} ", text, re.M)), 2)
            self.assertEqual(len(re.findall(r"^  server r\d .* proto h2 check ", text, re.M)), 3)
            out = subprocess.run(["haproxy", "-c", "-f", conf], capture_output=True, text=True,
                                 timeout=30)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_render_rejects_bad_input(self):
        conf = os.path.join(self.dir, "x.conf")
        for bad in (["--grpc-replica", "10.0.0.1"], ["--grpc-replica", "a b:1"],
                    ["--grpc-replica", "h:70000"], ["--http-replica", "h:1;evil"],
                    ["--grpc-replica", "h:1", "--state-dir", "/tmp/a b"],
                    ["--grpc-replica", "h:1", "--fail-timeout", "10s;"], []):
            out = subprocess.run([sys.executable, RENDER, "nginx", *bad, "-o", conf],
                                 capture_output=True, text=True)
            self.assertEqual(out.returncode, 2, bad)
            self.assertFalse(os.path.exists(conf), bad)


class HaproxyGrpcHealthCheckTest(unittest.TestCase):
    """The tcp-check's raw HTTP/2 Health/Check against a real gRPC server: UP while it answers
    SERVING, DOWN once it answers NOT_SERVING, DOWN for a server that is not there."""

    def test_check_follows_serving_status(self):
        import grpc
        from concurrent import futures
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        class Health(health_pb2_grpc.HealthServicer):
            status = health_pb2.HealthCheckResponse.SERVING

            def Check(self, request, context):
                return health_pb2.HealthCheckResponse(status=Health.status)

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, None)
        tmp = tempfile.mkdtemp(prefix="loraserve_haproxy_")
        self.addCleanup(shutil.rmtree, tmp, True)
        conf = os.path.join(tmp, "haproxy.cfg")
        sock = os.path.join(tmp, "stats.sock")
        text = render("haproxy", conf, "--grpc-replica", f"127.0.0.1:{port}", "--grpc-replica",
                      f"127.0.0.1:{free_port()}", "--grpc-listen", f"127.0.0.1:{free_port()}",
                      "--max-fails", "1")
        # Checks every 100 ms, and a stats socket to read the servers' state.
        text = text.replace("check inter 2s", "check inter 100ms")
        text = text.replace("\nglobal\n", f"\nglobal\n  stats socket {sock} mode 600 level admin\n", 1)
        with open(conf, "w") as f:
            f.write(text)
        self.assertEqual(subprocess.run(["haproxy", "-c", "-f", conf], capture_output=True)
                         .returncode, 0)
        proc = subprocess.Popen(["haproxy", "-f", conf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.terminate)

        def states():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(5)
                    s.connect(sock)
                    s.sendall(b"show stat\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
            except OSError:
                return {}
            rows = [line.split(",") for line in data.decode().splitlines() if line]
            return {r[1]: (r[17], r[36]) for r in rows[1:] if r[0] == "loraserve_grpc"}

        def wait_for(server_name, status, check):
            deadline = time.time() + 30
            seen = None
            while time.time() < deadline:
                seen = states().get(server_name)
                if seen and seen[0] == status and seen[1] == check:
                    return
                time.sleep(0.05)
            self.fail(f"{server_name}: wanted {status} {check}, last seen {seen}")

        wait_for("r1", "UP", "L7OK")  # the check passed: the reply held SERVING
        wait_for("r2", "DOWN", "L4CON")  # nothing listens there
        Health.status = health_pb2.HealthCheckResponse.NOT_SERVING
        wait_for("r1", "DOWN", "L7TOUT")  # answered, but not SERVING
        Health.status = health_pb2.HealthCheckResponse.SERVING
        wait_for("r1", "UP", "L7OK")


def load_manifests(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


class KubernetesManifestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = {}
        for dirpath, _, names in os.walk(K8S):
            for name in sorted(names):
                if name.endswith(".yaml"):
                    rel = os.path.relpath(os.path.join(dirpath, name), K8S)
                    cls.files[rel] = load_manifests(os.path.join(dirpath, name))
        # Not Kubernetes objects: Helm values and the kustomization.
        cls.values = cls.files.pop("prometheus-adapter-values.yaml")
        cls.kustomization = cls.files.pop("kustomization.yaml")[0]

    def objects(self, deployment_file):
        """Every object of one variant: the given Deployment and all the other files."""
        out = []
        for rel, docs in self.files.items():
            if rel.startswith("deployment") and rel != deployment_file:
                continue
            out += docs
        return out

    def test_every_object_is_well_formed(self):
        for rel, docs in self.files.items():
            self.assertTrue(docs, rel)
            for d in docs:
                kind = d.get("kind")
                self.assertIn(kind, API_VERSIONS, rel)
                self.assertEqual(d.get("apiVersion"), API_VERSIONS[kind], f"{rel} {kind}")
                self.assertRegex(d["metadata"]["name"], NAME, rel)
                self.assertIsInstance(d.get("spec"), dict, rel)

    def test_variants(self):
        for variant in ("deployment.yaml", "deployment-cuda.yaml"):
            with self.subTest(variant=variant):
                self.check_variant(variant)

    def check_variant(self, variant):
        objects = self.objects(variant)
        by_kind = {}
        for o in objects:
            by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
        names = {(o["kind"], o["metadata"]["name"]) for o in objects} | EXTERNAL

        (deployment,) = by_kind["Deployment"].values()
        self.assertEqual(deployment["metadata"]["name"], "loraserve")
        spec = deployment["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        selects_pods = lambda sel: sel and all(pod_labels.get(k) == v for k, v in sel.items())
        self.assertTrue(selects_pods(spec["selector"]["matchLabels"]))
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.assertEqual(ports, {"grpc": 50051, "admin": 50052, "http": 8080})
        flags = dict(a[2:].split("=", 1) for a in container["args"])

        # Probes: grpc.health.v1 on the inference port; liveness outlasts a drain.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(container[probe]["grpc"]["port"], ports["grpc"], probe)
        drain = int(flags["drain-timeout"])
        live = container["livenessProbe"]
        self.assertGreater(live["periodSeconds"] * live["failureThreshold"], drain)
        (sleep, seconds) = container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(sleep, "sleep")
        self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], int(seconds) + drain + 5)
        self.assertEqual(flags["http-listen"], f"0.0.0.0:{ports['http']}")

        # The adapter root and the model: read-only shared volumes.
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for flag in ("adapter-root", "model"):
            mount = mounts[flags[flag]]
            self.assertTrue(mount["readOnly"], flag)
            claim = volumes[mount["name"]]["persistentVolumeClaim"]
            self.assertTrue(claim["readOnly"], flag)
            pvc = by_kind["PersistentVolumeClaim"][claim["claimName"]]
            self.assertEqual(pvc["spec"]["accessModes"], ["ReadOnlyMany"], flag)

        # The admin token from a Secret, never in the manifest.
        env = {e["name"]: e for e in container["env"]}
        ref = env["LORASERVE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
        self.assertIn(("Secret", ref["name"]), names)
        self.assertNotIn("admin-token", flags)

        resources = container["resources"]
        if variant == "deployment-cuda.yaml":
            self.assertEqual(resources["limits"]["nvidia.com/gpu"], 1)
            self.assertIn("registry.example.com/loraserve:cuda", container["image"])
        else:
            self.assertNotIn("nvidia.com/gpu", resources["limits"])
            self.assertEqual(flags["threads"], resources["requests"]["cpu"])
            self.assertIn("registry.example.com/loraserve:cpu", container["image"])

        for name, service in by_kind["Service"].items():
            self.assertTrue(selects_pods(service["spec"]["selector"]), name)
            for p in service["spec"]["ports"]:
                self.assertIn(p["targetPort"], ports, name)
                self.assertEqual(p["port"], ports[p["targetPort"]], name)

        (pdb,) = by_kind["PodDisruptionBudget"].values()
        self.assertTrue(selects_pods(pdb["spec"]["selector"]["matchLabels"]))

        (hpa,) = by_kind["HorizontalPodAutoscaler"].values()
        target = hpa["spec"]["scaleTargetRef"]
        self.assertIn((target["kind"], target["name"]), names)
        (metric,) = hpa["spec"]["metrics"]
        served = {r["name"]["as"] for r in self.values[0]["rules"]["custom"]}
        self.assertIn(metric[metric["type"].lower()]["metric"]["name"], served)

        (monitor,) = by_kind["PodMonitor"].values()
        self.assertTrue(selects_pods(monitor["spec"]["selector"]["matchLabels"]))
        for e in monitor["spec"]["podMetricsEndpoints"]:
            self.assertIn(e["port"], ports)

        (pool,) = by_kind["InferencePool"].values()
        self.assertTrue(selects_pods(pool["spec"]["selector"]["matchLabels"]))
        self.assertEqual([p["number"] for p in pool["spec"]["targetPorts"]], [ports["http"]])
        epp = pool["spec"]["endpointPickerRef"]
        self.assertIn(("Service", epp["name"]), names)
        self.assertIsInstance(epp["port"]["number"], int)
        pool_ref = ("InferencePool", pool["metadata"]["name"])
        for objective in by_kind["InferenceObjective"].values():
            ref = objective["spec"]["poolRef"]
            self.assertEqual(ref["group"], "inference.networking.k8s.io")
            self.assertIn((ref["kind"], ref["name"]), names)
        for route in by_kind["HTTPRoute"].values():
            for parent in route["spec"]["parentRefs"]:
                self.assertIn((parent["kind"], parent["name"]), names)
            for rule in route["spec"]["rules"]:
                for backend in rule["backendRefs"]:
                    self.assertEqual((backend["kind"], backend["name"]), pool_ref)

    def test_kustomization_lists_existing_files(self):
        for r in self.kustomization["resources"]:
            self.assertTrue(os.path.isfile(os.path.join(K8S, r)), r)
        self.assertIn("deployment.yaml", self.kustomization["resources"])

    @unittest.skipIf(shutil.which("kubectl") is None, "kubectl is not installed")
    def test_kubectl_kustomize_builds(self):
        out = subprocess.run(["kubectl", "kustomize", K8S], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        kinds = sorted(d["kind"] for d in yaml.safe_load_all(out.stdout) if d)
        self.assertEqual(kinds, sorted(["Deployment", "Service", "Service", "PersistentVolumeClaim",
                                        "PersistentVolumeClaim", "PodDisruptionBudget",
                                        "HorizontalPodAutoscaler"]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--stubs", required=True, help="the generated Python gRPC stubs")
    args, rest = ap.parse_known_args()
    sys.path.insert(0, os.path.abspath(args.stubs))
    unittest.main(argv=[sys.argv[0]] + rest)

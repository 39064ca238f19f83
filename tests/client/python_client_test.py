#!/usr/bin/python3
"""The Python client (client/python) against a real `loraserve serve` on loopback: the library's
calls and errors, and the example script. Run by ctest with PYTHONPATH=<build>/python:

    PYTHONPATH=build/python /usr/bin/python3 tests/client/python_client_test.py \
        --loraserve build/cli/loraserve
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

import loraserve_client

MODEL = "tests/reference/fixtures/llama_mha_f32"
TOKEN = "py-token"
LORASERVE = None


def wait_ready(proc, ready, log, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {open(log).read()}")
        if os.path.exists(ready):
            with open(ready) as f:
                return json.load(f)
        time.sleep(0.02)
    raise RuntimeError(f"server not ready after {timeout} s: {open(log).read()}")


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="loraserve_py_")
        root = os.path.join(cls.dir, "adapters")
        for name in ("all7_r8", "attn_r16_rslora"):
            shutil.copytree(os.path.join(MODEL, "adapters", name), os.path.join(root, name))
        ready = os.path.join(cls.dir, "ready.json")
        cls.log = os.path.join(cls.dir, "server.log")
        cls.proc = subprocess.Popen(
            [LORASERVE, "serve", "--model", MODEL, "--adapter-root", root, "--admin-token", TOKEN,
             "--preload", "a=" + os.path.join(root, "all7_r8"),
             "--preload", "b=" + os.path.join(root, "attn_r16_rslora"),
             "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--http-listen", "",
             "--ready-file", ready],
            stdout=subprocess.DEVNULL, stderr=open(cls.log, "w"))
        cls.addresses = wait_ready(cls.proc, ready, cls.log)
        cls.client = loraserve_client.Client(cls.addresses["listen"],
                                             cls.addresses["admin_listen"], TOKEN, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.proc.send_signal(signal.SIGTERM)
        code = cls.proc.wait(60)
        shutil.rmtree(cls.dir)
        if code != 0:
            raise RuntimeError(f"server exited with {code} after SIGTERM")

    def test_health_and_admin_views(self):
        self.assertEqual(self.client.health(), "SERVING")
        self.assertEqual(self.client.health("loraserve.v1.Admin", admin=True), "SERVING")
        adapters = self.client.list_adapters()
        self.assertEqual([a.task_id for a in adapters], ["a", "b"])
        self.assertEqual(adapters[0].max_rank, 8)
        self.assertEqual(list(adapters[1].target_modules), ["q_proj", "k_proj", "v_proj", "o_proj"])
        info = self.client.server_info()
        self.assertEqual(info.architecture, "LlamaForCausalLM")
        self.assertEqual(info.vocab_size, 256)

    def test_generate_and_stream_agree(self):
        for task in ("", "a", "b"):
            whole = self.client.generate(token_ids=[5, 6, 7, 8], task_id=task, max_tokens=12,
                                         temperature=0.0, ignore_eos=True, logprobs=2)
            self.assertEqual(len(whole.token_ids), 12)
            self.assertEqual(whole.finish_reason, loraserve_client.inference_pb2.FINISH_REASON_LENGTH)
            self.assertEqual(whole.usage.prompt_tokens, 4)
            self.assertEqual(len(whole.logprobs), 12)
            for lp in whole.logprobs:
                self.assertEqual(len(lp.top), 2)
                self.assertEqual(lp.top[0].token_id, lp.token_id)  # greedy: the top token
                self.assertLessEqual(lp.logprob, 0.0)
            pieces = list(self.client.stream(token_ids=[5, 6, 7, 8], task_id=task, max_tokens=12,
                                             temperature=0.0, ignore_eos=True))
            # The first token goes out alone as soon as it exists; tokens produced while a write
            # is in flight travel together in the next message.
            self.assertGreaterEqual(len(pieces), 2)
            self.assertEqual(len(pieces[0].token_ids), 1)
            self.assertTrue(all(len(m.token_ids) >= 1 for m in pieces[:-1]))
            self.assertEqual([t for m in pieces for t in m.token_ids], list(whole.token_ids))
            self.assertEqual(pieces[-1].usage.completion_tokens, 12)
        # Different tasks generate differently.
        outs = {task: list(self.client.generate(token_ids=[5, 6, 7, 8], task_id=task,
                                                max_tokens=12, temperature=0.0,
                                                ignore_eos=True).token_ids)
                for task in ("", "a", "b")}
        self.assertEqual(len({tuple(v) for v in outs.values()}), 3)

    def test_penalties_and_logit_bias(self):
        forced = self.client.generate(token_ids=[5, 6, 7, 8], task_id="a", max_tokens=5,
                                      temperature=0.0, ignore_eos=True, logit_bias={"9": 100.0})
        self.assertEqual(list(forced.token_ids), [9] * 5)
        labels = self.client.generate(token_ids=[5, 6, 7, 8], max_tokens=6, temperature=1.0,
                                      seed=3, ignore_eos=True, allowed_token_ids=[30, 31])
        self.assertTrue(set(labels.token_ids) <= {30, 31}, list(labels.token_ids))
        plain = self.client.generate(token_ids=[5, 6, 7, 8], max_tokens=12, temperature=0.0,
                                     ignore_eos=True)
        banned = plain.token_ids[0]
        penalised = self.client.generate(
            token_ids=[5, 6, 7, 8], max_tokens=12, temperature=0.0, ignore_eos=True,
            repetition_penalty=1.5, frequency_penalty=0.5, presence_penalty=0.5, min_tokens=2,
            min_p=0.1, logit_bias={banned: -100.0})
        self.assertEqual(len(penalised.token_ids), 12)
        self.assertNotIn(banned, list(penalised.token_ids))
        with self.assertRaises(grpc.RpcError) as e:
            self.client.generate(token_ids=[5], frequency_penalty=3.0)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("frequency_penalty", e.exception.details())

    def test_errors_carry_codes(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.client.generate(token_ids=[5], task_id="nope")
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("nope", e.exception.details())
        with self.assertRaises(grpc.RpcError) as e:
            self.client.generate(token_ids=[5], temperature=-1.0)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("temperature", e.exception.details())
        anonymous = loraserve_client.Client(self.addresses["listen"], self.addresses["admin_listen"])
        with self.assertRaises(grpc.RpcError) as e:
            anonymous.list_adapters()
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        anonymous.close()
        with self.assertRaises(grpc.RpcError) as e:
            self.client.load_adapter("x", "../../etc")
        self.assertEqual(e.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        with self.assertRaises(ValueError):
            loraserve_client.build_request(text="a", token_ids=[1])

    def test_load_and_unload(self):
        info = self.client.load_adapter("c", "all7_r8")
        self.assertEqual(info.task_id, "c")
        self.assertEqual(info.path, "all7_r8")
        self.assertEqual(self.client.unload_adapter("c"), info.version)
        with self.assertRaises(grpc.RpcError) as e:
            self.client.unload_adapter("c")
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_example_runs(self):
        example = os.path.join(os.path.dirname(__file__), "..", "..", "client", "python",
                               "example.py")
        out = subprocess.run(
            [sys.executable, example, "--server", self.addresses["listen"], "--admin-server",
             self.addresses["admin_listen"], "--token", TOKEN, "--ids", "5,6,7", "--max-tokens",
             "6"], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("health: SERVING", out.stdout)
        self.assertIn("adapters: a, b", out.stdout)
        self.assertEqual(out.stdout.count("same=True"), 3, out.stdout)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--loraserve", required=True)
    args, rest = ap.parse_known_args()
    LORASERVE = os.path.abspath(args.loraserve)
    unittest.main(argv=[sys.argv[0]] + rest)

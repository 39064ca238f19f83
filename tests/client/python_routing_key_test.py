#!/usr/bin/python3
"""The Python client's routing key: every call that names a task carries the task ID as
`x-loraserve-task` metadata, and only those. A fake server (the generated servicers, recording
each call's metadata) stands in for loraserve, so what is checked is what a load balancer in
between would see. Run by ctest with PYTHONPATH=<build>/python:

    PYTHONPATH=build/python /usr/bin/python3 tests/client/python_routing_key_test.py
"""

import threading
import unittest
from concurrent import futures

import grpc

import loraserve_client
from loraserve.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc

KEY = "x-loraserve-task"


class Recorder:
    """Every call as (method, task in the message, routing keys, authorizations)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._calls = []

    def record(self, context, method, task_id):
        metadata = context.invocation_metadata()
        keys = [v for k, v in metadata if k == KEY]
        auth = [v for k, v in metadata if k == "authorization"]
        with self._lock:
            self._calls.append((method, task_id, keys, auth))

    def take(self):
        with self._lock:
            calls, self._calls = self._calls, []
        return calls


class FakeInference(inference_pb2_grpc.InferenceServicer):
    def __init__(self, recorder):
        self.recorder = recorder

    def Generate(self, request, context):
        self.recorder.record(context, "Generate", request.task_id)
        return inference_pb2.GenerateResponse(text="x", token_ids=[1])

    def GenerateStream(self, request, context):
        self.recorder.record(context, "GenerateStream", request.request.task_id)
        yield inference_pb2.GenerateStreamResponse(text="x", token_ids=[1])

    def Tokenize(self, request, context):
        self.recorder.record(context, "Tokenize", "")
        return inference_pb2.TokenizeResponse(token_ids=[1])


class FakeAdmin(admin_pb2_grpc.AdminServicer):
    def __init__(self, recorder):
        self.recorder = recorder

    def LoadAdapter(self, request, context):
        self.recorder.record(context, "LoadAdapter", request.task_id)
        return admin_pb2.AdapterInfo(task_id=request.task_id)

    def UnloadAdapter(self, request, context):
        self.recorder.record(context, "UnloadAdapter", request.task_id)
        return admin_pb2.UnloadAdapterResponse(version=1)

    def ListAdapters(self, request, context):
        self.recorder.record(context, "ListAdapters", "")
        return admin_pb2.ListAdaptersResponse()


class PythonRoutingKeyTest(unittest.TestCase):
    def setUp(self):
        self.recorder = Recorder()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        inference_pb2_grpc.add_InferenceServicer_to_server(FakeInference(self.recorder),
                                                           self.server)
        admin_pb2_grpc.add_AdminServicer_to_server(FakeAdmin(self.recorder), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.assertGreater(port, 0)
        self.server.start()
        address = f"127.0.0.1:{port}"
        self.client = loraserve_client.Client(address, address, "secret", timeout=30)

    def tearDown(self):
        self.client.close()
        self.server.stop(None)

    def test_generation_calls_carry_the_task(self):
        self.client.generate(token_ids=[5], task_id="sql-expert_v2:1")
        self.assertEqual(len(list(self.client.stream(token_ids=[5], task_id="chat.fr"))), 1)
        self.client.generate(token_ids=[5])  # the base model: no key, any replica serves it
        self.client.tokenize("hello")
        self.assertEqual(self.recorder.take(), [
            ("Generate", "sql-expert_v2:1", ["sql-expert_v2:1"], []),
            ("GenerateStream", "chat.fr", ["chat.fr"], []),
            ("Generate", "", [], []),
            ("Tokenize", "", [], []),
        ])

    def test_admin_calls_that_name_a_task_carry_it(self):
        self.client.load_adapter("sql", "sql-v3", replace=True)
        self.client.unload_adapter("sql")
        self.client.list_adapters()
        bearer = ["Bearer secret"]
        self.assertEqual(self.recorder.take(), [
            ("LoadAdapter", "sql", ["sql"], bearer),
            ("UnloadAdapter", "sql", ["sql"], bearer),
            ("ListAdapters", "", [], bearer),
        ])

    def test_task_ids_that_cannot_be_metadata_reach_the_server_without_key(self):
        odd = ["line\nbreak", "caf\u00e9", "tab\there", "del\x7f",
               "a" * (loraserve_client.MAX_TASK_METADATA_BYTES + 1)]
        for task in odd:
            self.client.generate(token_ids=[5], task_id=task)
        longest = "b" * loraserve_client.MAX_TASK_METADATA_BYTES
        self.client.generate(token_ids=[5], task_id=longest)
        expected = [("Generate", task, [], []) for task in odd]
        expected.append(("Generate", longest, [longest], []))
        self.assertEqual(self.recorder.take(), expected)


if __name__ == "__main__":
    unittest.main()

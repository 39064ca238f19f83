"""A Python client for loraserve, over the stubs protoc generates from proto/ (Debian's
python3-grpcio and python3-protobuf; no PyPI packages).

The stubs come from the build (`<build>/python`) or the install (`share/loraserve/python`);
put that folder on PYTHONPATH (both also hold this module):

    PYTHONPATH=build/python /usr/bin/python3 -c 'import loraserve_client; ...'

Errors are grpc.RpcError with the server's status code and message.
"""

import grpc

from grpc_health.v1 import health_pb2, health_pb2_grpc
from loraserve.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc

FINISH_REASONS = {
    inference_pb2.FINISH_REASON_UNSPECIFIED: "",
    inference_pb2.FINISH_REASON_LENGTH: "length",
    inference_pb2.FINISH_REASON_STOP: "stop",
    inference_pb2.FINISH_REASON_EOS: "eos",
    inference_pb2.FINISH_REASON_CANCELLED: "cancelled",
}

# The routing key: every call that names a task also carries the task ID as this gRPC metadata
# (an HTTP/2 header), so that a load balancer can route by task without parsing the protobuf body
# (nginx `hash $http_x_loraserve_task consistent`, HAProxy `balance hdr(x-loraserve-task)`; see
# docs/scaling.md). The server does not read it: the task is the one in the message.
TASK_METADATA_KEY = "x-loraserve-task"
MAX_TASK_METADATA_BYTES = 1024


def task_metadata(task_id):
    """The routing key of `task_id` as a list of metadata pairs: empty for the base model ("";
    any replica serves it) and for a task ID that cannot be a metadata value (over
    MAX_TASK_METADATA_BYTES, or characters outside printable ASCII), which the server then
    rejects with INVALID_ARGUMENT naming task_id instead of the transport failing the call."""
    if not task_id or len(task_id) > MAX_TASK_METADATA_BYTES:
        return []
    if any(not " " <= ch <= "~" for ch in task_id):
        return []
    return [(TASK_METADATA_KEY, task_id)]


_SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "logprobs",
                    "ignore_eos", "stop", "stop_token_ids", "repetition_penalty",
                    "frequency_penalty", "presence_penalty", "min_p", "min_tokens", "logit_bias",
                    "allowed_token_ids")


def build_request(text=None, token_ids=None, task_id="", request_id="", **params):
    """A GenerateRequest from a text prompt or a list of token ids, and sampling parameters
    (max_tokens, temperature, top_p, top_k, seed, logprobs, ignore_eos, stop, stop_token_ids,
    repetition_penalty, frequency_penalty, presence_penalty, min_p, min_tokens, logit_bias as a
    dict of token id -> bias, allowed_token_ids).
    Parameters left out take the server's defaults."""
    if (text is None) == (token_ids is None):
        raise ValueError("give exactly one of text and token_ids")
    unknown = set(params) - set(_SAMPLING_FIELDS)
    if unknown:
        raise ValueError(f"unknown sampling parameters: {sorted(unknown)}")
    request = inference_pb2.GenerateRequest(task_id=task_id, request_id=request_id)
    if text is not None:
        request.text = text
    else:
        request.token_ids.ids.extend(token_ids)
    for name, value in params.items():
        if value is None:
            continue
        if name in ("stop", "stop_token_ids", "allowed_token_ids"):
            getattr(request.params, name).extend(value)
        elif name == "logit_bias":
            for token, bias in value.items():
                request.params.logit_bias[int(token)] = bias
        else:
            setattr(request.params, name, value)
    return request


class Client:
    """One connection to a loraserve server: the inference address and the admin address (the
    admin token, when given, goes in `authorization: Bearer <token>`). Thread-safe."""

    def __init__(self, address="127.0.0.1:50051", admin_address="127.0.0.1:50052",
                 admin_token=None, timeout=None):
        self._channel = grpc.insecure_channel(address)
        self._admin_channel = grpc.insecure_channel(admin_address)
        self._inference = inference_pb2_grpc.InferenceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminStub(self._admin_channel)
        self._metadata = [("authorization", f"Bearer {admin_token}")] if admin_token else []
        self._timeout = timeout

    def close(self):
        self._channel.close()
        self._admin_channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Inference

    def generate(self, text=None, token_ids=None, task_id="", request_id="", **params):
        """Runs one request to completion; returns a GenerateResponse (token_ids, text,
        finish_reason, usage, timing, logprobs)."""
        request = build_request(text, token_ids, task_id, request_id, **params)
        return self._inference.Generate(request, metadata=task_metadata(task_id),
                                        timeout=self._timeout)

    def stream(self, text=None, token_ids=None, task_id="", request_id="", **params):
        """Yields GenerateStreamResponse messages as tokens are generated; the last one carries
        finish_reason and usage. Closing the generator early cancels the request."""
        request = inference_pb2.GenerateStreamRequest(
            request=build_request(text, token_ids, task_id, request_id, **params))
        call = self._inference.GenerateStream(request, metadata=task_metadata(task_id),
                                              timeout=self._timeout)
        try:
            yield from call
        finally:
            call.cancel()

    def tokenize(self, text, add_special_tokens=True):
        """Token ids of `text` (the model's tokenizer.json)."""
        request = inference_pb2.TokenizeRequest(text=text, add_special_tokens=add_special_tokens)
        return list(self._inference.Tokenize(request, timeout=self._timeout).token_ids)

    # Admin

    def load_adapter(self, task_id, path, replace=False):
        """Loads the PEFT adapter folder `path` (relative to the server's --adapter-root) under
        `task_id`; returns its AdapterInfo."""
        request = admin_pb2.LoadAdapterRequest(task_id=task_id, path=path, replace=replace)
        return self._admin.LoadAdapter(request, metadata=self._metadata + task_metadata(task_id),
                                       timeout=self._timeout)

    def unload_adapter(self, task_id):
        request = admin_pb2.UnloadAdapterRequest(task_id=task_id)
        return self._admin.UnloadAdapter(request,
                                         metadata=self._metadata + task_metadata(task_id),
                                         timeout=self._timeout).version

    def list_adapters(self):
        return list(self._admin.ListAdapters(admin_pb2.ListAdaptersRequest(),
                                             metadata=self._metadata,
                                             timeout=self._timeout).adapters)

    def server_info(self):
        return self._admin.GetServerInfo(admin_pb2.GetServerInfoRequest(),
                                         metadata=self._metadata, timeout=self._timeout)

    def stats(self):
        return self._admin.GetStats(admin_pb2.GetStatsRequest(), metadata=self._metadata,
                                    timeout=self._timeout)

    # Health

    def health(self, service="", admin=False):
        """"SERVING", "NOT_SERVING", ... for `service` ("" is the whole server)."""
        stub = health_pb2_grpc.HealthStub(self._admin_channel if admin else self._channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service),
                              timeout=self._timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

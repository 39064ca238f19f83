#!/usr/bin/python3
"""A short tour of the Python client: health, the adapters served, then one prompt sent to the
base model and to every task, once whole and once streamed.

    PYTHONPATH=build/python /usr/bin/python3 client/python/example.py \
        [--server 127.0.0.1:50051] [--admin-server 127.0.0.1:50052] [--token TOKEN] \
        [--text "hello" | --ids 5,6,7] [--max-tokens 16]
"""

import argparse
import os
import sys

import grpc

import loraserve_client


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--admin-server", default="127.0.0.1:50052")
    ap.add_argument("--token", default=os.environ.get("LORASERVE_ADMIN_TOKEN"))
    ap.add_argument("--text", help="prompt text (the model needs a tokenizer)")
    ap.add_argument("--ids", help="prompt token ids, comma separated")
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    if args.ids:
        prompt = {"token_ids": [int(x) for x in args.ids.split(",")]}
    else:
        prompt = {"text": args.text if args.text is not None else "hello"}

    with loraserve_client.Client(args.server, args.admin_server, args.token, timeout=60) as c:
        print("health:", c.health())
        try:
            tasks = [a.task_id for a in c.list_adapters()]
        except grpc.RpcError as e:  # Admin off, or no token: the base model only
            print(f"adapters: unavailable ({e.code().name}: {e.details()})")
            tasks = []
        print("adapters:", ", ".join(tasks) if tasks else "none")
        for task in [""] + tasks:
            whole = c.generate(task_id=task, max_tokens=args.max_tokens, temperature=0.0,
                               **prompt)
            pieces = list(c.stream(task_id=task, max_tokens=args.max_tokens, temperature=0.0,
                                   **prompt))
            streamed = [t for m in pieces for t in m.token_ids]
            same = streamed == list(whole.token_ids)
            print(f"{task or '(base)'}: {list(whole.token_ids)} {whole.text!r} "
                  f"finish={loraserve_client.FINISH_REASONS[whole.finish_reason]} "
                  f"streamed in {len(pieces)} messages, same={same}")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Baseline for the CreateTask benchmark: a bare grpc.aio server that answers CreateTask with
the task it was sent (plus a name), doing no validation and no storage. What opentasks achieves
is reported as a ratio of what this achieves with the same client in the same session."""

from __future__ import annotations

import asyncio
import itertools
import sys
from typing import Any

import grpc

from opentasks.api import messages as pb

_ids = itertools.count(1)


async def create_task(request: Any, context: Any) -> Any:
    task = pb.Task()
    task.CopyFrom(request.task)
    task.name = f"{request.parent}/tasks/{next(_ids)}"
    return task


async def create_queue(request: Any, context: Any) -> Any:
    return request.queue


async def main(port: int) -> None:
    server = grpc.aio.server()
    handlers = {
        "CreateTask": grpc.unary_unary_rpc_method_handler(
            create_task, pb.CreateTaskRequest.FromString, pb.Task.SerializeToString
        ),
        "CreateQueue": grpc.unary_unary_rpc_method_handler(
            create_queue, pb.CreateQueueRequest.FromString, pb.Queue.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("google.cloud.tasks.v2.CloudTasks", handlers),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

"""Run a node until Ctrl-C / SIGTERM / external shutdown, the same way for every vidplan executable."""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def run_node(factory: Callable[[], Node], args: list[str] | None = None, multithreaded: bool = False,
             num_threads: int | None = None) -> None:
    """Create the node with ``factory`` and spin it.

    rclpy shuts its context down itself on SIGINT/SIGTERM; spinning then raises ExternalShutdownException,
    which is a normal exit here. ``num_threads`` sizes the MultiThreadedExecutor (rclpy's default is the CPU
    count, only 2 on small machines; a node whose action goals wait inside callbacks needs more). A node whose
    constructor raises ValueError (bad parameters) exits with code 2 and the message, without a traceback.
    """
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    code = 0
    try:
        node = factory()
        executor = (MultiThreadedExecutor(num_threads=num_threads) if multithreaded or num_threads
                    else SingleThreadedExecutor())
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    if code:
        sys.exit(code)

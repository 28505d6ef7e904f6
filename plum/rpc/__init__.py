"""The controller's gRPC side: the `plum.task.TaskService` server for workers.

Generated message and service code lives in `plum.rpc._proto` (see `plum.rpc.generate`).
"""

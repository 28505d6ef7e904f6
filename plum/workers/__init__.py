"""Workers: processes that run tasks by name for the `embedded` executor.

gRPC workers hold a `plum.task.TaskService/TaskStream` open (`plum.rpc.server`); HTTP
workers register a URL that the controller POSTs tasks to. `model` holds the values,
`registry` the service (registration, health, persistence), `http` the HTTP link. The
dispatch itself (capacity, waiting, result matching) is `plum.executors.workers.WorkerPool`.
Import the submodules directly (the bus and the store import `plum.workers.model`).
"""

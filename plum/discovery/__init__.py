"""Service discovery: endpoints registered by instances, health-checked in the background,
picked by a load-balancing strategy for the `service` executor.

`model` holds the values, `registry` the service, `balancer` the strategies. Import the
submodules directly (the bus imports `plum.discovery.model`, so this package stays empty).
"""

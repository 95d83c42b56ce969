"""Layer 1, the hardware model: costs, the invalidation queue, the IOTLB and the device.

Knows no kernel policy: drivers (layer 2) decide which commands to write and when.
"""

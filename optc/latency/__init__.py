"""Latency data: generated architectures, measurable devices, the dataset format and
its collection (``optc latency collect``). The learned model that consumes it lives in
``optc.cost.learned``.
"""

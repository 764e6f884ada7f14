"""The model: a trial simulated (SimPy) instead of run.

It takes what a real trial takes (topology, knobs, load profile, ServiceFault list,
user timeout) and returns a RunResult with the same frames, so the same metric
functions give the predicted and the measured value; it predicts before a run and
answers what-if questions at scales no machine here can run. It never imports a
runtime. Modules, one job each:

- calibration: the machine constants (per-hop HTTP cost, confirm, delivery, ...; the
  kafka_* ones for the Kafka broker)
- flow, timers, pool: how a request moves, when callers give up, worker pools
- links: Toxiproxy's latency and cuts
- service, server: a service's life (kill, pause, crash points) and an HTTP server's
  front half
- chaos: a service's application fault (error_rate, fail_first, route_error)
- sync, async_: the two shapes (async_: queues, retry and dead-letter queues, the
  outbox relay, request-reply, the broker)
- messaging: what the async shape shares on either broker (the gateway's front, a
  consumer's handler, the wiring, the sampler's rows)
- kafka (with kafka_log, kafka_client, kafka_member): the async shape on Kafka, chosen
  where ``topology.on_kafka``: partitioned topics keyed by order id, consumer groups
  with a 6 s session, committed offsets, retry and DLQ topics, a producer's timeout
- users: arrivals and the load generator's side
- faults: the fault plan (what is modelled, and NotModelled for the rest)
- record: the frames
- simulate: simulate()
"""

from testbed.model.calibration import Calibration
from testbed.model.errors import ModelError, NotModelled
from testbed.model.faults import MODELLED
from testbed.model.simulate import simulate

__all__ = ["MODELLED", "Calibration", "ModelError", "NotModelled", "simulate"]
